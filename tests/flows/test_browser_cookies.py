"""The cookies the browser is given, read from the raw Set-Cookie headers, and chunked ID tokens."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.flows.browser_support import (
    SetCookie,
    csrf_headers,
    jar_cookies,
    login_as,
    new_browser,
    set_cookie_map,
    set_cookies,
)
from tests.flows.conftest import Stack, StackFactory

DAYS_30 = 30 * 24 * 3600


async def _login_cookies(
    stack: Stack, browser: aiohttp.ClientSession, user: str = "alice"
) -> dict[str, SetCookie]:
    answer = await stack.login(browser, user)
    assert answer.status == 302, await answer.text()
    return set_cookie_map(answer)


async def test_after_the_callback_each_auth_cookie_has_exactly_its_attributes(stack: Stack) -> None:
    cookies = await _login_cookies(stack, await stack.browser())

    access, id_token = cookies["access_token"], cookies["id_token"]
    refresh, xsrf = cookies["refresh_token"], cookies["XSRF-TOKEN"]
    for cookie in (access, id_token, refresh):
        assert cookie.has("httponly"), cookie.name
    assert not xsrf.has("httponly")
    for cookie in (access, id_token, refresh, xsrf):
        assert cookie.get("samesite") == "Lax", cookie.name
        assert not cookie.has("secure"), cookie.name
        assert not cookie.has("domain"), cookie.name
    assert access.get("path") == "/"
    assert id_token.get("path") == "/"
    assert xsrf.get("path") == "/"
    assert refresh.get("path") == "/auth"
    assert refresh.max_age == DAYS_30
    assert access.max_age is not None
    assert 0 < access.max_age <= 3600
    assert xsrf.value.count(".") == 1


async def test_the_access_token_cookie_never_outlives_a_short_lived_token(make_stack: StackFactory) -> None:
    stack = await make_stack(provider_config={"access_ttl": 120})
    cookies = await _login_cookies(stack, await stack.browser())
    max_age = cookies["access_token"].max_age
    assert max_age is not None
    assert 0 < max_age <= 120


@pytest.mark.parametrize(
    ("settings", "same_site"),
    [
        pytest.param({"secure": True}, "Lax", id="secure"),
        pytest.param({"secure": True, "same_site": "none"}, "None", id="same-site-none"),
        pytest.param({"secure": True, "same_site": "strict"}, "Strict", id="same-site-strict"),
    ],
)
async def test_every_cookie_of_the_flow_carries_the_configured_secure_and_same_site(
    make_stack: StackFactory, settings: dict[str, Any], same_site: str
) -> None:
    stack = await make_stack(cookies=settings)
    browser = await new_browser(stack, secure=True)
    begun = await browser.get(stack.url("/auth/login"), allow_redirects=False)
    callback = await stack.login(browser, "alice")
    refreshed = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))
    assert refreshed.status == 200
    logout = await browser.get(stack.url("/auth/logout"), allow_redirects=False)
    assert logout.status == 302

    headers = [*set_cookies(begun), *set_cookies(callback), *set_cookies(refreshed), *set_cookies(logout)]
    assert {c.name for c in headers} >= {"authsidecar_tx", "access_token", "id_token", "refresh_token",
                                         "XSRF-TOKEN"}
    for cookie in headers:
        assert cookie.has("secure"), cookie.name
        # The login transaction must survive the provider's cross-site redirect back: never Strict.
        expected = "Lax" if cookie.name == "authsidecar_tx" and same_site == "Strict" else same_site
        assert cookie.get("samesite") == expected, cookie.name


async def test_a_configured_domain_is_on_every_cookie_set_and_cleared(make_stack: StackFactory) -> None:
    stack = await make_stack(cookies={"domain": "127.0.0.1"})
    browser = await stack.browser()
    callback = await stack.login(browser, "alice")
    logout = await browser.get(stack.url("/auth/logout"), allow_redirects=False)

    headers = [*set_cookies(callback), *set_cookies(logout)]
    assert {c.name for c in set_cookies(logout) if c.clears} >= {"access_token", "id_token",
                                                                 "refresh_token", "XSRF-TOKEN"}
    for cookie in headers:
        assert cookie.get("domain") == "127.0.0.1", cookie.name


@pytest.mark.parametrize(
    ("refresh_path", "refresh_name"),
    [
        pytest.param("/auth", "__Secure-refresh_token", id="refresh-under-auth"),
        pytest.param("/", "__Host-refresh_token", id="refresh-everywhere"),
    ],
)
async def test_host_prefixed_cookies_follow_the_prefix_rules_and_the_session_works(
    make_stack: StackFactory, refresh_path: str, refresh_name: str
) -> None:
    stack = await make_stack(cookies={"secure": True, "host_prefix": True,
                                      "refresh_token_path": refresh_path})
    browser = await new_browser(stack, secure=True)
    cookies = await _login_cookies(stack, browser)

    assert set(cookies) == {"__Host-authsidecar_tx", "__Host-access_token", "__Host-id_token", refresh_name,
                            "__Host-XSRF-TOKEN"}
    for cookie in cookies.values():
        assert cookie.has("secure"), cookie.name
        assert not cookie.has("domain"), cookie.name
        if cookie.name.startswith("__Host-"):
            assert cookie.get("path") == "/", cookie.name
    assert cookies[refresh_name].get("path") == refresh_path

    me = await browser.get(stack.url("/auth/me"))
    assert me.status == 200
    refreshed = await browser.post(stack.url("/auth/refresh"),
                                   headers=csrf_headers(stack, browser, xsrf_cookie="__Host-XSRF-TOKEN"))
    assert refreshed.status == 200
    assert "__Host-access_token" in set_cookie_map(refreshed)


# -- Cache-Control ---------------------------------------------------------------------------------


async def _every_auth_response(stack: Stack) -> list[tuple[str, aiohttp.ClientResponse]]:
    anonymous = await stack.browser()
    browser = await stack.browser()
    seen = [
        ("login", await browser.get(stack.url("/auth/login"), allow_redirects=False)),
        ("callback-refused", await browser.get(stack.url("/auth/callback?code=x"), allow_redirects=False)),
        ("callback-provider-error", await browser.get(stack.url("/auth/callback?error=access_denied"),
                                                      allow_redirects=False)),
        ("me-logged-out", await anonymous.get(stack.url("/auth/me"))),
        ("me-alias-logged-out", await anonymous.get(stack.url("/me"))),
        ("refresh-logged-out", await anonymous.post(stack.url("/auth/refresh"))),
        ("callback", await stack.login(browser, "alice")),
        ("me", await browser.get(stack.url("/auth/me"))),
        ("me-alias", await browser.get(stack.url("/me"))),
        ("refresh-without-csrf", await browser.post(stack.url("/auth/refresh"))),
        ("refresh", await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))),
        ("logout-cross-site", await browser.get(stack.url("/auth/logout"),
                                                headers={"Sec-Fetch-Site": "cross-site"})),
        ("logout-post-without-csrf", await browser.post(stack.url("/auth/logout"), allow_redirects=False)),
        ("unknown-auth-path", await browser.get(stack.url("/auth/nothing-here"))),
        ("refresh-wrong-method", await browser.get(stack.url("/auth/refresh"))),
        ("logout-wrong-method", await browser.put(stack.url("/auth/logout"))),
        ("logout", await browser.get(stack.url("/auth/logout"), allow_redirects=False)),
    ]
    return seen


async def test_no_auth_response_may_be_stored_by_a_cache(stack: Stack) -> None:
    responses = await _every_auth_response(stack)
    statuses = {name: answer.status for name, answer in responses}
    assert statuses["callback"] == 302
    assert statuses["refresh"] == 200
    assert statuses["me-alias"] == 200
    assert statuses["logout-post-without-csrf"] == 403
    assert 500 not in statuses.values()
    for name, answer in responses:
        assert answer.headers.get("Cache-Control") == "no-store", (name, answer.status)


# -- chunked tokens --------------------------------------------------------------------------------


def _chunks(cookies: dict[str, SetCookie], name: str) -> list[str]:
    return sorted(n for n in cookies if n.startswith(name + "."))


async def test_a_large_id_token_is_split_into_numbered_chunks_and_read_back_whole(stack: Stack) -> None:
    browser = await new_browser(stack)
    answer = await login_as(stack, browser, "many-groups", at_provider=await stack.browser())
    cookies = set_cookie_map(answer)

    id_chunks = _chunks(cookies, "id_token")
    assert len(id_chunks) >= 2
    assert id_chunks == [f"id_token.{i}" for i in range(len(id_chunks))]
    assert sum(len(cookies[n].value) for n in id_chunks) > 6 * 1024
    assert "id_token" not in cookies
    for name in id_chunks + _chunks(cookies, "access_token"):
        cookie = cookies[name]
        assert len(f"{cookie.name}={cookie.value}") <= 4000, name
        assert cookie.has("httponly")
        assert cookie.get("path") == "/"

    me = await browser.get(stack.url("/auth/me"))
    assert me.status == 200
    body = await me.json()
    assert body["username"] == "many-groups"
    assert body["email"] == "many-groups@example.com"  # from the reassembled ID token
    assert len(body["groups"]) == 150

    proxied = await browser.get(stack.url("/api/items"))
    assert proxied.status == 200
    identity = (await proxied.json())["identity"]
    assert len(identity["X-User-Groups"].split(",")) == 150
    assert identity["X-User-Email"] == "many-groups@example.com"


async def test_stale_chunks_are_cleared_when_the_token_shrinks(stack: Stack) -> None:
    browser = await new_browser(stack)
    provider_pages = await stack.browser()
    big = set_cookie_map(await login_as(stack, browser, "many-groups", at_provider=provider_pages))
    old_chunks = _chunks(big, "id_token") + _chunks(big, "access_token")

    small = set_cookie_map(await login_as(stack, browser, "alice", at_provider=provider_pages))

    for name in old_chunks:
        assert small[name].clears, name
        assert small[name].get("path") == "/"
        assert small[name].has("httponly")
    assert small["id_token"].value
    assert small["access_token"].value
    assert not any("." in name for name in jar_cookies(browser))
    me = await browser.get(stack.url("/auth/me"))
    assert (await me.json())["username"] == "alice"


async def test_the_plain_cookie_is_cleared_when_the_token_grows_into_chunks(stack: Stack) -> None:
    browser = await new_browser(stack)
    provider_pages = await stack.browser()
    await login_as(stack, browser, "alice", at_provider=provider_pages)

    big = set_cookie_map(await login_as(stack, browser, "many-groups", at_provider=provider_pages))

    assert big["id_token"].clears
    assert big["access_token"].clears
    assert "id_token" not in jar_cookies(browser)
    me = await browser.get(stack.url("/auth/me"))
    assert (await me.json())["username"] == "many-groups"
