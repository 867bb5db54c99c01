"""Server sessions (``sessions.mode: server``): a revocation deletes the sessions it names in Redis,
not only refuses their tokens."""

from __future__ import annotations

import dataclasses
import hashlib

import aiohttp
import redis.asyncio as aioredis

from tests.flows.conftest import Stack, StackFactory
from tests.flows.test_admin_revoke import ADMIN_TOKEN, admin_headers
from tests.flows.test_server_sessions import logged_in, server_sessions
from tests.redis_server import RedisServer

JSON = {"Accept": "application/json"}


async def stack_with(make_stack: StackFactory, redis_server: RedisServer, prefix: str) -> Stack:
    return await make_stack(**server_sessions(redis_server.url, prefix=prefix),
                            admin={"revoke_token": ADMIN_TOKEN}, logout={"backchannel": True})


async def session_in_redis(redis_server: RedisServer, prefix: str, browser: aiohttp.ClientSession) -> bool:
    (session_id,) = [m.value for m in browser.cookie_jar if m.key == "authsidecar_session"]
    key = prefix + "session:" + hashlib.sha256(session_id.encode()).hexdigest()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()


async def me(stack: Stack, browser: aiohttp.ClientSession) -> aiohttp.ClientResponse:
    return await browser.get(stack.url("/auth/me"), headers=JSON)


async def test_revoking_a_sub_deletes_every_server_session_of_that_user(
    make_stack: StackFactory, redis_server: RedisServer, client: aiohttp.ClientSession,
) -> None:
    prefix = "revoke-sub:"
    stack = await stack_with(make_stack, redis_server, prefix)
    alice = [await logged_in(stack, "alice") for _ in range(2)]
    bob = await logged_in(stack, "bob")
    sub = stack.provider.user("alice").sub  # type: ignore[union-attr]

    answer = await client.post(stack.admin + "/admin/revoke", json={"sub": sub}, headers=admin_headers())

    assert answer.status == 200
    assert (await answer.json())["sessions"] == 2
    for browser in alice:
        assert not await session_in_redis(redis_server, prefix, browser)
        refused = await me(stack, browser)
        assert refused.status == 401
        # No session at all any more (not merely a refused token).
        assert (await refused.json())["reason"] == "missing"
    assert await session_in_redis(redis_server, prefix, bob)
    assert (await me(stack, bob)).status == 200


async def test_a_back_channel_logout_deletes_the_server_session_it_names(
    make_stack: StackFactory, redis_server: RedisServer,
) -> None:
    prefix = "revoke-sid:"
    stack = await stack_with(make_stack, redis_server, prefix)
    stack.provider.config = dataclasses.replace(
        stack.provider.config, backchannel_logout_uris=(stack.url("/auth/backchannel-logout"),))
    ended, kept = await logged_in(stack), await logged_in(stack)
    (sid,) = [s.sid for s in stack.provider.ledger.sessions.values()][:1]

    assert await stack.provider.backchannel_logout(sid=sid) == [200]

    assert not await session_in_redis(redis_server, prefix, ended)
    assert (await me(stack, ended)).status == 401
    assert await session_in_redis(redis_server, prefix, kept)
    assert (await me(stack, kept)).status == 200
