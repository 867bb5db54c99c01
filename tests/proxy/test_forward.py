"""The streaming proxy over real loopback HTTP: client → test proxy (HeaderPolicy + Forwarder) → upstream."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from sidecar.config import IdentityHeaderSettings
from sidecar.proxy.forward import CLIENT_CLOSED, SMALL_BODY
from tests.proxy.conftest import ALICE, BIG_GZIPPED, GZIPPED, MakeProxy, Upstream

TIMEOUT = 10  # a deadlock (a buffering proxy) fails the test instead of hanging it


def sample(metric: object, name: str, **labels: str) -> float:
    value = metric.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return value or 0.0


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
async def test_method_is_preserved(make_proxy: MakeProxy, upstream: Upstream, method: str) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.request(method, "/m")
    assert resp.status == 200
    assert upstream.last.method == method


RAW_TARGETS = [
    "/a%2Fb?x=1&x=2",
    "/a/../b/./c",
    "//double//slash",
    "/caf%C3%A9?q=%E2%82%AC+x&empty=&flag",
    "/semi;colon=1/%7euser?a=%zz",
    "/sp%20ace?q=a%20b+c",
]


@pytest.mark.parametrize("target", RAW_TARGETS, ids=RAW_TARGETS)
async def test_raw_path_and_query_bytes_are_preserved(
    make_proxy: MakeProxy, upstream: Upstream, target: str
) -> None:
    proxy = await make_proxy()
    url = URL(str(proxy.client.make_url("")).rstrip("/") + target, encoded=True)
    async with proxy.client.session.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == b"echo:" + target.encode()
    assert upstream.last.raw_path == target


async def test_a_path_prefix_in_the_upstream_url_is_prepended(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream_url=upstream.url + "/base")
    resp = await proxy.client.get("/x?y=1")
    assert resp.status == 200
    assert upstream.last.raw_path == "/base/x?y=1"


async def test_a_50mb_upload_streams_through_without_buffering(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    chunk = bytes(range(256)) * 4096  # 1 MiB
    total = 50
    digest = hashlib.sha256()
    for _ in range(total):
        digest.update(chunk)

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        # Only continues once the app has the first chunk: a proxy that buffers the whole body
        # before sending it upstream would wait here forever.
        await upstream.events["upload_first_chunk"].wait()
        for _ in range(total - 1):
            yield chunk

    async with asyncio.timeout(TIMEOUT):
        resp = await proxy.client.post("/upload", data=body())
        assert resp.status == 200
        assert await resp.json() == {"size": total * len(chunk), "sha256": digest.hexdigest()}
    assert upstream.last.header("Transfer-Encoding") == "chunked"
    assert upstream.last.header("Content-Length") is None


async def test_a_sized_upload_keeps_its_content_length(make_proxy: MakeProxy, upstream: Upstream) -> None:
    proxy = await make_proxy()
    payload = b"p" * 300_000
    resp = await proxy.client.put("/upload", data=payload)
    assert (await resp.json())["size"] == len(payload)
    assert upstream.last.header("Content-Length") == str(len(payload))
    assert upstream.last.header("Transfer-Encoding") is None


async def test_a_get_without_body_sends_no_body_and_no_invented_headers(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy(skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
    await proxy.client.get("/plain")
    names = {k.lower() for k, _ in upstream.last.headers}
    assert names == {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    assert upstream.last.header("Host") == upstream.url.removeprefix("http://")


async def test_the_response_streams_before_the_app_finishes(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    async with asyncio.timeout(TIMEOUT):
        resp = await proxy.client.get("/stream")
        assert resp.status == 200
        # The app holds the rest back until this test has read the first chunk.
        assert await resp.content.readexactly(6) == b"first;"
        upstream.events["stream_continue"].set()
        assert await resp.read() == b"second"
    assert resp.headers.get("Transfer-Encoding") == "chunked"


async def test_a_large_sized_response_stays_sized(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.get("/sized")
    assert resp.headers["Content-Length"] == "100000"
    assert "Transfer-Encoding" not in resp.headers
    assert await resp.read() == b"s" * 100_000


async def test_a_small_sized_response_stays_sized(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.get("/small")
    assert resp.headers["Content-Length"] == str(len(b"echo:/small"))
    assert "Transfer-Encoding" not in resp.headers
    assert resp.headers["X-Upstream"] == "echo"


async def test_a_chunked_response_arrives_whole(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.get("/chunked")
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert await resp.read() == b"".join(f"part{i};".encode() * 20_000 for i in range(5))


async def test_head_keeps_the_length_and_sends_no_body(make_proxy: MakeProxy, upstream: Upstream) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.head("/sized")
    assert resp.status == 200
    assert upstream.last.method == "HEAD"
    assert resp.headers["Content-Length"] == "100000"
    assert await resp.read() == b""


@pytest.mark.parametrize(("path", "status"), [("/no-content", 204), ("/not-modified", 304)])
async def test_bodiless_statuses(make_proxy: MakeProxy, path: str, status: int) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.get(path)
    assert resp.status == status
    assert resp.headers["ETag"] == '"v1"'
    assert resp.headers["X-Upstream"] == "yes"
    assert await resp.read() == b""
    # The connection is still usable afterwards: no stray body bytes were written.
    assert (await proxy.client.get("/after")).status == 200


async def test_every_set_cookie_reaches_the_client(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.get("/cookies")
    assert resp.headers.getall("Set-Cookie") == ["sid=abc; Path=/; HttpOnly", "theme=dark; Path=/"]


async def test_the_proxy_keeps_no_cookies_between_clients(make_proxy: MakeProxy, upstream: Upstream) -> None:
    # By name: a cookie jar ignores cookies from bare IP addresses, which would hide a leak.
    proxy = await make_proxy(upstream_url=upstream.url.replace("127.0.0.1", "localhost"))
    await proxy.client.get("/cookies")  # the app sets cookies for client A
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other,
        other.get(proxy.client.make_url("/echo")) as resp,  # client B
    ):
        assert resp.status == 200
    assert upstream.last.header("Cookie") is None


@pytest.mark.parametrize(("path", "expected"), [("/gzip", GZIPPED), ("/gzip-big", BIG_GZIPPED)])
async def test_compressed_bodies_pass_through_still_compressed(
    make_proxy: MakeProxy, upstream: Upstream, path: str, expected: bytes
) -> None:
    proxy = await make_proxy(auto_decompress=False)
    resp = await proxy.client.get(path, headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert await resp.read() == expected
    assert upstream.last.header("Accept-Encoding") == "gzip"


async def test_hop_by_hop_headers_are_removed_both_ways(make_proxy: MakeProxy, upstream: Upstream) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.get(
        "/hop",
        headers={
            "Connection": "keep-alive, X-Req-Hop",
            "X-Req-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-End-To-End": "kept",
        },
    )
    sent = {k.lower() for k, _ in upstream.last.headers}
    assert not sent & {"x-req-hop", "keep-alive", "te", "proxy-authorization"}
    assert upstream.last.header("X-End-To-End") == "kept"
    assert upstream.last.header("Connection") in (None, "keep-alive")
    assert "X-Resp-Hop" not in resp.headers
    assert "Proxy-Authenticate" not in resp.headers
    assert "Keep-Alive" not in resp.headers
    assert resp.headers["X-End-To-End"] == "kept"


SPOOFED = [
    "X-User-Id", "x-user-id", "X_User_Id", "X-Auth-Request-Email", "X-Forwarded-User", "X-Tenant", "X_Legacy",
]


@pytest.mark.parametrize("name", SPOOFED, ids=SPOOFED)
async def test_spoofed_identity_headers_are_stripped_and_replaced(
    make_proxy: MakeProxy, upstream: Upstream, name: str
) -> None:
    settings = IdentityHeaderSettings(claims={"tenant": "X-Tenant"}, strip=("X-Legacy",))
    proxy = await make_proxy(identity=ALICE, identity_headers=settings)
    await proxy.client.get("/who", headers={name: "spoofed"})
    assert "spoofed" not in [v for _, v in upstream.last.headers]
    assert upstream.last.all("X-User-Id") == ["user-123"]
    assert upstream.last.all("X-User-Email") == ["alice@example.com"]
    assert upstream.last.all("X-User-Groups") == ["admins,ops"]
    assert upstream.last.all("X-Tenant") == ["acme"]


async def test_a_claim_with_crlf_cannot_inject_a_header(make_proxy: MakeProxy, upstream: Upstream) -> None:
    evil = ALICE.__class__(**{**{s: getattr(ALICE, s) for s in ALICE.__slots__}, "sub": "x\r\nX-Admin: true"})
    proxy = await make_proxy(identity=evil)
    resp = await proxy.client.get("/who")
    assert resp.status == 200
    assert upstream.last.header("X-Admin") is None
    assert upstream.last.all("X-User-Id") == ["xX-Admin: true"]


async def test_sidecar_cookies_are_removed_and_others_are_byte_exact(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy(identity=ALICE)
    raw = 'theme=dark; access_token.0=aaa; access_token.1=bbb; prefs="a b;c"; authsidecar_tx=t; q=%E2%82%AC'
    await proxy.client.get("/c", headers={"Cookie": raw})
    assert upstream.last.all("Cookie") == ['theme=dark; prefs="a b;c"; q=%E2%82%AC']
    await proxy.client.get("/c", headers={"Cookie": "access_token=only"})
    assert upstream.last.all("Cookie") == []


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted-peer", "trusted-peer"])
async def test_x_forwarded_headers_depend_on_the_peer(
    make_proxy: MakeProxy, upstream: Upstream, trusted: bool
) -> None:
    proxy = await make_proxy(trusted=("127.0.0.0/8",) if trusted else ())
    await proxy.client.get(
        "/xff",
        headers={
            "X-Forwarded-For": "198.51.100.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "public.example.com",
            "Forwarded": "for=198.51.100.7",
        },
    )
    got = upstream.last
    host = proxy.client.make_url("").authority
    if trusted:
        assert got.all("X-Forwarded-For") == ["198.51.100.7, 127.0.0.1"]
        assert got.all("X-Forwarded-Proto") == ["https"]
        assert got.all("X-Forwarded-Host") == ["public.example.com"]
        assert got.all("Forwarded") == ["for=198.51.100.7"]
    else:
        assert got.all("X-Forwarded-For") == ["127.0.0.1"]
        assert got.all("X-Forwarded-Proto") == ["http"]
        assert got.all("X-Forwarded-Host") == [host]
        assert got.all("Forwarded") == []
    assert got.all("X-Request-Id") == ["req-1"]


async def test_upstream_down_is_refused_502(make_proxy: MakeProxy, closed_port: int) -> None:
    proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{closed_port}")
    resp = await proxy.client.get("/x")
    assert resp.status == 502
    assert await resp.text() == "refused"
    assert sample(proxy.metrics, "authsidecar_upstream_errors_total", kind="refused") == 1


async def test_a_silent_upstream_times_out_504(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(read_timeout=0.2)
    resp = await proxy.client.get("/slow")
    assert resp.status == 504
    assert await resp.text() == "timeout"
    assert sample(proxy.metrics, "authsidecar_upstream_errors_total", kind="timeout") == 1


async def test_a_reset_before_a_small_body_is_complete_is_a_502(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    resp = await proxy.client.get("/reset-small")
    assert resp.status == 502
    assert await resp.text() == "reset"
    assert sample(proxy.metrics, "authsidecar_upstream_errors_total", kind="reset") == 1


async def test_a_reset_mid_stream_aborts_the_client_connection_quietly(
    make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy()
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        async with asyncio.timeout(TIMEOUT):
            resp = await proxy.client.get("/reset-big")
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(1 << 20)
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sample(proxy.metrics, "authsidecar_upstream_errors_total", kind="reset") == 1


@pytest.mark.parametrize("cancellation", [False, True], ids=["handler-runs-on", "handler-cancelled"])
async def test_a_client_leaving_mid_stream_releases_the_upstream(
    make_proxy: MakeProxy, upstream: Upstream, caplog: pytest.LogCaptureFixture, cancellation: bool
) -> None:
    proxy = await make_proxy(handler_cancellation=cancellation)
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        async with asyncio.timeout(TIMEOUT):
            resp = await proxy.client.get("/stream-forever")
            await resp.content.readexactly(65536)
            resp.close()  # drops the client's connection
            await upstream.events["stream_client_gone"].wait()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_time_to_headers_is_measured(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    await proxy.client.get("/m")
    assert sample(proxy.metrics, "authsidecar_upstream_request_seconds_count") == 1


def test_small_body_limit_is_64_kib() -> None:
    assert SMALL_BODY == 64 * 1024


async def test_forward_before_start_is_a_programming_error() -> None:
    from prometheus_client import CollectorRegistry

    from sidecar.config import UpstreamSettings
    from sidecar.observability import Metrics
    from sidecar.proxy.forward import Forwarder

    forwarder = Forwarder(UpstreamSettings(), Metrics(CollectorRegistry()))
    request = web.BaseRequest.__new__(web.Request)
    with pytest.raises(AssertionError, match="start"):
        await forwarder.forward(request, None)  # type: ignore[arg-type]


async def test_an_absolute_form_target_is_sent_upstream_in_origin_form(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    url = proxy.client.make_url("")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            b"GET http://evil.example/abs%2Fx?q=%zz HTTP/1.1\r\n"
            b"Host: evil.example\r\nConnection: close\r\n\r\n"
        )
        response = await reader.read()
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 200 ")
    assert upstream.last.raw_path == "/abs%2Fx?q=%zz"
    assert upstream.last.header("Host") == upstream.url.removeprefix("http://")


async def test_a_client_leaving_mid_upload_is_not_an_upstream_error(
    make_proxy: MakeProxy, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy()
    url = proxy.client.make_url("")
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        async with asyncio.timeout(TIMEOUT):
            _, writer = await asyncio.open_connection(url.host, url.port)
            writer.write(
                b"POST /upload-partial HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n"
            )
            await upstream.events["upload_first_chunk"].wait()
            writer.transport.abort()
            await proxy.answered.wait()
            await upstream.events["upload_ended"].wait()  # the app's request was ended, not left hanging
    assert proxy.statuses == [CLIENT_CLOSED]
    assert sample(proxy.metrics, "authsidecar_upstream_errors_total", kind="reset") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
