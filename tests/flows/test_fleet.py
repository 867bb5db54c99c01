"""Workers and replicas behave as one sidecar: one token request per refresh, however the browser's
parallel requests are spread, and a login state used once anywhere is spent everywhere."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.flows.browser_support import parse_set_cookie, read_form
from tests.flows.conftest import PASSWORDS
from tests.flows.fleet_support import Fleet, FleetFactory, Replica
from tests.redis_server import RedisServer

PARALLEL = 20
REFRESHES = "token:refresh_token"
ROTATING = {"rotate_refresh_tokens": True}  # with reuse detection: a second use revokes the family


def session_cookie(fleet: Fleet, user: str = "alice") -> tuple[str, str, str]:
    """A logged-in browser's Cookie header, its CSRF token and its refresh token."""
    tokens = fleet.provider.issue_tokens(user)
    account = fleet.provider.user(user)
    assert account is not None
    xsrf = fleet.csrf_token(account.sub)
    cookie = (f"access_token={tokens['access_token']}; id_token={tokens['id_token']}; "
              f"refresh_token={tokens['refresh_token']}; XSRF-TOKEN={xsrf}")
    return cookie, xsrf, tokens["refresh_token"]


async def refresh_storm(fleet: Fleet) -> list[tuple[int, str | None]]:
    """PARALLEL refreshes of one session, each on its own connection, round-robin over replicas."""
    cookie, xsrf, _ = session_cookie(fleet)

    async def one(i: int) -> tuple[int, str | None]:
        replica = fleet.replicas[i % len(fleet.replicas)]
        connector = aiohttp.TCPConnector(force_close=True)
        headers = {"Cookie": cookie, "X-XSRF-TOKEN": xsrf, "Origin": replica.base}
        async with (aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as s,
                    s.post(replica.base + "/auth/refresh", headers=headers) as resp):
            await resp.read()
            rotated = [parse_set_cookie(h) for h in resp.headers.getall("Set-Cookie", [])]
            refresh = next((c.value for c in rotated if c.name == "refresh_token"), None)
            return resp.status, refresh

    return await asyncio.gather(*(one(i) for i in range(PARALLEL)))


def assert_one_refresh_nobody_logged_out(fleet: Fleet, answers: list[tuple[int, str | None]]) -> None:
    assert [status for status, _ in answers] == [200] * PARALLEL
    assert fleet.provider.calls[REFRESHES] == 1
    rotated = {refresh for _, refresh in answers}
    # Everybody got the same new refresh token, and it is still good (no reuse was detected).
    assert len(rotated) == 1
    (new,) = rotated
    assert new is not None
    assert fleet.provider.refresh_token_is_live(new)


async def test_twenty_parallel_refreshes_over_two_workers_make_one_token_request(
    make_fleet: FleetFactory,
) -> None:
    fleet = await make_fleet(workers=2, provider=ROTATING)
    assert_one_refresh_nobody_logged_out(fleet, await refresh_storm(fleet))


async def test_twenty_parallel_refreshes_over_two_replicas_of_two_workers_make_one_token_request(
    make_fleet: FleetFactory, redis_server: RedisServer,
) -> None:
    fleet = await make_fleet(replicas=2, workers=2, provider=ROTATING,
                             store={"backend": "redis", "redis": {"url": redis_server.url,
                                                                  "key_prefix": "fleet-storm:"}})
    assert_one_refresh_nobody_logged_out(fleet, await refresh_storm(fleet))


async def _login_until_callback(fleet: Fleet, start: Replica,
                                browser: aiohttp.ClientSession) -> str:
    """Begin a login on ``start`` and sign in at the provider: the callback URL (not yet followed)."""
    begin = await browser.get(start.base + "/auth/login", allow_redirects=False)
    assert begin.status == 302
    page = await browser.get(begin.headers["Location"], allow_redirects=False)
    assert page.status == 200
    action, fields = read_form(await page.text())
    fields.update(username="alice", password=PASSWORDS["alice"])
    posted = await browser.post(page.url.join(URL(action)), data=fields, allow_redirects=False)
    assert posted.status == 302
    return str(posted.headers["Location"])


def _on(replica: Replica, callback: str) -> URL:
    return URL(callback, encoded=True).with_port(replica.port)


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_login_begun_on_one_replica_finishes_on_another_and_its_replay_is_refused_everywhere(
    make_fleet: FleetFactory, redis_server: RedisServer, backend: str,
) -> None:
    fleet = await make_fleet(replicas=2, workers=1,
                             store={"backend": backend, "redis": {"url": redis_server.url,
                                                                  "key_prefix": "fleet-login:"}})
    a, b = fleet.replicas
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        callback = await _login_until_callback(fleet, a, browser)
        tx = {c.key: c.value for c in jar if c.key == "authsidecar_tx"}
        finished = await browser.get(_on(b, callback), allow_redirects=False)
        assert finished.status == 302
        set_names = {c.name for c in map(parse_set_cookie, finished.headers.getall("Set-Cookie"))}
        assert "access_token" in set_names
    # The same callback again, with the transaction cookie as it was, on the first replica.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as attacker:
        cookie = "; ".join(f"{k}={v}" for k, v in tx.items())
        replayed = await attacker.get(_on(a, callback), allow_redirects=False,
                                      headers={"Cookie": cookie, "Accept": "application/json"})
        body: dict[str, Any] = await replayed.json()
    assert replayed.status == 400
    assert body["reason"] == "replayed_callback"
