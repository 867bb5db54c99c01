"""A stateful upstream app and a minimal proxy (HeaderPolicy + Forwarder) on loopback.

The upstream records what it received and exposes ``asyncio.Event`` handshakes so tests can prove
streaming (a chunk crossed the proxy before the other side finished) without sleeping.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ipaddress
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sidecar.auth.cookies import CookieNames
from sidecar.auth.session import CookieCache
from sidecar.config import CookieSettings, CsrfSettings, IdentityHeaderSettings, UpstreamSettings
from sidecar.errors import UpstreamError
from sidecar.identity import Identity
from sidecar.observability import Metrics
from sidecar.proxy.forward import Forwarder, is_websocket
from sidecar.proxy.headers import HeaderPolicy

NAMES = CookieNames.build(CookieSettings(), CsrfSettings())

GZIPPED = gzip.compress(b"hello gzip " * 1000)
BIG_GZIPPED = gzip.compress(bytes(range(256)) * 4096, compresslevel=1)  # > 64 KiB compressed


@dataclass
class Received:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body_size: int = 0
    body_sha256: str = ""

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Upstream:
    """The app behind the proxy: records requests, waits on events the tests set."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    events: defaultdict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    ws_close_codes: list[int | None] = field(default_factory=list)

    @property
    def last(self) -> Received:
        return self.received[-1]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=0)
        r = app.router
        r.add_get("/ws/echo", self.ws_echo)
        r.add_get("/ws/refuse", self.ws_refuse)
        r.add_route("*", "/upload", self.upload)
        r.add_post("/upload-partial", self.upload_partial)
        r.add_get("/stream", self.stream)
        r.add_get("/stream-forever", self.stream_forever)
        r.add_get("/reset-small", self.reset(total=1000, sent=100))
        r.add_get("/reset-big", self.reset(total=1 << 20, sent=128 * 1024))
        r.add_get("/slow", self.slow)
        r.add_get("/cookies", self.cookies)
        r.add_get("/gzip", self.gzip)
        r.add_get("/gzip-big", self.gzip_big)
        r.add_get("/no-content", self.status(204))
        r.add_get("/not-modified", self.status(304))
        r.add_get("/hop", self.hop)
        r.add_get("/chunked", self.chunked)
        r.add_get("/sized", self.sized)
        r.add_route("*", "/{tail:.*}", self.echo)
        return app

    def _record(self, request: web.Request, body: bytes = b"") -> Received:
        rec = Received(
            request.method,
            request.raw_path,
            list(request.headers.items()),
            len(body),
            hashlib.sha256(body).hexdigest(),
        )
        self.received.append(rec)
        return rec

    async def echo(self, request: web.Request) -> web.Response:
        self._record(request, await request.read())
        body = b"echo:" + request.raw_path.encode()
        return web.Response(body=body, headers={"X-Upstream": "echo"})

    async def sized(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(body=b"s" * 100_000, content_type="application/octet-stream")

    async def upload(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        digest = hashlib.sha256()
        first = True
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            rec.body_size += len(chunk)
            if first:
                self.events["upload_first_chunk"].set()
                first = False
        rec.body_sha256 = digest.hexdigest()
        return web.json_response({"size": rec.body_size, "sha256": rec.body_sha256})

    async def upload_partial(self, request: web.Request) -> web.Response:
        self._record(request)
        try:
            async for _chunk in request.content.iter_any():
                self.events["upload_first_chunk"].set()
        finally:
            self.events["upload_ended"].set()
        return web.Response(text="complete?")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"first;")
        await self.events["stream_continue"].wait()
        await resp.write(b"second")
        await resp.write_eof()
        return resp

    async def stream_forever(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"x" * 65536)
        except ConnectionError:
            # The proxy dropped this connection: the expected end. (Left unhandled, this fake's
            # own server would log it, and the test is about what the proxy logs.)
            return resp
        finally:  # ConnectionError, or CancelledError under the test server's handler cancellation
            self.events["stream_client_gone"].set()

    def reset(self, *, total: int, sent: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            self._record(request)
            resp = web.StreamResponse(headers={"Content-Length": str(total)})
            await resp.prepare(request)
            await resp.write(b"r" * sent)
            # Closing flushes what was written and ends the connection short of Content-Length.
            assert request.transport is not None
            request.transport.close()
            return resp

        return handler

    async def slow(self, request: web.Request) -> web.Response:
        self._record(request)
        await self.events["release"].wait()
        return web.Response(text="late")

    async def cookies(self, request: web.Request) -> web.Response:
        self._record(request)
        resp = web.Response(text="cookies")
        resp.headers.add("Set-Cookie", "sid=abc; Path=/; HttpOnly")
        resp.headers.add("Set-Cookie", "theme=dark; Path=/")
        return resp

    async def gzip(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(body=GZIPPED, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def gzip_big(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        resp = web.StreamResponse(headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        await resp.prepare(request)
        for i in range(0, len(BIG_GZIPPED), 50_000):
            await resp.write(BIG_GZIPPED[i : i + 50_000])
        await resp.write_eof()
        return resp

    def status(self, code: int) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            self._record(request)
            return web.Response(status=code, headers={"ETag": '"v1"', "X-Upstream": "yes"})

        return handler

    async def hop(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(
            text="hop",
            headers={
                "Connection": "X-Resp-Hop",
                "X-Resp-Hop": "secret",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "X-End-To-End": "kept",
            },
        )

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"part{i};".encode() * 20_000)
        await resp.write_eof()
        return resp

    async def ws_echo(self, request: web.Request) -> web.WebSocketResponse:
        self._record(request)
        ws = web.WebSocketResponse(protocols=("v2", "v3"))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"bye")
                    break
                await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        self.ws_close_codes.append(ws.close_code)
        self.events["ws_closed"].set()
        return ws

    async def ws_refuse(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(status=403, text="no websockets here")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every proxy test runs on asyncio's own loop and on uvloop, which ``authsidecar serve`` uses."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Upstream]:
    state = Upstream()
    server = await aiohttp_server(state.app(), host="127.0.0.1")
    state.url = str(server.make_url("")).rstrip("/")
    yield state
    for event in list(state.events.values()):
        event.set()  # let parked handlers finish before the server shuts down


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held for the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


ALICE = Identity(
    sub="user-123",
    username="alice",
    email="alice@example.com",
    groups=("admins", "ops"),
    scopes=("openid",),
    expires_at=2_000_000_000,
    claims={"tenant": "acme", "roles": ["a", "b"], "level": 3, "org": {"id": 7}},
)


class ProxyServer(TestServer):
    """A test server with aiohttp's production default: handlers are not cancelled on disconnect."""

    def __init__(self, app: web.Application, *, handler_cancellation: bool) -> None:
        super().__init__(app, host="127.0.0.1")
        self._handler_cancellation = handler_cancellation

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        kwargs["handler_cancellation"] = self._handler_cancellation
        return await super()._make_runner(**kwargs)


@dataclass
class Proxy:
    client: TestClient[Any, Any]
    forwarder: Forwarder
    policy: HeaderPolicy
    metrics: Metrics
    # Status of every response the proxy handler returned, and an event set after each one.
    statuses: list[int] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)


MakeProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
def make_proxy(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], upstream: Upstream
) -> MakeProxy:
    """Build the test proxy: ``await make_proxy(identity=..., trusted=..., ...)``."""

    async def make(
        *,
        identity: Identity | None = None,
        access_token: str | None = None,
        trusted: tuple[str, ...] = (),
        identity_headers: IdentityHeaderSettings | None = None,
        upstream_url: str | None = None,
        read_timeout: float = 10.0,
        handler_cancellation: bool = False,
        **client_kwargs: Any,
    ) -> Proxy:
        metrics = Metrics(CollectorRegistry())
        settings = UpstreamSettings(url=upstream_url or upstream.url, read_timeout=read_timeout)
        forwarder = Forwarder(settings, metrics)
        policy = HeaderPolicy(
            identity_headers or IdentityHeaderSettings(),
            tuple(ipaddress.ip_network(n) for n in trusted),
            cookie_filter=CookieCache(NAMES.pattern.match).for_app,
        )

        async def handle(request: web.Request) -> web.StreamResponse:
            headers = policy.upstream_headers(
                request.headers,
                peer=request.remote,
                scheme=request.scheme,
                host=request.host,
                identity=identity,
                access_token=access_token,
                request_id="req-1",
            )
            resp: web.StreamResponse
            try:
                if is_websocket(request):
                    resp = await forwarder.websocket(request, headers)
                else:
                    resp = await forwarder.forward(request, headers)
            except UpstreamError as exc:
                resp = web.Response(status=exc.status, text=exc.kind)
            proxy.statuses.append(resp.status)
            proxy.answered.set()
            return resp

        async def lifetime(_app: web.Application) -> AsyncIterator[None]:
            await forwarder.start()
            yield
            await forwarder.close()

        app = web.Application(client_max_size=0)
        app.cleanup_ctx.append(lifetime)
        app.router.add_route("*", "/{tail:.*}", handle)
        server = ProxyServer(app, handler_cancellation=handler_cancellation)
        proxy = Proxy(await aiohttp_client(server, **client_kwargs), forwarder, policy, metrics)
        return proxy

    return make
