"""The floor: the simplest correct aiohttp reverse proxy, with no authentication at all.

One pooled ``ClientSession`` (no cookie jar, no decompression), the request body streamed up, the
response streamed down, hop-by-hop headers dropped both ways (RFC 9110 §7.6.1), WebSockets relayed.
Responses of known length up to 64 KiB are read whole and sent in one write, as authsidecar does,
so the two differ by what authsidecar adds (auth, headers, metrics, logging), not by proxy design.
Used by the benchmark only, as the reference for "what aiohttp itself costs".

    python bench/bare_proxy.py --port 8081 --upstream http://127.0.0.1:9000 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, MultiMapping

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "host",
    }
)
# Expect: aiohttp already answered 100-continue; passed on, the client library would wait for another.
REQUEST_DROP = HOP_BY_HOP | {"expect"}
WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"})
SMALL_BODY = 64 * 1024
WORKER_ENV = "BARE_PROXY_WORKER"
SESSION = web.AppKey("session", aiohttp.ClientSession)
BASE = web.AppKey("base", str)


def _filtered(headers: MultiMapping[str], drop: frozenset[str] = HOP_BY_HOP) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in src:
        if msg.type is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
    await dst.close()


async def handle(request: web.Request) -> web.StreamResponse:
    session, url = request.app[SESSION], request.app[BASE] + request.raw_path
    if request.headers.get("Upgrade", "").lower() == "websocket":
        upstream_ws = await session.ws_connect(
            url, headers=_filtered(request.headers, REQUEST_DROP | WS_HANDSHAKE)
        )
        client_ws = web.WebSocketResponse()
        await client_ws.prepare(request)
        await asyncio.gather(_pump(client_ws, upstream_ws), _pump(upstream_ws, client_ws))
        return client_ws
    try:
        upstream = await session.request(
            request.method,
            url,
            headers=_filtered(request.headers, REQUEST_DROP),
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        )
    except (aiohttp.ClientError, OSError):
        return web.Response(status=502, text="bad gateway\n")
    headers = _filtered(upstream.headers)
    length = upstream.content_length
    if length is not None and length <= SMALL_BODY:
        body = await upstream.read()
        return web.Response(body=body, status=upstream.status, headers=headers)
    out = web.StreamResponse(status=upstream.status, headers=headers)
    await out.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
    finally:
        upstream.release()
    return out


async def serve(host: str, port: int, base: str, reuse_port: bool, lifetime: float) -> None:
    app = web.Application(handler_args={"max_field_size": 65536, "max_line_size": 65536})
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60),
    )
    app[SESSION], app[BASE] = session, base.rstrip("/")
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096, reuse_port=reuse_port or None).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Bounded even if whoever started it never stops it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), lifetime)
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the app, e.g. http://127.0.0.1:9000")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = parser.parse_args()
    if args.workers > 1:
        argv = ["--host", args.host, "--port", str(args.port), "--upstream", args.upstream]
        sys.exit(supervise(args.workers, [*argv, "--lifetime", str(args.lifetime)]))
    reuse_port = bool(os.environ.get(WORKER_ENV))
    run(serve(args.host, args.port, args.upstream, reuse_port, args.lifetime))


def run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def supervise(workers: int, argv: list[str]) -> int:
    """Start ``workers`` copies of this proxy on one port; pass SIGTERM/SIGINT on; wait for them."""
    env = {**os.environ, WORKER_ENV: "1"}
    procs = [subprocess.Popen([sys.executable, __file__, *argv], env=env) for _ in range(workers)]

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    return max(proc.wait() for proc in procs)


if __name__ == "__main__":
    main()
