"""WebSocket echo round trips through a proxy: messages per second and round-trip percentiles.

Each of ``--connections`` websockets sends a ``--size``-byte binary message, waits for its echo,
and repeats until ``--duration`` seconds have passed (or ``--max-messages`` per connection).

    python bench/wsclient.py --url ws://127.0.0.1:8080/ws --duration 3 -H "Cookie: access_token=..."

Prints one JSON line; latencies in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from openloop import percentile


async def one(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    headers: dict[str, str],
    deadline: float,
    out: list[float],
) -> int:
    payload = b"x" * args.size
    sent = 0
    async with session.ws_connect(args.url, headers=headers, compress=0, autoping=True) as ws:
        while time.perf_counter() < deadline and sent < args.max_messages:
            started = time.perf_counter()
            await ws.send_bytes(payload)
            msg = await ws.receive(timeout=10)
            if msg.type is not aiohttp.WSMsgType.BINARY or len(msg.data) != args.size:
                raise RuntimeError(f"unexpected answer: {msg.type!r}")
            out.append(time.perf_counter() - started)
            sent += 1
        await ws.close()
    return sent


async def run(args: argparse.Namespace) -> dict[str, float]:
    headers = dict(h.split(": ", 1) for h in args.header)
    rtts: list[float] = []
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        deadline = started + args.duration
        counts = await asyncio.gather(
            *(one(session, args, headers, deadline, rtts) for _ in range(args.connections))
        )
        elapsed = time.perf_counter() - started
    return {
        "messages": sum(counts),
        "seconds": elapsed,
        "msgs_per_s": sum(counts) / elapsed,
        "p50": percentile(rtts, 50) * 1e6,
        "p99": percentile(rtts, 99) * 1e6,
        "p999": percentile(rtts, 99.9) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-messages", type=int, default=1_000_000)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
