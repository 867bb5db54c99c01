"""An expired access token is renewed on the way through, once, and the new cookies ride on the answer."""

from __future__ import annotations

import asyncio

import aiohttp
from yarl import URL

from tests.flows.browser_support import (
    AUTH_COOKIES,
    csrf_headers,
    jar_cookies,
    new_browser,
    revoke_at_provider,
    set_cookie_map,
)
from tests.flows.conftest import Stack, StackFactory

REFRESHES = "token:refresh_token"
PAST_EXPIRY = 3600 + 120  # the access token's lifetime plus more than the validator's leeway


async def _everywhere(make_stack: StackFactory, **overrides: object) -> Stack:
    return await make_stack(cookies={"refresh_token_path": "/"}, **overrides)


async def _logged_in(stack: Stack, *, keep_expired_cookies: bool = False) -> aiohttp.ClientSession:
    # A browser on the fake clock drops the access token cookie with its token; aiohttp's own jar
    # keeps it (its clock is the real one), which plays a browser holding an expired token.
    browser = await stack.browser() if keep_expired_cookies else await new_browser(stack)
    assert (await stack.login(browser, "alice")).status == 302
    return browser


async def test_a_proxied_request_with_an_expired_access_token_is_refreshed_once_and_reaches_the_app(
    make_stack: StackFactory,
) -> None:
    stack = await _everywhere(make_stack)
    browser = await _logged_in(stack, keep_expired_cookies=True)
    old_access = stack.cookie(browser, "access_token")
    stack.clock.advance(PAST_EXPIRY)

    answer = await browser.get(stack.url("/api/items"))

    assert answer.status == 200
    identity = (await answer.json())["identity"]
    alice = stack.provider.user("alice")
    assert alice is not None
    assert identity["X-User-Id"] == alice.sub
    assert identity["X-User-Email"] == "alice@example.com"
    cookies = set_cookie_map(answer)
    assert cookies["access_token"].value not in ("", old_access)
    assert cookies["access_token"].has("httponly")
    assert stack.provider.calls[REFRESHES] == 1
    assert stack.metric("authsidecar_auth_decisions_total", outcome="refreshed") == 1

    again = await browser.get(stack.url("/api/items"))
    assert again.status == 200
    assert not set_cookie_map(again)
    assert stack.provider.calls[REFRESHES] == 1


async def test_a_browser_that_dropped_the_expired_cookie_is_refreshed_too(make_stack: StackFactory) -> None:
    stack = await _everywhere(make_stack)
    browser = await _logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)

    answer = await browser.get(stack.url("/api/items"))

    assert "access_token=" not in answer.request_info.headers["Cookie"]
    assert answer.status == 200
    assert set_cookie_map(answer)["access_token"].value
    assert stack.provider.calls[REFRESHES] == 1


async def test_a_streamed_answer_carries_the_refreshed_cookies(make_stack: StackFactory) -> None:
    stack = await _everywhere(make_stack)
    browser = await _logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)

    answer = await browser.get(stack.url("/stream"), params={"size": str(300_000), "chunk": "4096"})

    assert answer.status == 200
    assert len(await answer.read()) == 300_000
    assert set_cookie_map(answer)["access_token"].value


async def test_an_unsafe_request_with_an_expired_token_is_refreshed_and_still_needs_csrf(
    make_stack: StackFactory,
) -> None:
    stack = await _everywhere(make_stack)
    browser = await _logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)

    refused = await browser.post(stack.url("/api/items"), json={})
    assert refused.status == 403
    # The refresh already happened: its cookies are saved even on the refusal (a rotated refresh
    # token would otherwise be lost).
    assert set_cookie_map(refused)["access_token"].value
    accepted = await browser.post(stack.url("/api/items"), json={}, headers=csrf_headers(stack, browser))
    assert accepted.status == 200
    assert stack.upstream_stats.by_path["/api/items"] == 1


async def test_concurrent_requests_with_an_expired_token_share_one_refresh(make_stack: StackFactory) -> None:
    stack = await _everywhere(make_stack)
    browser = await _logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)
    stack.provider.set_failure("token", "timeout")
    requests = [asyncio.ensure_future(browser.get(stack.url(f"/api/items/{i}"))) for i in range(10)]
    await stack.provider.wait_hanging("token")
    stack.provider.set_failure("token", "ok")
    answers = await asyncio.gather(*requests)

    assert [a.status for a in answers] == [200] * 10
    assert stack.provider.calls[REFRESHES] == 1
    assert len({set_cookie_map(a)["access_token"].value for a in answers}) == 1


async def _revoked(stack: Stack) -> aiohttp.ClientSession:
    browser = await _logged_in(stack)
    refresh_token = stack.cookie(browser, "refresh_token")
    assert refresh_token is not None
    await revoke_at_provider(stack, refresh_token)
    stack.clock.advance(PAST_EXPIRY)
    return browser


def _all_auth_cookies_cleared(answer: aiohttp.ClientResponse, browser: aiohttp.ClientSession) -> None:
    cleared = set_cookie_map(answer)
    for name in AUTH_COOKIES:
        assert cleared[name].clears, name
    assert not set(jar_cookies(browser)) & set(AUTH_COOKIES)


async def test_a_refused_refresh_on_an_api_call_is_401_and_clears_the_session(
    make_stack: StackFactory,
) -> None:
    stack = await _everywhere(make_stack)
    browser = await _revoked(stack)

    answer = await browser.get(stack.url("/api/items"), headers={"Accept": "application/json"})

    assert answer.status == 401
    assert (await answer.json())["reason"] == "invalid_grant"
    _all_auth_cookies_cleared(answer, browser)
    assert stack.upstream_stats.by_path["/api/items"] == 0


async def test_a_refused_refresh_on_a_navigation_sends_the_browser_to_log_in(
    make_stack: StackFactory,
) -> None:
    stack = await _everywhere(make_stack)
    browser = await _revoked(stack)

    answer = await browser.get(stack.url("/orders/7?tab=2"), allow_redirects=False,
                               headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"})

    assert answer.status == 302
    location = URL(answer.headers["Location"])
    assert location.path == "/auth/login"
    assert location.query["return_to"] == stack.url("/orders/7?tab=2")
    _all_auth_cookies_cleared(answer, browser)


async def test_a_provider_outage_during_a_transparent_refresh_keeps_the_session(
    make_stack: StackFactory,
) -> None:
    stack = await _everywhere(make_stack)
    browser = await _logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)
    stack.provider.set_failure("token", "500")

    answer = await browser.get(stack.url("/api/items"))

    assert answer.status == 502
    assert not set_cookie_map(answer)
    assert stack.cookie(browser, "refresh_token") is not None


# -- the default: the refresh token only travels to /auth -------------------------------------------


async def test_by_default_a_proxied_request_never_sees_the_refresh_token_and_gets_401(stack: Stack) -> None:
    browser = await _logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)

    answer = await browser.get(stack.url("/api/items"))

    assert "refresh_token" not in answer.request_info.headers.get("Cookie", "")
    assert answer.status == 401
    assert stack.provider.calls[REFRESHES] == 0


async def test_by_default_auth_me_refreshes_transparently(stack: Stack) -> None:
    browser = await _logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)

    me = await browser.get(stack.url("/auth/me"))

    assert me.status == 200
    assert (await me.json())["username"] == "alice"
    assert set_cookie_map(me)["access_token"].value
    assert stack.provider.calls[REFRESHES] == 1
    api = await browser.get(stack.url("/api/items"))
    assert api.status == 200


async def test_with_forward_access_token_the_app_gets_the_refreshed_token_not_the_expired_one(
    make_stack: StackFactory,
) -> None:
    stack = await _everywhere(make_stack, identity_headers={"forward_access_token": True})
    browser = await _logged_in(stack, keep_expired_cookies=True)
    old_access = stack.cookie(browser, "access_token")
    stack.clock.advance(PAST_EXPIRY)

    answer = await browser.get(stack.url("/api/items"))

    assert answer.status == 200
    new_access = set_cookie_map(answer)["access_token"].value
    assert new_access not in ("", old_access)
    assert (await answer.json())["headers"]["Authorization"] == f"Bearer {new_access}"
