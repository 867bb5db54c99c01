"""The HTTP/1.1 client to the app: a keep-alive connection pool and a streaming response reader.

Why not aiohttp's ``ClientSession`` for proxied requests: per request it builds a ``ClientRequest``
and a ``ClientResponse`` (URL normalisation, auto headers, a cookie jar, trace hooks, timer
contexts, a connector acquisition), which measured as the largest share of a proxied request's CPU.
A sidecar talks to one origin with headers it has already assembled, so this client writes the
request head as one ``bytes`` and parses the response with llhttp (``httptools``, the parser
uvicorn runs on) with no leniencies: an ambiguous response (both ``Content-Length`` and chunked, a
bad chunk size, ...) is an error, never a guess (RFC 9112 §6.3, response smuggling).

Framing:

* request body: with the client's ``Content-Length`` the bytes are relayed as they come; without
  one (the client sent chunked) they are re-chunked (RFC 9112 §7.1);
* response body: ``Content-Length``, chunked, or until the app closes (RFC 9112 §6.3); none for
  ``HEAD``, 1xx, 204 and 304; 1xx interim responses are skipped;
* a connection returns to the pool only after a complete response that both sides keep alive. One
  a ``HEAD`` was answered on is not reused (llhttp cannot be told the response has no body).

Errors are :class:`~sidecar.errors.UpstreamError` with ``refused`` (no connection), ``timeout``
(connect, or ``read_timeout`` of silence while waiting for the app) or ``reset`` (the connection
broke, or the app answered something that is not HTTP/1.1). A pooled connection the app closed
just as it was reused is retried once on a new one, for a body-less request with an idempotent
method (RFC 9110 §9.2.2), as browsers and aiohttp do.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Collection
from typing import Final, cast

import httptools
from aiohttp import StreamReader

from sidecar.errors import UpstreamError

__all__ = ["ClientBodyError", "Connection", "Pool"]

# Response bytes held for a slow client before the app's connection stops being read.
_HIGH_WATER: Final = 64 * 1024
_LOW_WATER: Final = 16 * 1024
# An app sending more than this before its headers end is not answering HTTP.
_MAX_HEAD: Final = 256 * 1024
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class _Stale(UpstreamError):
    """A reused connection closed before any byte of the response: safe to retry once."""


class _Unsolicited(Exception):
    """The app sent more than one response to one request."""


class ClientBodyError(Exception):
    """Reading the request body from the client failed (the client left mid-upload)."""


def _decode(raw: bytes) -> str:
    # As aiohttp's server decodes the client's headers: the bytes survive the round trip exactly.
    return raw.decode("utf-8", "surrogateescape")


class Connection(asyncio.Protocol):
    """One connection to the app, and the response being read on it.

    The response attributes (``status``, ``reason``, ``headers``, ``content_length``) and the body
    readers are valid from :meth:`Pool.request` until :meth:`release` or :meth:`close`.
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._active = False
        self._reusable = True
        # The response.
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.content_length: int | None = None
        self._raw: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_bytes = 0
        self._head: asyncio.Future[None] | None = None
        self._got_head = False
        self._received = False
        self._until_close = False
        self._head_only = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        # Write-side flow control and the read timeout.
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._last_read = 0.0
        # The task relaying the request body, and whether all of it went out.
        self._sender: asyncio.Task[None] | None = None
        self._body_sent = True
        self._counted = False

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports implement asyncio.Transport without subclassing it.)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._active:
            # Bytes nobody asked for: the app broke the protocol on an idle connection.
            self.close()
            return
        self._received = True
        self._last_read = self._loop.time()
        if not self._got_head:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD:
                self._fail(UpstreamError("reset", "response head too large"))
                return
        try:
            self._parser.feed_data(data)
        except Exception:  # HttpParserError, HttpParserUpgrade (a 101 nobody asked for)
            self._fail(UpstreamError("reset", "invalid HTTP response"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._lost(self)
        self._unwatch()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("connection to the app lost"))
        if not self._active or self._done:
            return
        if self._got_head and self._until_close:
            self._message_complete()  # the body ran until the close (RFC 9112 §6.3 item 8)
        elif not self._received and self.reused:
            self._fail(_Stale("reset", "connection closed by the app"))
        else:
            self._fail(UpstreamError("reset", "connection closed by the app"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            # A second response to one request: never parsed, never delivered to the next request
            # on this connection (response queue poisoning); the connection is closed instead.
            raise _Unsolicited
        self._raw = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # 1xx interim response (RFC 9110 §15.2): the real one follows
        self.status = status
        self.reason = _decode(self._reason)
        self.headers = headers = [(_decode(n), _decode(v)) for n, v in self._raw]
        length: int | None = None
        chunked = False
        for name, value in headers:
            if len(name) == 14 and name.lower() == "content-length":
                length = int(value)  # llhttp has checked it is one decimal number
            elif len(name) == 17 and name.lower() == "transfer-encoding":
                chunked = True
        self.content_length = length
        no_body = self._head_only or status in (204, 304)
        self._until_close = not no_body and length is None and not chunked
        if self._head_only or not self._parser.should_keep_alive():
            self._reusable = False
        self._got_head = True
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)
        if self._head_only:
            self._message_complete()

    def on_body(self, body: bytes) -> None:
        if self._done:  # bytes after the headers of a HEAD answer: not this exchange's
            self._reusable = False
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._got_head and not self._done:
            self._message_complete()

    # -- the exchange --------------------------------------------------------------------------------

    def _start(self, head_only: bool) -> asyncio.Future[None]:
        self._active = True
        self._sender = None
        self._body_sent = True
        self._done = False
        self._error = None
        self._got_head = self._received = False
        self._head_only = head_only
        self._head_bytes = 0
        self._head = fut = self._loop.create_future()
        self._last_read = self._loop.time()
        self._watch_silence()
        return fut

    def _message_complete(self) -> None:
        self._done = True
        self._unwatch()
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        self._interrupt(error)
        self.close()

    def _interrupt(self, error: UpstreamError) -> None:
        """End the exchange with ``error``: whoever waits for the head or the body gets it."""
        if self._error is None and not self._done:
            self._error = error
        self._unwatch()
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _watch_silence(self) -> None:
        self._pool._watched.add(self)
        self._pool._watch()

    def _unwatch(self) -> None:
        self._pool._watched.discard(self)

    def _check_silence(self, now: float, timeout: float) -> None:
        """Called by the pool's watch: fail the exchange after ``timeout`` of the app's silence."""
        if self._paused or not self._body_sent:
            # The silence is the slow client's, not the app's: it is still uploading, or not yet
            # reading what the app sent.
            self._last_read = now
        elif now - self._last_read >= timeout:
            self._fail(UpstreamError("timeout", "no response from the app"))

    async def drain(self) -> None:
        """Wait until the transport's write buffer has room (request-body flow control)."""
        if self.closed:
            raise ConnectionResetError("connection to the app lost")
        if self._write_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def read(self) -> bytes:
        """The whole (remaining) response body (for small ones: it is held in memory)."""
        while not self._done:
            self._resume_reading()  # the whole body is wanted: never wait on a paused connection
            await self._wait()
        chunks = self._chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        self._resume_reading()
        return body

    async def readany(self) -> bytes:
        """The next piece of the response body as it arrives; ``b""`` at its end."""
        chunks = self._chunks
        while not chunks:
            if self._done:
                return b""
            await self._wait()
        chunk = chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < _LOW_WATER:
            self._resume_reading()
        return chunk

    def _resume_reading(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = waiter = self._loop.create_future()
        await waiter
        if self._error is not None and not self._chunks:
            raise self._error

    def send_body(self, body: StreamReader, chunked: bool) -> None:
        """Relay the request body in the background; its failure fails the wait for the response."""
        self._body_sent = False
        self._sender = sender = asyncio.ensure_future(self._relay(body, chunked))
        sender.add_done_callback(self._sent)

    async def _relay(self, body: StreamReader, chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        read = body.readany
        while True:
            try:
                chunk = await read()
            except Exception as exc:
                raise ClientBodyError(type(exc).__name__) from exc
            if not chunk:
                break
            if self.closed:
                raise UpstreamError("reset", "connection closed by the app")
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self._write_paused:
                await self.drain()
        if chunked:
            transport.write(b"0\r\n\r\n")
        self._body_sent = True
        self._last_read = self._loop.time()  # the app's silence counts from the end of the body

    def _sent(self, sender: asyncio.Task[None]) -> None:
        if sender.cancelled():
            return
        exc = sender.exception()
        if exc is None:
            return
        if isinstance(exc, OSError):
            exc = UpstreamError("reset", "connection closed by the app")
        head = self._head
        if head is not None and not head.done():
            # The app may have answered before the body was complete (a 413, say): then that answer
            # stands and only the connection is lost; otherwise the failure is the exchange's.
            head.set_exception(exc)
        self.close()

    def release(self) -> None:
        """Done with the response: back to the pool when it is complete and reusable, else closed."""
        if self._done and self._reusable and self._body_sent and not self.closed and not self._chunks:
            self._active = False
            self._head = None
            self._pool._put(self)
        else:
            self.close()

    def close(self) -> None:
        if self._active and not self._done:
            self._interrupt(UpstreamError("reset", "connection closed"))
        self._active = False
        self._unwatch()
        sender = self._sender
        if sender is not None and not sender.done():
            sender.cancel()
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class Pool:
    """Keep-alive connections to one ``host:port`` (TLS when ``ssl_context`` is given).

    Connections are reused most recently used first, so a quiet period lets the others reach the
    app's keep-alive timeout; one idle longer than ``keepalive`` is closed rather than reused.
    """

    def __init__(
        self,
        host: str,
        port: int,
        authority: str,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        keepalive: float,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._host, self._port, self._ssl = host, port, ssl_context
        self._host_line = f"Host: {authority}\r\n"
        self._limit = limit
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: collections.deque[Connection] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closing = False
        self._sweeper: asyncio.TimerHandle | None = None
        # Exchanges waiting on the app, checked for silence by one periodic watch instead of a
        # timer per request (a timer costs more than the rest of the bookkeeping of a request).
        self._watched: set[Connection] = set()
        self._watcher: asyncio.TimerHandle | None = None
        self._tick = min(1.0, read_timeout / 4)

    def head(self, method: str, target: str, headers: Collection[tuple[str, str]], chunked: bool) -> bytes:
        """The request line and header block, checked to be exactly the lines intended."""
        text = "".join((
            f"{method} {target} HTTP/1.1\r\n", self._host_line,
            "\r\n".join(map(": ".join, headers)), "\r\n" if headers else "",
            "Transfer-Encoding: chunked\r\n\r\n" if chunked else "\r\n",
        ))
        # A CR or LF inside a name or value would start a header (or a request) of its own.
        lines = len(headers) + (4 if chunked else 3)
        if text.count("\n") != lines or text.count("\r") != lines:
            raise UpstreamError("refused", "header value with a line break")
        return text.encode("utf-8", "surrogateescape")

    async def request(self, method: str, head: bytes, body: StreamReader | None,
                      chunked: bool) -> Connection:
        """Send one request; return the connection once the response headers have arrived."""
        retry = body is None and method in _IDEMPOTENT
        while True:
            conn = await self._acquire()
            head_arrived = conn._start(method == "HEAD")
            transport = conn.transport
            assert transport is not None
            transport.write(head)
            if body is not None:
                conn.send_body(body, chunked)
            try:
                await head_arrived
            except _Stale:
                if retry and conn.reused:
                    retry = False
                    continue
                raise UpstreamError("reset", "connection closed by the app") from None
            except BaseException:
                conn.close()
                raise
            return conn

    async def _acquire(self) -> Connection:
        idle = self._idle
        while True:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if conn.closed:
                    continue
                if now - conn.idle_since >= self._keepalive:
                    conn.close()
                    continue
                conn.reused = True
                return conn
            if self._closing:
                raise UpstreamError("refused", "shutting down")
            if self._open < self._limit:
                return await self._connect()
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self) -> Connection:
        self._open += 1
        conn = Connection(self)
        conn._counted = True
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self.loop.create_connection(
                    lambda: conn, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError:
            conn.close()
            self._lost(conn)
            raise UpstreamError("timeout", "connect") from None
        except OSError as exc:  # ssl.SSLError included
            conn.close()
            self._lost(conn)
            raise UpstreamError("refused", type(exc).__name__) from None
        except BaseException:
            conn.close()
            self._lost(conn)
            raise
        return conn

    def _put(self, conn: Connection) -> None:
        if self._closing:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._keepalive, self._sweep)
        self._wake_one()

    def _lost(self, conn: Connection) -> None:
        if conn._counted:
            conn._counted = False
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _watch(self) -> None:
        if self._watcher is None:
            self._watcher = self.loop.call_later(self._tick, self._check_watched)

    def _check_watched(self) -> None:
        self._watcher = None
        now, timeout = self.loop.time(), self.read_timeout
        for conn in list(self._watched):
            conn._check_silence(now, timeout)
        if self._watched:
            self._watch()

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive, so the app is not left holding them."""
        self._sweeper = None
        deadline = self.loop.time() - self._keepalive
        idle = self._idle
        while idle and (idle[0].closed or idle[0].idle_since <= deadline):
            idle.popleft().close()
        if idle:
            self._sweeper = self.loop.call_later(self._keepalive, self._sweep)

    async def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        while self._idle:
            self._idle.popleft().close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

