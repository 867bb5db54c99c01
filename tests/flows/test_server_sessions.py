"""Server sessions (``sessions.mode: server``): the browser holds one small opaque id, Redis the tokens."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.flows.browser_support import login_as, set_cookie_map
from tests.flows.conftest import Stack, StackFactory
from tests.redis_server import RedisServer, free_port, start_redis

# API Gateway (HTTP and REST APIs) refuses more than this many bytes of request line plus headers.
API_GATEWAY_HEAD_LIMIT = 10_240
PAST_EXPIRY = 3600 + 120
_prefixes = itertools.count()


def server_sessions(redis_url: str, prefix: str | None = None, cache_seconds: float = 5,
                    **redis: Any) -> dict[str, Any]:
    return {
        "store": {"backend": "redis",
                  "redis": {"url": redis_url, "key_prefix": prefix or f"flows{next(_prefixes)}:", **redis}},
        "sessions": {"mode": "server", "cache_seconds": cache_seconds},
        "cookies": {"refresh_token_path": "/"},
    }


async def logged_in(stack: Stack, user: str = "alice") -> aiohttp.ClientSession:
    browser = await stack.browser()
    login = await stack.login(browser, user)
    assert login.status == 302
    return browser


def head_bytes(method: str, url: str, headers: dict[str, str]) -> int:
    line = f"{method} {url} HTTP/1.1\r\n"
    return len(line) + sum(len(k) + 2 + len(v) + 2 for k, v in headers.items()) + 2


async def test_the_many_groups_user_sends_a_request_head_api_gateway_accepts(
    make_stack: StackFactory, redis_server: RedisServer,
) -> None:
    stack = await make_stack(**server_sessions(redis_server.url))
    browser = await logged_in(stack, "many-groups")
    cookie_header = "; ".join(f"{m.key}={m.value}" for m in browser.cookie_jar)
    # What a browser sends to the API: its cookies and the usual headers.
    headers = {"Host": "api.example.com", "Cookie": cookie_header, "Accept": "application/json",
               "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
               "Accept-Language": "en-GB,en;q=0.9", "Accept-Encoding": "gzip, deflate, br",
               "Referer": "https://app.example.com/dashboard", "Origin": "https://app.example.com"}
    assert head_bytes("GET", "/api/items?page=1", headers) < API_GATEWAY_HEAD_LIMIT
    # The sidecar's cookies are the session id and the CSRF token; no token cookie.
    sidecar_cookies = {m.key for m in browser.cookie_jar} - {"authsidecar_dev_idp"}
    assert sidecar_cookies == {"authsidecar_session", "XSRF-TOKEN"}
    answer = await browser.get(stack.url("/api/items"))
    assert answer.status == 200
    seen = (await answer.json())
    assert seen["identity"]["X-User-Name"] == "many-groups"
    assert len(seen["identity"]["X-User-Groups"].split(",")) >= 150
    # The session id is the sidecar's: the app never sees it.
    assert "authsidecar_session" not in seen["headers"].get("Cookie", "")


async def test_the_session_cookie_is_opaque_small_and_httponly(
    make_stack: StackFactory, redis_server: RedisServer,
) -> None:
    stack = await make_stack(**server_sessions(redis_server.url))
    browser = await stack.browser()
    login = await stack.login(browser)
    cookies = set_cookie_map(login)
    session = cookies["authsidecar_session"]
    assert session.has("httponly")
    assert len(session.name) + 1 + len(session.value) < 100
    assert "." not in session.value  # no JWS: nothing of the token in the cookie
    for name in ("access_token", "id_token", "refresh_token"):
        assert name not in cookies or cookies[name].clears


async def test_an_expired_access_token_is_refreshed_in_place_under_the_same_session_id(
    make_stack: StackFactory, redis_server: RedisServer,
) -> None:
    stack = await make_stack(**server_sessions(redis_server.url, cache_seconds=0))
    browser = await logged_in(stack)
    before = stack.cookie(browser, "authsidecar_session")
    stack.clock.advance(PAST_EXPIRY)
    answer = await browser.get(stack.url("/api/items"))
    assert answer.status == 200
    assert "authsidecar_session" not in set_cookie_map(answer)
    assert stack.cookie(browser, "authsidecar_session") == before
    assert stack.provider.calls["token:refresh_token"] == 1
    again = await browser.get(stack.url("/api/items"))
    assert again.status == 200
    assert stack.provider.calls["token:refresh_token"] == 1


async def test_logout_deletes_the_session_and_a_copied_id_is_refused_after_it(
    make_stack: StackFactory, redis_server: RedisServer,
) -> None:
    stack = await make_stack(**server_sessions(redis_server.url))
    browser = await logged_in(stack)
    copied = stack.cookie(browser, "authsidecar_session")
    out = await browser.get(stack.url("/auth/logout"), allow_redirects=False,
                            headers={"Sec-Fetch-Site": "same-origin", "Referer": stack.url("/")})
    assert out.status == 302
    assert set_cookie_map(out)["authsidecar_session"].clears
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as thief:
        replay = await thief.get(stack.url("/api/items"), headers={"Cookie": f"authsidecar_session={copied}"})
        assert replay.status == 401


async def test_a_login_never_keeps_a_session_id_the_browser_brought(
    make_stack: StackFactory, redis_server: RedisServer,
) -> None:
    stack = await make_stack(**server_sessions(redis_server.url))
    browser = await logged_in(stack)
    first = stack.cookie(browser, "authsidecar_session")
    again = await login_as(stack, browser, "alice", at_provider=await stack.browser())
    assert again.status == 302
    second = stack.cookie(browser, "authsidecar_session")
    assert second != first
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as old:
        assert (await old.get(stack.url("/api/items"),
                              headers={"Cookie": f"authsidecar_session={first}"})).status == 401


@pytest.mark.parametrize(
    "session_id",
    ["A" * 43, "A" * 42, "A" * 44, "A" * 42 + "=", "../../etc/passwd" + "A" * 27, "\udcff" * 43, ""],
    ids=["unknown", "truncated", "too-long", "padding", "path-like", "undecodable", "empty"],
)
async def test_a_forged_truncated_or_unknown_session_id_is_401_never_500(
    make_stack: StackFactory, redis_server: RedisServer, session_id: str,
) -> None:
    stack = await make_stack(**server_sessions(redis_server.url))
    raw = f"authsidecar_session={session_id}".encode("utf-8", "surrogateescape").decode("latin-1")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        api = await client.get(stack.url("/api/items"), headers={"Cookie": raw})
        assert api.status == 401
        # A well-formed id Redis does not know is no session; anything else is refused as malformed.
        assert (await api.json())["reason"] == ("missing" if session_id in ("A" * 43, "") else "malformed")
        page = await client.get(stack.url("/page"), allow_redirects=False,
                                headers={"Cookie": raw, "Sec-Fetch-Mode": "navigate"})
        assert page.status == 302
        assert page.headers["Location"].startswith("/auth/login")


async def test_a_session_of_another_deployment_prefix_is_unknown(
    make_stack: StackFactory, redis_server: RedisServer,
) -> None:
    ours = await make_stack(**server_sessions(redis_server.url, "deployment-a:"))
    browser = await logged_in(ours)
    sid = ours.cookie(browser, "authsidecar_session")
    theirs = await make_stack(**server_sessions(redis_server.url, "deployment-b:"))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        answer = await client.get(theirs.url("/api/items"), headers={"Cookie": f"authsidecar_session={sid}"})
        assert answer.status == 401


async def test_redis_down_a_session_not_in_memory_is_503_and_survives_until_redis_is_back(
    make_stack: StackFactory, tmp_path: Path,
) -> None:
    port = free_port()
    redis = start_redis(tmp_path, port)
    try:
        stack = await make_stack(**server_sessions(f"redis://127.0.0.1:{port}/0", cache_seconds=0,
                                                   connect_timeout=0.3, command_timeout=0.3))
        browser = await logged_in(stack)
        # Redis stops answering (frozen, its data kept, as a partitioned or overloaded server).
        os.kill(redis.process.pid, signal.SIGSTOP)
        answer = await browser.get(stack.url("/api/items"))
        assert answer.status == 503
        assert (await answer.json())["error"] == "session_store_unavailable"
        page = await browser.get(stack.url("/page"), allow_redirects=False,
                                 headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"})
        assert page.status == 503  # not a login redirect
        assert not any(c.clears for c in set_cookie_map(answer).values())
        os.kill(redis.process.pid, signal.SIGCONT)
        assert (await browser.get(stack.url("/api/items"))).status == 200
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
        redis.stop()


async def test_in_cookie_mode_a_login_over_the_header_budget_is_logged_once_and_measured(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    await logged_in(stack, "alice")
    await logged_in(stack, "many-groups")
    warnings = [line for line in stack.log_lines() if line.get("event") == "session_cookies_large"]
    assert len(warnings) == 1
    assert warnings[0]["bytes"] > warnings[0]["limit"] == 8192
    assert "sessions.mode: server" in warnings[0]["detail"]
    assert stack.metric("authsidecar_session_cookie_bytes_count") == 2
    assert stack.metric("authsidecar_session_cookie_bytes_bucket", le="8192.0") == 1
