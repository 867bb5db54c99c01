from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from sidecar.dev.upstream import UPSTREAM_STATS, UpstreamStats, create_upstream_app


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    server = await aiohttp_server(create_upstream_app(), host="127.0.0.1")
    return await aiohttp_client(server)


def _stats(client: TestClient[Any, Any]) -> UpstreamStats:
    assert isinstance(client.server, TestServer)
    return client.server.app[UPSTREAM_STATS]


async def test_echo_reports_what_arrived(upstream: TestClient[Any, Any]) -> None:
    answer = await upstream.patch(
        "/some/path?a=1&a=2&b=x",
        data=b"12345",
        headers={"X-User-Email": "alice@example.com", "X-User-Sub": "abc", "X-Other": "o"},
    )
    assert answer.status == 200
    body = await answer.json()
    assert body["method"] == "PATCH"
    assert body["path"] == "/some/path"
    assert body["query"] == {"a": ["1", "2"], "b": ["x"]}
    assert body["body_length"] == 5
    assert body["identity"] == {"X-User-Email": "alice@example.com", "X-User-Sub": "abc"}
    assert body["headers"]["X-Other"] == "o"
    assert ["X-Other", "o"] in body["header_list"]


async def test_repeated_headers_are_all_reported(upstream: TestClient[Any, Any]) -> None:
    body = await (await upstream.get("/", headers=[("X-Dup", "1"), ("X-Dup", "2")])).json()
    assert body["headers"]["X-Dup"] == "1, 2"
    assert [pair for pair in body["header_list"] if pair[0] == "X-Dup"] == [["X-Dup", "1"], ["X-Dup", "2"]]


async def test_requests_are_counted(upstream: TestClient[Any, Any]) -> None:
    await upstream.get("/a")
    await upstream.post("/a")
    await upstream.get("/b")
    stats = _stats(upstream)
    assert stats.total == 3
    assert stats.by_path == {"/a": 2, "/b": 1}


async def test_websocket_echoes_text_and_binary(upstream: TestClient[Any, Any]) -> None:
    async with upstream.ws_connect("/ws") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        await ws.send_bytes(b"\x00\x01\xff")
        assert await ws.receive_bytes() == b"\x00\x01\xff"
    assert _stats(upstream).websocket_messages >= 2


async def test_stream_sends_exactly_n_bytes(upstream: TestClient[Any, Any]) -> None:
    answer = await upstream.get("/stream", params={"size": str(300_000), "chunk": "1000"})
    assert answer.status == 200
    assert answer.headers["Content-Length"] == "300000"
    received = 0
    async for chunk in answer.content.iter_chunked(65536):
        received += len(chunk)
    assert received == 300_000


@pytest.mark.parametrize("size", ["-1", "abc", str(2**31)])
async def test_stream_refuses_bad_sizes(upstream: TestClient[Any, Any], size: str) -> None:
    assert (await upstream.get("/stream", params={"size": size})).status == 400


async def test_upload_counts_and_hashes_a_streamed_body(upstream: TestClient[Any, Any]) -> None:
    parts = [bytes([i]) * 100_000 for i in range(30)]  # 3 MB: over aiohttp's 1 MiB read() limit

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    answer = await upstream.post("/upload", data=body())
    assert answer.status == 200
    expected = hashlib.sha256(b"".join(parts)).hexdigest()
    assert await answer.json() == {"bytes": 3_000_000, "sha256": expected}


async def test_slow_answers_after_the_delay_and_times_out_a_hasty_client(
    upstream: TestClient[Any, Any],
) -> None:
    assert await (await upstream.get("/slow", params={"seconds": "0"})).json() == {"slept": 0.0}
    with pytest.raises(TimeoutError):
        await upstream.get("/slow", params={"seconds": "5"}, timeout=aiohttp.ClientTimeout(total=0.1))


async def test_set_cookie_sets_a_cookie(upstream: TestClient[Any, Any]) -> None:
    answer = await upstream.get("/set-cookie", params={"value": "v1"})
    assert answer.cookies["upstream_cookie"].value == "v1"
    assert "upstream_cookie=v1" in answer.headers["Set-Cookie"]


@pytest.mark.parametrize("code", [201, 204, 404, 502])
async def test_status_answers_with_the_asked_status(upstream: TestClient[Any, Any], code: int) -> None:
    assert (await upstream.delete(f"/status/{code}")).status == code
