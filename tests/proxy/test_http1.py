"""The HTTP/1.1 client to the app: pooling, framing, malformed answers, flow control.

The app here is written against the socket (:class:`RawApp`), so a test can script exactly the
bytes a misbehaving app sends; what the proxy as a whole does with them is in test_forward.py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from sidecar.errors import UpstreamError
from sidecar.proxy.http1 import Connection, Pool

from .conftest import MakeProxy, Upstream

TIMEOUT = 10
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# (request number on its connection, request head) -> what the app does
Script = Callable[[int, bytes], Awaitable[bytes | None]]


@dataclass
class RawApp:
    """An app on a raw socket: reads request heads (and sized bodies), answers what ``script`` says.

    ``script`` returns the bytes to send, or ``None`` to close the connection without answering;
    with ``close_after_answer`` the app closes the connection after each answer.
    """

    script: Script
    close_after_answer: bool = False
    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    # Answers without reading the request body, then reads (and drops) until the proxy closes:
    # a lingering close, so the answer is not lost to a TCP reset (RFC 9112 §9.6).
    answer_early: bool = False
    closed_by_proxy: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        n = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_proxy.set()
                    return
                n += 1
                self.heads.append(head)
                if self.answer_early:
                    writer.write(await self.script(n, head) or b"")
                    while await reader.read(65536):
                        pass
                    self.closed_by_proxy.set()
                    return
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                answer = await self.script(n, head)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


Serve = Callable[..., Awaitable[RawApp]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[tuple[asyncio.Server, RawApp]] = []

    async def start(script: Script, *, close_after_answer: bool = False, answer_early: bool = False,
                    tls: ssl.SSLContext | None = None) -> RawApp:
        app = RawApp(script, close_after_answer, answer_early=answer_early)
        server = await asyncio.start_server(app.handle, "127.0.0.1", 0, ssl=tls)
        servers.append((server, app))
        app.port = server.sockets[0].getsockname()[1]
        return app

    yield start
    for server, app in servers:
        server.close()
        for writer in app.writers:
            writer.close()
        await server.wait_closed()


def always(answer: bytes | None) -> Script:
    async def script(_n: int, _head: bytes) -> bytes | None:
        return answer

    return script


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., Pool]]:
    made: list[Pool] = []

    def make(app: RawApp, *, limit: int = 16, keepalive: float = 4.0, read_timeout: float = 10.0) -> Pool:
        pool = Pool("127.0.0.1", app.port, f"127.0.0.1:{app.port}", ssl_context=None, limit=limit,
                    keepalive=keepalive, connect_timeout=5.0, read_timeout=read_timeout)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


async def get(pool: Pool, method: str = "GET", target: str = "/") -> tuple[Connection, bytes]:
    async with asyncio.timeout(TIMEOUT):
        conn = await pool.request(method, pool.head(method, target, [], False), None, False)
        body = await conn.read()
        conn.release()
        return conn, body


# -- pooling ------------------------------------------------------------------------------------------


async def test_a_keep_alive_connection_is_reused(serve: Serve,
                                                 pools: Callable[..., Pool]) -> None:
    app = await serve(always(OK))
    pool = pools(app)
    for _ in range(3):
        _, body = await get(pool)
        assert body == b"ok"
    assert app.connections == 1


async def test_connection_close_from_the_app_is_honoured(serve: Serve,
                                                         pools: Callable[..., Pool]) -> None:
    app = await serve(always(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
    pool = pools(app)
    await get(pool)
    await get(pool)
    assert app.connections == 2


async def test_an_http_1_0_answer_is_not_kept_alive(serve: Serve,
                                                    pools: Callable[..., Pool]) -> None:
    app = await serve(always(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    pool = pools(app)
    await get(pool)
    await get(pool)
    assert app.connections == 2


def closes_on_second_request(answer: bytes = OK) -> Script:
    """The keep-alive race: the app closes an idle connection just as the proxy reuses it."""

    async def script(n: int, _head: bytes) -> bytes | None:
        return answer if n == 1 else None

    return script


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
async def test_an_idempotent_request_on_a_connection_the_app_closed_is_retried_once(
    serve: Serve, pools: Callable[..., Pool], method: str
) -> None:
    app = await serve(closes_on_second_request())
    pool = pools(app)
    await get(pool)
    conn, _ = await get(pool, method)
    assert conn.status == 200
    assert app.connections == 2
    assert len(app.heads) == 3  # the first answer, the lost request, the retry


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_non_idempotent_request_is_never_retried(
    serve: Serve, pools: Callable[..., Pool], method: str
) -> None:
    app = await serve(closes_on_second_request())
    pool = pools(app)
    await get(pool)
    with pytest.raises(UpstreamError) as info:
        await get(pool, method)
    assert info.value.kind == "reset"
    assert len(app.heads) == 2


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(
    serve: Serve, pools: Callable[..., Pool]
) -> None:
    app = await serve(always(None))
    with pytest.raises(UpstreamError) as info:
        await get(pools(app))
    assert info.value.kind == "reset"
    assert app.connections == 1


async def test_a_connection_idle_past_the_keep_alive_is_closed_not_reused(
    serve: Serve, pools: Callable[..., Pool]
) -> None:
    app = await serve(always(OK))
    pool = pools(app, keepalive=0.0)
    await get(pool)
    await get(pool)
    assert app.connections == 2
    async with asyncio.timeout(TIMEOUT):
        await app.closed_by_proxy.wait()


async def test_the_pool_never_opens_more_connections_than_its_limit(
    serve: Serve, pools: Callable[..., Pool]
) -> None:
    release = asyncio.Event()
    waiting = 0
    two_waiting = asyncio.Event()

    async def script(_n: int, _head: bytes) -> bytes:
        nonlocal waiting
        waiting += 1
        if waiting == 2:
            two_waiting.set()
        await release.wait()
        return OK

    app = await serve(script)
    pool = pools(app, limit=2)
    requests = [asyncio.create_task(get(pool)) for _ in range(5)]
    async with asyncio.timeout(TIMEOUT):
        await two_waiting.wait()
        assert app.connections == 2
        release.set()
        done = await asyncio.gather(*requests)
    assert [body for _, body in done] == [b"ok"] * 5
    assert app.connections == 2


# -- framing ------------------------------------------------------------------------------------------


async def test_an_interim_1xx_answer_is_skipped(serve: Serve,
                                                pools: Callable[..., Pool]) -> None:
    app = await serve(always(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK))
    conn, body = await get(pools(app))
    assert (conn.status, body) == (200, b"ok")
    assert [name for name, _ in conn.headers] == ["Content-Length"]


async def test_a_body_that_runs_until_close_is_read_whole(serve: Serve,
                                                          pools: Callable[..., Pool]) -> None:
    app = await serve(always(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"), close_after_answer=True)
    pool = pools(app)
    async with asyncio.timeout(TIMEOUT):
        conn = await pool.request("GET", pool.head("GET", "/", [], False), None, False)
        assert conn.content_length is None
        body = await conn.read()
    conn.release()
    assert body == b"until the end"
    assert conn.closed


async def test_a_chunked_body_is_decoded(serve: Serve,
                                         pools: Callable[..., Pool]) -> None:
    app = await serve(always(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    ))
    pool = pools(app)
    _, body = await get(pool)
    _, again = await get(pool)
    assert body == again == b"abcde"
    assert app.connections == 1


async def test_a_head_answer_ends_at_its_headers(serve: Serve,
                                                 pools: Callable[..., Pool]) -> None:
    app = await serve(always(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"))
    conn, body = await get(pools(app), "HEAD")
    assert (conn.status, conn.content_length, body) == (200, 1000, b"")


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_end_at_their_headers(
    serve: Serve, pools: Callable[..., Pool], status: int
) -> None:
    app = await serve(always(b"HTTP/1.1 %d X\r\nETag: \"1\"\r\n\r\n" % status))
    pool = pools(app)
    conn, body = await get(pool)
    assert (conn.status, body) == (status, b"")
    await get(pool)
    assert app.connections == 1


async def test_headers_keep_their_bytes_and_order(serve: Serve,
                                                  pools: Callable[..., Pool]) -> None:
    app = await serve(always(
        b"HTTP/1.1 200 Fine Thanks\r\nSet-Cookie: a=1\r\nX-Name: caf\xc3\xa9\r\nSet-Cookie: b=2\r\n"
        b"Content-Length: 0\r\n\r\n"
    ))
    conn, _ = await get(pools(app))
    assert conn.reason == "Fine Thanks"
    assert conn.headers == [("Set-Cookie", "a=1"), ("X-Name", "café"), ("Set-Cookie", "b=2"),
                            ("Content-Length", "0")]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\nok\r\n0\r\n\r\n", id="length-and-chunked"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                     id="two-lengths"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n",
                     id="bad-chunk-size"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", id="space-in-name"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", id="bare-cr-in-value"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
                     id="unasked-upgrade"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", id="head-over-256k"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", id="closed-short-of-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
                     id="closed-mid-chunks"),
    ],
)
async def test_a_malformed_or_truncated_answer_is_a_reset(
    serve: Serve, pools: Callable[..., Pool], answer: bytes
) -> None:
    # The app closes after its answer: the truncated cases end there.
    app = await serve(always(answer), close_after_answer=True)
    with pytest.raises(UpstreamError) as info:
        await get(pools(app))
    assert info.value.kind == "reset"


async def test_a_second_answer_to_one_request_never_reaches_the_next_request(
    serve: Serve, pools: Callable[..., Pool]
) -> None:
    """Response queue poisoning: the extra answer is dropped with its connection."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Evil: 1\r\n\r\nsmuggled"

    async def script(_n: int, _head: bytes) -> bytes:
        first = len(app.heads) == 1
        return (OK + smuggled) if first else b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"

    app = await serve(script)
    pool = pools(app)
    conn, body = await get(pool)
    assert (conn.status, body, [n for n, _ in conn.headers]) == (200, b"ok", ["Content-Length"])
    _, body = await get(pool)
    assert body == b"second"
    assert app.connections == 2


async def test_bytes_after_a_head_answer_are_not_taken_as_the_next_answer(
    serve: Serve, pools: Callable[..., Pool]
) -> None:
    app = await serve(always(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\njunk"))
    pool = pools(app)
    conn, body = await get(pool, "HEAD")
    assert (conn.status, body) == (200, b"")
    _, body = await get(pool)
    assert body == b"junk"
    assert app.connections == 2


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_a_line_break_in_a_header_never_reaches_the_app(value: str) -> None:
    pool = Pool.__new__(Pool)
    pool._host_line = "Host: app\r\n"
    with pytest.raises(UpstreamError):
        pool.head("GET", "/", [("X-Value", value)], False)
    with pytest.raises(UpstreamError):
        pool.head("GET", "/", [(value, "v")], False)


def test_the_request_head_is_exactly_the_lines_given() -> None:
    pool = Pool.__new__(Pool)
    pool._host_line = "Host: app:3000\r\n"
    head = pool.head("POST", "/a%2Fb?q=%zz", [("X-A", "1"), ("X-Name", "café")], True)
    assert head == (
        b"POST /a%2Fb?q=%zz HTTP/1.1\r\nHost: app:3000\r\nX-A: 1\r\nX-Name: caf\xc3\xa9\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )


# -- timeouts and flow control ----------------------------------------------------------------------


async def test_silence_after_the_request_is_a_timeout(serve: Serve,
                                                      pools: Callable[..., Pool]) -> None:
    never = asyncio.Event()

    async def silent(_n: int, _head: bytes) -> bytes | None:
        await never.wait()
        return None

    app = await serve(silent)
    with pytest.raises(UpstreamError) as info:
        await get(pools(app, read_timeout=0.1))
    assert info.value.kind == "timeout"
    never.set()


async def test_a_slow_upload_is_not_the_apps_silence(make_proxy: MakeProxy, upstream: Upstream) -> None:
    """The read timeout counts the app's silence after the body, not the client's slow upload."""
    proxy = await make_proxy(read_timeout=0.2)

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"z" * 1000
            await asyncio.sleep(0.1)  # a slow client: 0.5 s of upload against a 0.2 s timeout

    async with asyncio.timeout(TIMEOUT):
        resp = await proxy.client.post("/upload", data=slow())
        assert resp.status == 200
        assert (await resp.json())["size"] == 5000


async def test_a_refused_connection_is_refused(pools: Callable[..., Pool], closed_port: int) -> None:
    app = RawApp(always(OK), port=closed_port)
    with pytest.raises(UpstreamError) as info:
        await get(pools(app))
    assert info.value.kind == "refused"


async def test_the_app_answering_before_the_upload_ends_wins(
    make_proxy: MakeProxy, serve: Serve
) -> None:
    app = await serve(always(
        b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n"
    ), answer_early=True)
    proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{app.port}")
    stop = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while not stop.is_set():
            yield b"x" * 65536
            await asyncio.sleep(0)

    try:
        async with asyncio.timeout(TIMEOUT):
            resp = await proxy.client.post("/upload", data=endless())
            assert resp.status == 413
            assert await resp.read() == b"too big\n"
            await app.closed_by_proxy.wait()  # the rest of the body is not sent
    finally:
        stop.set()


async def test_a_client_that_stops_reading_stops_the_app_sending(make_proxy: MakeProxy) -> None:
    """Backpressure: the proxy stops reading the app instead of buffering what the client won't take."""
    chunk = b"y" * 65536
    total = 64 << 20
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    sent = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        # drain() only waits past 8 MiB: the app's own buffer growing is the sign of being held back.
        writer.transport.set_write_buffer_limits(high=8 << 20)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        try:
            while sent < total:
                writer.write(chunk)
                sent += len(chunk)
                if writer.transport.get_write_buffer_size() > 1 << 20 and not outcome.done():
                    outcome.set_result("app held back")
                if sent > 32 << 20 and not outcome.done():
                    # (The kernel's socket buffers on loopback hold a few MiB at most.)
                    outcome.set_result("app sent 32 MiB to a client that reads nothing")
                await writer.drain()
                await asyncio.sleep(0)  # one loop runs app, proxy and client: let the proxy read
        except ConnectionError:
            pass
        finally:
            writer.close()

    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handle(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{port}")
        async with asyncio.timeout(TIMEOUT):
            resp = await proxy.client.get("/big")
            assert len(await resp.content.readexactly(65536)) == 65536
            assert await outcome == "app held back"
            resp.close()
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-ca", "unknown-ca"])
async def test_an_https_app_is_reached_over_verified_tls(
    make_proxy: MakeProxy, serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    app = await serve(always(OK), tls=server_ctx)
    if trusted:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # read by the default context
    proxy = await make_proxy(upstream_url=f"https://127.0.0.1:{app.port}")
    async with asyncio.timeout(TIMEOUT):
        resp = await proxy.client.get("/x")
        if trusted:
            assert (resp.status, await resp.read()) == (200, b"ok")
        else:
            assert (resp.status, await resp.text()) == (502, "refused")
    assert app.connections == (1 if trusted else 0)  # an unverified handshake sends nothing


async def test_reading_a_whole_body_larger_than_the_buffer_limit_completes(
    serve: Serve, pools: Callable[..., Pool]
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: the connection pauses reading on the way
    app = await serve(always(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    pool = pools(app)
    _, got = await get(pool)
    _, again = await get(pool)
    assert got == again == body
    assert app.connections == 1
