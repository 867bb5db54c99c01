"""The streaming reverse proxy to the app: HTTP over :mod:`sidecar.proxy.http1`'s pool, WebSocket
over one aiohttp client session.

The request target goes upstream exactly as the client sent it (``request.raw_path``: no decoding,
re-encoding or dot-segment removal), appended to ``upstream.url``; a path in that URL therefore acts
as a prefix. Bodies are streamed both ways and never decompressed. Failures before the app's
response headers arrive raise :class:`~sidecar.errors.UpstreamError` (mapped to 502/504 by the
caller); failures after them can only end the client's connection early, which is what a client
needs to see to know the body is truncated.

The request head goes upstream as the client's headers after :class:`HeaderPolicy` (nothing is
added but ``Host`` and, for a body without a length, chunked framing): no ``User-Agent``,
``Accept`` or ``Accept-Encoding`` is invented, so the app compresses only for a client that asked.

Responses of known length up to :data:`SMALL_BODY` bytes (and every body-less response) are read
whole and returned as a ``web.Response``: in aiohttp that is sent as one write, measurably cheaper
than a prepared ``StreamResponse`` plus a write and an EOF, and a connection reset while reading
still becomes a clean 502. Larger and chunked responses are relayed chunk by chunk as they arrive,
with ``Content-Length`` kept so a sized response stays sized for the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from sidecar.auth.csrf import is_websocket_upgrade
from sidecar.config import UpstreamSettings
from sidecar.errors import UpstreamError
from sidecar.keys import UPSTREAM_SECONDS
from sidecar.observability import Metrics
from sidecar.proxy.headers import response_headers
from sidecar.proxy.http1 import ClientBodyError, Connection, Pool

__all__ = ["CLIENT_CLOSED", "SMALL_BODY", "Forwarder", "is_websocket"]

SMALL_BODY: Final = 64 * 1024
CLIENT_CLOSED: Final = 499
# Below the 5 s keep-alive of Node.js servers, so the pool rarely picks a connection the app is
# closing; an idempotent request is retried once when that still happens.
_KEEPALIVE: Final = 4.0
_NO_BODY_STATUS: Final = frozenset({204, 304})
_WS_CLOSE_TIMEOUT: Final = 10.0
# RFC 6455 §7.4: 1001 going away (the client left), 1011 internal error, 1014 bad gateway (IANA).
_WS_GOING_AWAY, _WS_INTERNAL, _WS_BAD_GATEWAY = 1001, 1011, 1014

_WSPair = tuple[web.WebSocketResponse, aiohttp.ClientWebSocketResponse]
_AnyWS = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def is_websocket(request: web.BaseRequest) -> bool:
    """Whether the request asks to upgrade to a WebSocket (RFC 6455 §4.1)."""
    return is_websocket_upgrade(request.method, request.headers.get("Upgrade"))


class Forwarder:
    """Sends requests to the app over one pooled session; born in ``start()``, ended in ``close()``."""

    def __init__(self, settings: UpstreamSettings, metrics: Metrics) -> None:
        self._settings = settings
        base = URL(settings.url)
        self._scheme, self._authority = base.scheme, base.raw_authority
        self._prefix = base.raw_path.rstrip("/")
        self._observe = metrics.upstream_seconds.observe
        self._errors = {
            kind: metrics.upstream_errors.labels(kind=kind) for kind in ("refused", "timeout", "reset")
        }
        self._session: aiohttp.ClientSession | None = None
        self._pool: Pool | None = None
        self._websockets: set[_WSPair] = set()
        # Set while no WebSocket is open: graceful shutdown waits on it.
        self._no_websockets = asyncio.Event()
        self._no_websockets.set()

    async def start(self) -> None:
        s = self._settings
        base = URL(s.url)
        host = base.raw_host or ""
        self._pool = Pool(
            host.strip("[]"),
            base.port or (443 if base.scheme == "https" else 80),
            self._authority,
            ssl_context=ssl.create_default_context() if base.scheme == "https" else None,
            limit=s.max_connections,
            keepalive=_KEEPALIVE,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
        )
        # WebSockets only: the upgrade handshake and frame relay are aiohttp's.
        connector = aiohttp.TCPConnector(limit=s.max_connections, keepalive_timeout=_KEEPALIVE)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=s.connect_timeout,
                sock_connect=s.connect_timeout,
                sock_read=s.read_timeout,
            ),
        )

    async def close(self) -> None:
        await self.close_websockets()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ----------------------------------------------------------------------------------------

    async def forward(self, request: web.Request, headers: CIMultiDict[str]) -> web.StreamResponse:
        """Relay ``request`` with ``headers`` to the app and its response back to the client."""
        pool = self._pool
        assert pool is not None, "Forwarder.start() was not awaited"
        method = request.method
        body = request.content if request.body_exists else None
        chunked = body is not None and "Content-Length" not in headers
        started = time.perf_counter()
        try:
            upstream = await pool.request(
                method, pool.head(method, self._target(request), headers.items(), chunked), body, chunked
            )
        except (UpstreamError, ClientBodyError) as exc:
            if request.transport is None or request.transport.is_closing():
                # The client left mid-upload, which broke the request to the app: not the app's
                # failure. 499 is nginx's "client closed request"; nobody receives it.
                return web.Response(status=CLIENT_CLOSED)
            raise self._failed(exc) from None
        elapsed = time.perf_counter() - started
        self._observe(elapsed)
        request[UPSTREAM_SECONDS] = elapsed

        status = upstream.status
        out_headers = response_headers(upstream.headers)
        length = upstream.content_length
        if method == "HEAD" or status in _NO_BODY_STATUS or (length is not None and length <= SMALL_BODY):
            try:
                content = await upstream.read()
            except UpstreamError as exc:
                raise self._failed(exc) from None
            finally:
                upstream.release()
            return web.Response(body=content or None, status=status, reason=upstream.reason,
                                headers=out_headers)
        return await self._stream(request, upstream, out_headers)

    async def _stream(self, request: web.Request, upstream: Connection,
                      headers: CIMultiDict[str]) -> web.StreamResponse:
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        try:
            await out.prepare(request)
            read, write = upstream.readany, out.write
            while True:
                try:
                    chunk = await read()
                except UpstreamError:
                    # The app broke off mid-body. Closing without the final chunk (or short of
                    # Content-Length) is how HTTP/1.1 tells the client the body is incomplete.
                    self._errors["reset"].inc()
                    if request.transport is not None:
                        request.transport.close()
                    return out
                if not chunk:
                    break
                await write(chunk)
            await out.write_eof()
        except ConnectionError:
            pass  # the client went away; aiohttp's own EOF write will notice it too
        finally:
            # Back to the pool only when fully read; otherwise the connection is closed.
            upstream.release()
        return out

    def _target(self, request: web.BaseRequest) -> str:
        """The request target for the app: the client's, exactly, behind the URL's path prefix."""
        target = request.raw_path
        if not target.startswith("/"):  # absolute-form or asterisk-form (RFC 9112 §3.2)
            target = request.rel_url.raw_path_qs
        return self._prefix + target

    def _url(self, request: web.BaseRequest) -> URL:
        """:meth:`_target` as an absolute URL (for the WebSocket client)."""
        path, _, query = self._target(request).partition("?")
        # encoded=True: the bytes are used as they are, never re-quoted or normalized.
        return URL.build(
            scheme=self._scheme, authority=self._authority, path=path, query_string=query, encoded=True
        )

    def _failed(self, exc: UpstreamError | ClientBodyError) -> UpstreamError:
        """``exc`` as the UpstreamError it is mapped to, counted in the upstream error metric."""
        error = exc if isinstance(exc, UpstreamError) else UpstreamError("reset", "request body")
        self._errors[error.kind].inc()
        return error

    def _failure(self, exc: aiohttp.ClientError | OSError) -> UpstreamError:
        if isinstance(exc, TimeoutError):
            kind = "timeout"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            kind = "timeout" if isinstance(exc.os_error, TimeoutError) else "refused"
        elif isinstance(exc, aiohttp.WSServerHandshakeError):
            kind = "refused"
        else:
            kind = "reset"
        return self._failed(UpstreamError(kind, type(exc).__name__))

    # -- WebSocket -----------------------------------------------------------------------------------

    async def websocket(self, request: web.Request, headers: CIMultiDict[str]) -> web.WebSocketResponse:
        """Open the app's WebSocket first, then accept the client's and relay frames both ways.

        The subprotocol the app picks from the client's offer is the one the client gets. Either side
        closing closes the other with the same code (RFC 6455 §7.4); ping/pong stays per hop.
        """
        session = self._session
        assert session is not None, "Forwarder.start() was not awaited"
        offer = request.headers.get("Sec-WebSocket-Protocol", "")
        offered = [p.strip() for p in offer.split(",") if p.strip()]
        limit = self._settings.websocket_max_message
        if not web.WebSocketResponse(protocols=offered).can_prepare(request).ok:
            # Checked before the app is dialled. The text is the reason of the JSON error the edge
            # maps this to; aiohttp's own handshake errors would quote the client's header values.
            raise web.HTTPBadRequest(text="websocket_handshake")
        try:
            app = await session.ws_connect(
                self._url(request),
                headers=headers,
                protocols=offered,
                autoclose=False,
                max_msg_size=limit,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_WS_CLOSE_TIMEOUT),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failure(exc) from exc
        client = web.WebSocketResponse(
            protocols=(app.protocol,) if app.protocol else (),
            autoclose=False,
            max_msg_size=limit,
            timeout=_WS_CLOSE_TIMEOUT,
        )
        pair = (client, app)
        pumps: list[asyncio.Task[None]] = []
        try:
            await client.prepare(request)
            self._websockets.add(pair)
            self._no_websockets.clear()
            pumps = [
                asyncio.create_task(_pump(client, app, gone=_WS_GOING_AWAY, lost=_WS_BAD_GATEWAY)),
                asyncio.create_task(_pump(app, client, gone=_WS_BAD_GATEWAY, lost=_WS_GOING_AWAY)),
            ]
            await asyncio.gather(*pumps)
        except ConnectionError:
            pass
        finally:
            for pump in pumps:
                pump.cancel()  # no-op once finished; otherwise never leave one pumping alone
            self._websockets.discard(pair)
            if not self._websockets:
                self._no_websockets.set()
            if not app.closed:
                await app.close(code=_WS_GOING_AWAY)
        return client

    async def drain_websockets(self, grace: float) -> None:
        """Let open WebSockets end on their own for up to ``grace`` seconds, then close the rest."""
        if self._websockets:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_websockets.wait(), grace)
        await self.close_websockets()

    async def close_websockets(self, code: int = _WS_GOING_AWAY) -> None:
        """Close every relayed WebSocket on both sides (graceful shutdown)."""
        pairs = list(self._websockets)
        await asyncio.gather(
            *(ws.close(code=code) for pair in pairs for ws in pair), return_exceptions=True
        )


async def _pump(src: _AnyWS, dst: _AnyWS, *, gone: int, lost: int) -> None:
    """Relay ``src`` → ``dst`` until ``src`` closes, then close ``dst`` with ``src``'s code.

    ``gone`` is the code ``dst`` gets when ``src`` vanished without a close frame, ``lost`` the
    code ``src`` gets when ``dst`` cannot be written to (1006 may not be sent, RFC 6455 §7.4.1).
    """
    while True:
        msg = await src.receive()
        kind = msg.type
        try:
            if kind is WSMsgType.TEXT:
                await dst.send_str(msg.data)
                continue
            if kind is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
                continue
        except ConnectionError:
            await src.close(code=lost)
            return
        if kind is WSMsgType.CLOSE:
            # The peer started the closing handshake: pass its code on, then answer it with the
            # same code (RFC 6455 §5.5.1) once the other side has replied.
            code = msg.data if _sendable(msg.data) else 1000
            reason = (msg.extra or "").encode()
            await dst.close(code=code, message=reason)
            await src.close(code=code, message=reason)
        elif kind is WSMsgType.ERROR:
            # src broke the protocol (say, an oversized message); aiohttp already closed it.
            code = src.close_code
            await dst.close(code=code if code is not None and _sendable(code) else _WS_INTERNAL)
        elif kind is WSMsgType.CLOSED:
            await dst.close(code=gone)
        # CLOSING: this side is being closed by the other pump or by close_websockets().
        return


def _sendable(code: int) -> bool:
    """Whether a close code may appear in a close frame (RFC 6455 §7.4.1-§7.4.2)."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


FORWARDER = web.AppKey("authsidecar.forwarder", Forwarder)
