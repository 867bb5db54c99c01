"""Graceful shutdown: open WebSockets get the grace period, then a 1001 close."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.flows.conftest import Stack, StackFactory


async def open_websocket(stack: Stack) -> aiohttp.ClientWebSocketResponse:
    """A websocket through the sidecar to the echo app, authenticated by bearer token."""
    token = stack.provider.mint_access_token("alice")
    browser = await stack.browser()
    return await browser.ws_connect(stack.url("/ws").replace("http", "ws"),
                                    headers={"Authorization": f"Bearer {token}"})


async def test_an_open_websocket_keeps_working_during_shutdown_until_it_ends_itself(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(listen={"shutdown_grace": 30})
    ws = await open_websocket(stack)
    assert stack.sidecar is not None
    stopping = asyncio.ensure_future(stack.sidecar.stop())
    # Wait until the shutdown began (readiness turns false), not for a fixed time.
    while not stack.health.closing:
        await asyncio.sleep(0)
    await ws.send_str("still here")
    assert (await ws.receive(timeout=5)).data == "still here"
    assert not stopping.done()
    await ws.close()
    await asyncio.wait_for(stopping, timeout=10)


async def test_a_websocket_still_open_after_the_grace_period_is_closed_with_1001(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(listen={"shutdown_grace": 0.3})
    ws = await open_websocket(stack)
    assert stack.sidecar is not None
    stopping = asyncio.ensure_future(stack.sidecar.stop())
    message = await ws.receive(timeout=10)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert ws.close_code == 1001
    await asyncio.wait_for(stopping, timeout=10)
