"""POST /auth/refresh: CSRF and Origin first, then one token request, new cookies or a cleared session."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import pytest

from tests.flows.browser_support import (
    APP_ORIGIN,
    AUTH_COOKIES,
    EVIL_ORIGIN,
    csrf_headers,
    jar_cookies,
    new_browser,
    plant_cookie,
    revoke_at_provider,
    set_cookie_map,
)
from tests.flows.conftest import Stack, StackFactory

REFRESHES = "token:refresh_token"


async def _logged_in(stack: Stack, user: str = "alice") -> aiohttp.ClientSession:
    browser = await new_browser(stack)
    answer = await stack.login(browser, user)
    assert answer.status == 302
    return browser


async def test_a_refresh_with_csrf_token_and_origin_sets_a_new_access_token(stack: Stack) -> None:
    browser = await _logged_in(stack)
    old_access = stack.cookie(browser, "access_token")
    old_xsrf = stack.cookie(browser, "XSRF-TOKEN")

    answer = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))

    assert answer.status == 200
    body = await answer.json()
    assert body["username"] == "alice"
    assert set(body) == {"sub", "username", "email", "groups", "scopes", "expires_at"}
    cookies = set_cookie_map(answer)
    assert cookies["access_token"].value not in ("", old_access)
    assert cookies["access_token"].has("httponly")
    assert cookies["id_token"].value
    # Without rotation the refresh token stays; the CSRF token the SPA holds stays valid.
    assert "refresh_token" not in cookies
    assert "XSRF-TOKEN" not in cookies
    assert stack.cookie(browser, "XSRF-TOKEN") == old_xsrf
    assert stack.provider.calls[REFRESHES] == 1
    assert stack.metric("authsidecar_flow_events_total", event="refresh", outcome="ok") == 1


async def test_a_refresh_from_an_allowed_cors_origin_passes(make_stack: StackFactory) -> None:
    stack = await make_stack(cors={"allowed_origins": [APP_ORIGIN]})
    browser = await _logged_in(stack)
    headers = csrf_headers(stack, browser, origin=APP_ORIGIN)
    answer = await browser.post(stack.url("/auth/refresh"), headers=headers)
    assert answer.status == 200


async def _bobs_csrf_token(stack: Stack) -> str:
    bob = await _logged_in(stack, "bob")
    token = stack.cookie(bob, "XSRF-TOKEN")
    assert token is not None
    return token


def _random_token() -> str:
    return f"{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("missing-header", "missing_header", id="missing-header"),
        pytest.param("header-differs", "mismatch", id="header-differs-from-cookie"),
        pytest.param("cookie-missing", "missing_cookie", id="cookie-missing"),
        pytest.param("planted-for-another-user", "bad_signature", id="planted-token-of-another-user"),
        pytest.param("planted-random", "bad_signature", id="planted-random-token"),
        pytest.param("foreign-origin", "origin", id="foreign-origin-with-a-valid-token"),
        pytest.param("null-origin", "origin", id="null-origin"),
        pytest.param("foreign-referer", "origin", id="foreign-referer-without-origin"),
        pytest.param("cross-site-fetch", "origin", id="sec-fetch-site-cross-site-without-origin"),
    ],
)
async def test_a_refresh_failing_the_csrf_checks_is_403_and_never_reaches_the_provider(
    stack: Stack, case: str, reason: str
) -> None:
    browser = await _logged_in(stack)
    headers = csrf_headers(stack, browser)
    if case == "missing-header":
        del headers["X-XSRF-TOKEN"]
    elif case == "header-differs":
        headers["X-XSRF-TOKEN"] = _random_token()
    elif case == "cookie-missing":
        browser.cookie_jar.clear(lambda morsel: morsel.key == "XSRF-TOKEN")
    elif case in ("planted-for-another-user", "planted-random"):
        planted = await _bobs_csrf_token(stack) if case == "planted-for-another-user" else _random_token()
        plant_cookie(stack, browser, "XSRF-TOKEN", planted)
        headers["X-XSRF-TOKEN"] = planted
    elif case == "foreign-origin":
        headers["Origin"] = EVIL_ORIGIN
    elif case == "null-origin":
        headers["Origin"] = "null"
    elif case == "foreign-referer":
        del headers["Origin"]
        headers["Referer"] = EVIL_ORIGIN + "/page"
    elif case == "cross-site-fetch":
        del headers["Origin"]
        headers["Sec-Fetch-Site"] = "cross-site"
    refreshes_before = stack.provider.calls[REFRESHES]

    answer = await browser.post(stack.url("/auth/refresh"), headers=headers)

    assert answer.status == 403
    assert await answer.json() == {"error": "csrf_failed", "reason": reason}
    assert stack.provider.calls[REFRESHES] == refreshes_before
    assert not set_cookie_map(answer)
    assert stack.metric("authsidecar_csrf_rejections_total", reason=reason) == 1


async def test_a_refresh_without_a_session_is_401(stack: Stack) -> None:
    browser = await new_browser(stack)
    answer = await browser.post(stack.url("/auth/refresh"), headers={"Origin": stack.base})
    assert answer.status == 401
    assert (await answer.json())["reason"] == "missing"
    assert stack.provider.calls[REFRESHES] == 0


async def test_a_refresh_works_after_the_browser_dropped_the_expired_access_token(stack: Stack) -> None:
    browser = await _logged_in(stack)
    stack.clock.advance(3600 + 120)

    answer = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))

    sent = answer.request_info.headers["Cookie"]
    assert "access_token=" not in sent
    assert "refresh_token=" in sent
    assert answer.status == 200, await answer.text()
    assert set_cookie_map(answer)["access_token"].value
    me = await browser.get(stack.url("/auth/me"))
    assert me.status == 200


async def test_with_rotation_the_new_refresh_token_is_set_and_the_old_one_is_dead(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(provider_config={"rotate_refresh_tokens": True})
    browser = await _logged_in(stack)
    old_refresh = stack.cookie(browser, "refresh_token")
    assert old_refresh is not None

    answer = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))

    assert answer.status == 200
    new_refresh = set_cookie_map(answer)["refresh_token"]
    assert new_refresh.value not in ("", old_refresh)
    assert new_refresh.get("path") == "/auth"
    assert new_refresh.has("httponly")
    assert not stack.provider.refresh_token_is_live(old_refresh)
    assert stack.provider.refresh_token_is_live(new_refresh.value)
    assert stack.cookie(browser, "refresh_token") == new_refresh.value
    stack.clock.advance(60)  # past the single-flight's memory of the first refresh
    again = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))
    assert again.status == 200
    assert stack.provider.calls[REFRESHES] == 2


async def test_a_refused_refresh_token_ends_the_session_and_clears_every_auth_cookie(stack: Stack) -> None:
    browser = await _logged_in(stack)
    refresh_token = stack.cookie(browser, "refresh_token")
    assert refresh_token is not None
    await revoke_at_provider(stack, refresh_token)

    answer = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))

    assert answer.status == 401
    assert (await answer.json())["reason"] == "invalid_grant"
    cleared = set_cookie_map(answer)
    for name in AUTH_COOKIES:
        assert cleared[name].clears, name
    assert cleared["refresh_token"].get("path") == "/auth"
    assert cleared["access_token"].get("path") == "/"
    assert not set(jar_cookies(browser)) & set(AUTH_COOKIES)
    assert stack.metric("authsidecar_flow_events_total", event="refresh", outcome="invalid_grant") == 1


async def test_a_failing_token_endpoint_keeps_the_session(stack: Stack) -> None:
    browser = await _logged_in(stack)
    stack.provider.set_failure("token", "500")

    answer = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))

    assert answer.status == 502
    assert not set_cookie_map(answer)
    assert stack.cookie(browser, "refresh_token") is not None


async def test_twenty_parallel_refreshes_share_one_token_request_and_one_new_access_token(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(provider_config={"rotate_refresh_tokens": True})
    browser = await _logged_in(stack)
    headers = csrf_headers(stack, browser)
    # Hold the token endpoint until the first refresh is waiting on it, so the others arrive while
    # it is in flight.
    stack.provider.set_failure("token", "timeout")
    requests = [asyncio.ensure_future(browser.post(stack.url("/auth/refresh"), headers=headers))
                for _ in range(20)]
    await stack.provider.wait_hanging("token")
    stack.provider.set_failure("token", "ok")
    answers = await asyncio.gather(*requests)

    assert [a.status for a in answers] == [200] * 20
    assert stack.provider.calls[REFRESHES] == 1
    access_tokens = {set_cookie_map(a)["access_token"].value for a in answers}
    refresh_tokens = {set_cookie_map(a)["refresh_token"].value for a in answers}
    assert len(access_tokens) == 1
    assert len(refresh_tokens) == 1
    assert stack.provider.refresh_token_is_live(refresh_tokens.pop())
