"""A slow Redis is not a lost one: replicas never refresh alone on a timeout, nobody is logged out.

Redis is made slow for real (SIGSTOP to the test's own redis-server: connections stay open, every
command times out) under two replicas and a provider that rotates refresh tokens with reuse
detection, where a second use of one refresh token ends the whole sign-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.flows.browser_support import SetCookie, parse_set_cookie
from tests.flows.fleet_support import Fleet, FleetFactory, Replica
from tests.flows.test_fleet import REFRESHES, ROTATING, session_cookie
from tests.redis_server import RedisServer, free_port, start_redis

TIMEOUT = 0.2  # store.redis.command_timeout: a replica waits three of them, then answers 503


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: pausing the session-wide one would stall other tests."""
    server = start_redis(tmp_path, free_port())
    try:
        yield server
    finally:
        server.stop()


async def slow_fleet(make_fleet: FleetFactory, redis: RedisServer) -> Fleet:
    return await make_fleet(replicas=2, workers=1, provider=ROTATING, store={
        "backend": "redis", "redis": {"url": redis.url, "key_prefix": "slow:",
                                      "connect_timeout": TIMEOUT, "command_timeout": TIMEOUT}})


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    retry_after: str | None
    set_cookies: list[SetCookie]

    @property
    def rotated(self) -> str | None:
        return next((c.value for c in self.set_cookies if c.name == "refresh_token"), None)


async def refresh(replica: Replica, cookie: str, xsrf: str) -> Answer:
    """One browser request whose access token has expired (the SPA asks for new tokens)."""
    headers = {"Cookie": cookie, "X-XSRF-TOKEN": xsrf, "Origin": replica.base}
    async with (aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                      timeout=aiohttp.ClientTimeout(total=4)) as client,
                client.post(replica.base + "/auth/refresh", headers=headers) as resp):
        return Answer(resp.status, await resp.json(), resp.headers.get("Retry-After"),
                      [parse_set_cookie(h) for h in resp.headers.getall("Set-Cookie", [])])


def assert_deferred(answer: Answer) -> None:
    """A 503 to retry shortly, no cookie touched (nothing set, nothing cleared)."""
    assert (answer.status, answer.retry_after) == (503, "1")
    assert answer.body["error"] == "session_store_unavailable"
    assert answer.set_cookies == []


async def test_two_replicas_on_a_stalled_redis_answer_503_with_cookies_intact_then_refresh_once(
    make_fleet: FleetFactory, own_redis: RedisServer,
) -> None:
    fleet = await slow_fleet(make_fleet, own_redis)
    cookie, xsrf, old = session_cookie(fleet)
    with own_redis.paused():
        stalled = await asyncio.gather(*(refresh(fleet.replicas[i % 2], cookie, xsrf) for i in range(6)))
    for answer in stalled:
        assert_deferred(answer)
    assert fleet.provider.calls[REFRESHES] == 0
    assert fleet.provider.refresh_token_is_live(old)
    # Redis answers again: the same requests, retried, make one token request between them.
    retried = await asyncio.gather(*(refresh(fleet.replicas[i % 2], cookie, xsrf) for i in range(6)))
    assert [answer.status for answer in retried] == [200] * 6
    assert fleet.provider.calls[REFRESHES] == 1
    (new,) = {answer.rotated for answer in retried}
    assert new is not None
    assert fleet.provider.refresh_token_is_live(new)  # no reuse was detected


async def test_redis_stalling_while_one_replica_refreshes_makes_the_other_wait_not_refresh_again(
    make_fleet: FleetFactory, own_redis: RedisServer,
) -> None:
    fleet = await slow_fleet(make_fleet, own_redis)
    a, b = fleet.replicas
    cookie, xsrf, _ = session_cookie(fleet)
    fleet.provider.set_failure("token", "timeout")  # a's token request is held at the provider
    leading = asyncio.create_task(refresh(a, cookie, xsrf))
    await fleet.provider.wait_hanging("token")
    with own_redis.paused():
        assert_deferred(await refresh(b, cookie, xsrf))
    fleet.provider.set_failure("token", "ok")
    led = await leading
    assert led.status == 200
    # b's retry takes a's tokens: one token request, the rotated token still good.
    joined = await refresh(b, cookie, xsrf)
    assert joined.status == 200
    assert joined.rotated == led.rotated
    assert led.rotated is not None
    assert fleet.provider.calls[REFRESHES] == 1
    assert fleet.provider.refresh_token_is_live(led.rotated)
