"""WebSocket relaying over real loopback connections: client ⇄ test proxy ⇄ upstream echo."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.proxy.conftest import ALICE, MakeProxy, Upstream

TIMEOUT = 5


async def test_text_and_binary_are_echoed_both_ways(make_proxy: MakeProxy, upstream: Upstream) -> None:
    proxy = await make_proxy()
    async with asyncio.timeout(TIMEOUT):
        async with proxy.client.ws_connect("/ws/echo") as ws:
            await ws.send_str("hello")
            assert await ws.receive_str() == "echo:hello"
            await ws.send_bytes(b"\x00\xffbin")
            assert await ws.receive_bytes() == b"echo:\x00\xffbin"
            big = "x" * 200_000
            await ws.send_str(big)
            assert await ws.receive_str() == "echo:" + big


async def test_the_subprotocol_the_app_picks_is_the_one_the_client_gets(
    make_proxy: MakeProxy, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy()
    async with proxy.client.ws_connect("/ws/echo", protocols=("v1", "v2")) as ws:
        assert ws.protocol == "v2"  # the app knows v2 and v3 only
    assert upstream.last.all("Sec-WebSocket-Protocol") == ["v1,v2"]
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")]


async def test_no_subprotocol_when_none_was_offered(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    async with proxy.client.ws_connect("/ws/echo") as ws:
        assert ws.protocol is None


async def test_the_handshake_carries_identity_headers(make_proxy: MakeProxy, upstream: Upstream) -> None:
    proxy = await make_proxy(identity=ALICE)
    async with proxy.client.ws_connect("/ws/echo", headers={"X-User-Id": "spoofed"}) as ws:
        await ws.send_str("x")
        await ws.receive_str()
    assert upstream.last.all("X-User-Id") == ["user-123"]
    assert upstream.last.all("X-Request-Id") == ["req-1"]


async def test_an_app_close_code_reaches_the_client(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    async with asyncio.timeout(TIMEOUT):
        async with proxy.client.ws_connect("/ws/echo") as ws:
            await ws.send_str("close:4000")
            msg = await ws.receive()
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == 4000
            assert msg.extra == "bye"


async def test_a_client_close_code_reaches_the_app_and_is_echoed(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    async with asyncio.timeout(TIMEOUT):
        ws = await proxy.client.ws_connect("/ws/echo")
        await ws.send_str("ping")
        assert await ws.receive_str() == "echo:ping"
        await ws.close(code=4001, message=b"done")
        await upstream.events["ws_closed"].wait()
    assert upstream.ws_close_codes == [4001]
    assert ws.close_code == 4001


async def test_an_app_refusing_the_upgrade_is_a_502_before_any_handshake(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await proxy.client.ws_connect("/ws/refuse")
    assert caught.value.status == 502
    assert upstream.last.raw_path == "/ws/refuse"


async def test_an_unreachable_app_is_a_502(make_proxy: MakeProxy, closed_port: int) -> None:
    proxy = await make_proxy(upstream_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await proxy.client.ws_connect("/ws/echo")
    assert caught.value.status == 502


async def test_shutdown_closes_open_websockets_with_going_away(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    proxy = await make_proxy()
    async with asyncio.timeout(TIMEOUT):
        async with proxy.client.ws_connect("/ws/echo") as ws:
            await ws.send_str("hi")
            await ws.receive_str()
            closing = asyncio.create_task(proxy.forwarder.close_websockets())
            msg = await ws.receive()
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == 1001
            await ws.close()
            await closing
        await upstream.events["ws_closed"].wait()
    assert upstream.ws_close_codes == [1001]


async def test_a_client_vanishing_closes_the_app_side(make_proxy: MakeProxy, upstream: Upstream) -> None:
    proxy = await make_proxy()
    async with asyncio.timeout(TIMEOUT):
        ws = await proxy.client.ws_connect("/ws/echo")
        await ws.send_str("hi")
        await ws.receive_str()
        ws._response.connection.transport.abort()  # type: ignore[union-attr]  # no close frame
        await upstream.events["ws_closed"].wait()
    assert upstream.ws_close_codes == [1001]
