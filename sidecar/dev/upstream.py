"""A demo upstream that shows what reached it: the app behind the sidecar in `authsidecar dev` and tests.

    any path, any method   JSON {method, path, query, headers, header_list, body_length, identity}
    GET  /ws               websocket echo (text and binary)
    GET  /stream?size=N    N bytes, streamed in chunks (&chunk=M, default 64 KiB)
    GET  /slow?seconds=N   answers after N seconds (for timeout tests)
    POST|PUT /upload       consumes the body chunk by chunk: {bytes, sha256}
    GET  /set-cookie       sets a cookie (the proxy must not keep it in its own client jar)
    *    /status/{code}    answers with that status

`app[UPSTREAM_STATS]` counts the requests that arrived.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

_CHUNK = 64 * 1024
_MAX_STREAM = 1 << 30
_MAX_SLOW = 300.0
_FILLER = bytes(range(256)) * (_CHUNK // 256)


@dataclass(slots=True)
class UpstreamStats:
    """Requests seen by the echo upstream; mutated in place (a started app is frozen)."""

    total: int = 0
    by_path: collections.Counter[str] = field(default_factory=collections.Counter)
    websocket_messages: int = 0


UPSTREAM_STATS = web.AppKey("upstream_stats", UpstreamStats)


def _identity(request: web.Request) -> dict[str, str]:
    return {name: value for name, value in request.headers.items() if name.lower().startswith("x-user-")}


def _query(request: web.Request) -> dict[str, list[str]]:
    return {name: request.query.getall(name) for name in request.query}


def _headers(request: web.Request) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in request.headers.items():
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


async def _echo(request: web.Request) -> web.Response:
    length = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        length += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": _query(request),
            "headers": _headers(request),
            "header_list": [[name, value] for name, value in request.headers.items()],
            "body_length": length,
            "identity": _identity(request),
        }
    )


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    stats = request.app[UPSTREAM_STATS]
    async for message in ws:
        stats.websocket_messages += 1
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def _int_param(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if not 0 <= value <= maximum:
        raise web.HTTPBadRequest(text=f"{name} must be between 0 and {maximum}")
    return value


async def _stream(request: web.Request) -> web.StreamResponse:
    size = _int_param(request, "size", 0, _MAX_STREAM)
    chunk = _int_param(request, "chunk", _CHUNK, _CHUNK) or _CHUNK
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    left = size
    while left > 0:
        piece = min(chunk, left)
        await response.write(_FILLER[:piece])
        left -= piece
    await response.write_eof()
    return response


async def _slow(request: web.Request) -> web.Response:
    try:
        seconds = float(request.query.get("seconds", "1"))
    except ValueError:
        raise web.HTTPBadRequest(text="seconds must be a number") from None
    if not 0 <= seconds <= _MAX_SLOW:
        raise web.HTTPBadRequest(text=f"seconds must be between 0 and {_MAX_SLOW}")
    await asyncio.sleep(seconds)
    return web.json_response({"slept": seconds})


async def _upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    count = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        digest.update(chunk)
        count += len(chunk)
    return web.json_response({"bytes": count, "sha256": digest.hexdigest()})


async def _set_cookie(request: web.Request) -> web.Response:
    response = web.json_response({"set": "upstream_cookie"})
    response.set_cookie("upstream_cookie", request.query.get("value", "from-upstream"), path="/")
    return response


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    if not 200 <= code <= 599:
        raise web.HTTPBadRequest(text="code must be between 200 and 599")
    body = None if code in (204, 304) else f"status {code}\n"
    return web.Response(status=code, text=body)


@web.middleware
async def _count(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    stats = request.app[UPSTREAM_STATS]
    stats.total += 1
    stats.by_path[request.path] += 1
    return await handler(request)


def create_upstream_app() -> web.Application:
    app = web.Application(middlewares=[_count])
    app[UPSTREAM_STATS] = UpstreamStats()
    app.router.add_get("/ws", _websocket)
    app.router.add_get("/stream", _stream)
    app.router.add_get("/slow", _slow)
    app.router.add_post("/upload", _upload)
    app.router.add_put("/upload", _upload)
    app.router.add_get("/set-cookie", _set_cookie)
    app.router.add_route("*", r"/status/{code:\d{3}}", _status)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app
