"""`python -m sidecar serve` as a child process of a flow test: started, awaited, always ended."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.flows.conftest import wait_ready


async def read_until(stream: asyncio.StreamReader, event: str, seen: list[str]) -> None:
    """Read log lines until one with ``event``; every line read is kept in ``seen``."""
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError(f"the process ended before logging {event!r}: {seen}")
        seen.append(line)
        if f'"event": "{event}"' in line:
            return


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(p) for p in f.read().split()]


async def end(proc: asyncio.subprocess.Process) -> None:
    """Unless the test stopped it: SIGTERM (the supervisor passes it on), SIGKILL for what is left."""
    if proc.returncode is not None:
        return
    workers = children(proc.pid)
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=20)
    except TimeoutError:
        for pid in [*workers, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await proc.wait()


@asynccontextmanager
async def serving(
    path: Path, env: dict[str, str], *, workers: int = 1, admin_port: int | None = None,
    timeout: float = 30,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    """``serve --config path`` (``--workers`` when more than one), yielded once every worker has
    logged ``listening`` (within ``timeout``) and, given ``admin_port``, ``/readyz`` answers 200.

    Yields the process (stdout and stderr piped) and the log lines read so far. Ended on the way
    out unless the test stopped it itself.
    """
    args = ["--workers", str(workers)] if workers > 1 else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", "--config", str(path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for _ in range(workers):
            await asyncio.wait_for(read_until(proc.stdout, "listening", seen), timeout=timeout)
        if admin_port is not None:
            await wait_ready(f"http://127.0.0.1:{admin_port}")
        yield proc, seen
    finally:
        await end(proc)
