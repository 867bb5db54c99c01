"""One 1 GiB upload through a target, its resident memory sampled while the body streams.

A proxy that buffers request bodies grows by the body's size; a streaming one stays flat. The body
is generated (64 KiB chunks of one buffer) and sent with ``Content-Length`` by an aiohttp client
on the load core; the upstream's ``/upload`` sink counts and discards it. RSS of the target's
process tree is read from /proc every 50 ms.

    from bigupload import upload_rss
    result = await upload_rss(url, pid, headers={"Authorization": "Bearer ..."})
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from procs import rss_mib, tree

GIB = 1 << 30
CHUNK = bytes(range(256)) * 256  # 64 KiB


async def _body(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = CHUNK if total - sent >= len(CHUNK) else CHUNK[: total - sent]
        sent += len(piece)
        yield piece


async def upload_rss(
    url: str, pid: int, *, headers: Mapping[str, str], total: int = GIB, period: float = 0.05
) -> dict[str, Any]:
    """Upload ``total`` bytes to ``url``/upload; RSS before, peak during, after; throughput."""
    samples: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(rss_mib(tree(pid)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), period)

    before = rss_mib(tree(pid))
    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    status = 0
    try:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            url + "/upload",
            data=_body(total),
            headers={**headers, "Content-Length": str(total), "Content-Type": "application/octet-stream"},
        ) as resp:
            status = resp.status
            await resp.read()
    finally:
        elapsed = time.monotonic() - started
        done.set()
        await sampler
    return {
        "status": status,
        "bytes": total,
        "seconds": elapsed,
        "mib_per_s": total / 2**20 / elapsed if elapsed > 0 else 0.0,
        "rss_before": before,
        "rss_peak": max(samples, default=before),
        "rss_after": rss_mib(tree(pid)),
        "samples": len(samples),
    }
