"""Open-loop HTTP load at a fixed rate, latency measured from each request's *scheduled* time.

This is what wrk2 does (wrk2 is not packaged in Debian; wrk is closed-loop: a slow answer delays
the next request, which hides queueing, the "coordinated omission" problem). Request i is due at
``start + i / rate``; it goes out on a free keep-alive connection or waits for one, and its latency
runs from the due time to the end of the response, so time spent queueing counts.

    python bench/openloop.py --url http://127.0.0.1:8080/ --rate 2000 --duration 5 -H "Cookie: a=b"

Prints one JSON line: counts, achieved rate and latency percentiles in microseconds. Bounded: it
stops scheduling after ``--duration`` and waits at most ``--drain`` seconds for stragglers (counted
as unfinished, with their latency so far).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import time
from urllib.parse import urlsplit


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


class Load:
    def __init__(self, rate: float, request: bytes, warmup: float) -> None:
        self.rate, self.request, self.warmup = rate, request, warmup
        self.free: list[Conn] = []
        self.backlog: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.completed = self.errors = self.bad_status = 0
        self.t0 = 0.0
        self.loop = asyncio.get_running_loop()
        self.idle = asyncio.Event()

    def send(self, conn: Conn, due: float) -> None:
        conn.due = due
        conn.transport.write(self.request)
        if due >= self.t0 + self.warmup and not self.backlog:
            # How late the generator itself was (a request waiting for a connection is not counted).
            self.lags.append(time.perf_counter() - due)

    def schedule(self, due: float) -> None:
        if self.free:
            self.send(self.free.pop(), due)
        else:
            self.backlog.append(due)

    def done(self, conn: Conn, status: int) -> None:
        now = time.perf_counter()
        self.completed += 1
        if status >= 400:
            self.bad_status += 1
        if conn.due >= self.t0 + self.warmup:
            self.latencies.append(now - conn.due)
        conn.due = -1.0
        if self.backlog:
            self.send(conn, self.backlog.popleft())
        else:
            self.free.append(conn)
            self.idle.set()


class Conn(asyncio.Protocol):
    def __init__(self, load: Load) -> None:
        self.load = load
        self.buf = bytearray()
        self.need = -1  # bytes of the current response (headers + body), once its headers are in
        self.chunked = False
        self.status = 0
        self.due = -1.0
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.status = int(head[9:12])
                self.chunked = b"transfer-encoding: chunked" in head
                length = 0
                at = head.find(b"content-length:")
                if at >= 0:
                    eol = head.find(b"\r\n", at)
                    length = int(head[at + 15 : eol if eol > 0 else len(head)])
                self.need = end + 4 + length
            if self.chunked:
                stop = self.buf.find(b"\r\n0\r\n\r\n", self.need - 2)
                if stop < 0:
                    return
                self.need = stop + 7
                self.chunked = False
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = -1
            self.load.done(self, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        load = self.load
        if self in load.free:
            load.free.remove(self)
        if self.due >= 0:
            load.errors += 1
        load.idle.set()


async def run(args: argparse.Namespace) -> dict[str, float]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    lines = [f"GET {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1", f"Host: {host}:{port}"]
    lines += args.header
    load = Load(args.rate, ("\r\n".join(lines) + "\r\n\r\n").encode(), args.warmup)
    loop = load.loop
    conns = []
    for _ in range(args.connections):
        _transport, conn = await loop.create_connection(lambda: Conn(load), host, port)
        conns.append(conn)
        load.free.append(conn)
    total = int(args.rate * args.duration)
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    load.t0 = clock() + 0.01
    issued = 0
    while issued < total:
        due_now = min(total, int((clock() - load.t0) * args.rate) + 1)
        while issued < due_now:
            load.schedule(load.t0 + issued / args.rate)
            issued += 1
        await asyncio.sleep(max(0.0, load.t0 + issued / args.rate - clock()))
    deadline = clock() + args.drain
    while load.completed + load.errors < total and clock() < deadline:
        load.idle.clear()
        try:
            await asyncio.wait_for(load.idle.wait(), timeout=max(0.001, deadline - clock()))
        except TimeoutError:
            break
    end = clock()
    unfinished = [end - c.due for c in conns if c.due >= 0] + [end - d for d in load.backlog]
    for conn in conns:
        conn.transport.close()
    measured = load.latencies + unfinished
    elapsed = end - load.t0
    return {
        "rate": args.rate,
        "scheduled": total,
        "completed": load.completed,
        "errors": load.errors,
        "bad_status": load.bad_status,
        "unfinished": len(unfinished),
        "achieved_rps": load.completed / elapsed if elapsed > 0 else 0.0,
        "p50": percentile(measured, 50) * 1e6,
        "p90": percentile(measured, 90) * 1e6,
        "p99": percentile(measured, 99) * 1e6,
        "p999": percentile(measured, 99.9) * 1e6,
        "max": (max(measured) if measured else math.nan) * 1e6,
        "sender_lag_p99": percentile(load.lags, 99) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds at the start not recorded")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--drain", type=float, default=3.0)
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
