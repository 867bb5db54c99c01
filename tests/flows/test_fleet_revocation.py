"""A logout on one process is refused by every other within a second: the other worker of one
host (the supervisor's host store) and the processes of another replica (Redis)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.flows.fleet_support import Fleet, FleetFactory
from tests.redis_server import RedisServer

# Fresh connections per round: the kernel spreads them over the workers sharing the port.
CONNECTIONS = 12
JSON = {"Accept": "application/json"}


def session_headers(fleet: Fleet, user: str = "alice") -> tuple[dict[str, str], str]:
    """A logged-in browser's Cookie header and its access token."""
    tokens = fleet.provider.issue_tokens(user)
    account = fleet.provider.user(user)
    assert account is not None
    cookie = (f"access_token={tokens['access_token']}; id_token={tokens['id_token']}; "
              f"refresh_token={tokens['refresh_token']}; XSRF-TOKEN={fleet.csrf_token(account.sub)}")
    return {"Cookie": cookie, **JSON}, tokens["access_token"]


async def statuses(base: str, headers: dict[str, str]) -> list[int]:
    async def one() -> int:
        connector = aiohttp.TCPConnector(force_close=True)
        async with (aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as s,
                    s.get(base + "/dashboard", headers=headers) as resp):
            return resp.status

    return list(await asyncio.gather(*(one() for _ in range(CONNECTIONS))))


async def refused_within(deadline: float, checks: list[tuple[str, dict[str, str]]]) -> float:
    """Seconds until every check answers 401 on every connection (fails after ``deadline``)."""
    started = time.monotonic()
    while True:
        rounds = [await statuses(base, headers) for base, headers in checks]
        if all(status == 401 for got in rounds for status in got):
            return time.monotonic() - started
        assert time.monotonic() - started < deadline, rounds
        await asyncio.sleep(0.02)


async def logout(base: str, headers: dict[str, str]) -> None:
    async with (aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s,
                s.get(base + "/auth/logout", allow_redirects=False,
                      headers={**headers, "Sec-Fetch-Site": "same-origin", "Referer": base + "/"}) as resp):
        assert resp.status == 302


async def assert_logout_refused_everywhere(fleet: Fleet) -> None:
    cookie, access = session_headers(fleet)
    bearer = {"Authorization": f"Bearer {access}", **JSON}
    checks = [(replica.base, headers) for replica in fleet.replicas for headers in (cookie, bearer)]
    for base, headers in checks:
        assert await statuses(base, headers) == [200] * CONNECTIONS
    await logout(fleet.replicas[0].base, cookie)
    await refused_within(1.0, checks)
    # Refused while the token itself is still good at the provider (its exp has not come).
    claims = fleet.provider.keys.verify(access)
    assert claims is not None
    assert claims["exp"] > time.time()


async def test_a_logout_on_one_worker_is_refused_by_every_worker_of_the_host_within_a_second(
    make_fleet: FleetFactory,
) -> None:
    await assert_logout_refused_everywhere(await make_fleet(workers=2))


async def test_a_logout_on_one_replica_is_refused_by_every_replica_within_a_second(
    make_fleet: FleetFactory, redis_server: RedisServer,
) -> None:
    fleet = await make_fleet(replicas=2, workers=2,
                             store={"backend": "redis", "redis": {"url": redis_server.url,
                                                                  "key_prefix": "fleet-revoke:"}})
    await assert_logout_refused_everywhere(fleet)
