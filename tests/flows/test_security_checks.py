"""Security checks seen from outside, each by the request that would get through without it.

* the ID token must name the access token's user, at the callback and at every refresh;
* identity headers a client sends never reach the app, also when it connects through a trusted proxy;
* ``*`` in public paths, rules and CSRF-exempt paths stays inside one path segment;
* the refresh token is only used on paths under ``cookies.refresh_token_path``, however it arrives;
* a Bearer token that fails is never replaced by the session cookies' refresh.

Tokens are sent in hand-built ``Cookie`` headers where the point is what a client *could* send, not what
a well-behaved cookie jar would.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.flows.browser_support import csrf_headers, new_browser, set_cookie_map
from tests.flows.conftest import Stack, StackFactory

REFRESHES = "token:refresh_token"
PAST_EXPIRY = 3600 + 120  # the access token's lifetime plus more than the validator's leeway
TOKEN_COOKIES = {"access_token", "id_token", "refresh_token"}


async def logged_in(stack: Stack, user: str = "alice") -> aiohttp.ClientSession:
    browser = await new_browser(stack)
    assert (await stack.login(browser, user)).status == 302
    return browser


def session_cookies(stack: Stack, browser: aiohttp.ClientSession, *names: str) -> dict[str, str]:
    found = {name: stack.cookie(browser, name) for name in names}
    assert all(found.values()), found
    return {name: value for name, value in found.items() if value}


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- 1. the callback: the ID token names the access token's user --------------------------------------


async def test_a_callback_whose_id_token_names_another_user_is_refused_and_sets_no_token_cookie(
    stack: Stack,
) -> None:
    stack.provider.set_failure("token", "foreign_id_sub")
    browser = await new_browser(stack)

    answer = await stack.login(browser, "alice")

    assert answer.status == 400
    assert await answer.json() == {"error": "bad_request", "reason": "subject_mismatch"}
    assert not TOKEN_COOKIES & set(set_cookie_map(answer))
    assert stack.provider.calls["token:authorization_code"] == 1
    me = await browser.get(stack.url("/auth/me"))
    assert me.status == 401


# -- 2. every refresh: the new ID token names the session's user ----------------------------------------


async def test_a_refresh_whose_id_token_names_another_user_is_refused_and_sets_no_cookie(
    stack: Stack,
) -> None:
    browser = await logged_in(stack)
    stack.provider.set_failure("token", "foreign_id_sub")

    answer = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))

    assert answer.status == 401
    assert await answer.json() == {"error": "unauthorized", "reason": "subject_mismatch"}
    assert not set_cookie_map(answer)
    assert stack.provider.calls[REFRESHES] == 1


async def test_a_transparent_refresh_whose_id_token_names_another_user_is_refused_and_sets_no_cookie(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(cookies={"refresh_token_path": "/"})
    browser = await logged_in(stack)
    stack.clock.advance(PAST_EXPIRY)
    stack.provider.set_failure("token", "foreign_id_sub")
    reached = stack.upstream_stats.total

    answer = await browser.get(stack.url("/api/items"))

    assert answer.status == 401
    assert await answer.json() == {"error": "unauthorized", "reason": "subject_mismatch"}
    assert not set_cookie_map(answer)
    assert stack.provider.calls[REFRESHES] == 1
    assert stack.upstream_stats.total == reached


# -- 3. identity headers from a client behind a trusted proxy --------------------------------------------

SPOOFED = [
    ("X-Forwarded-User", "mallory"),
    ("X-Forwarded-Email", "mallory@evil.example"),
    ("X-Forwarded-Groups", "admins"),
    ("X-Forwarded-Access-Token", "forged-token"),
    ("X-Forwarded-Preferred-Username", "mallory"),
    ("x-forwarded-user", "mallory"),
    ("X_Forwarded_Email", "mallory@evil.example"),
    ("X-USER-ID", "mallory"),
    ("x-User-Email", "mallory@evil.example"),
    ("X_user_Groups", "admins"),
    ("X-User-Anything", "mallory"),
    ("X-AUTH-REQUEST-USER", "mallory"),
    ("x-Auth-Request-Email", "mallory@evil.example"),
    ("X_Auth_Request_Access_Token", "forged-token"),
]
FORGED = ("mallory", "evil", "forged", "admins")


def identity_like(header_list: list[list[str]]) -> list[tuple[str, str]]:
    prefixes = ("x-user-", "x-auth-request-", "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
                "x-forwarded-access-token", "x-forwarded-preferred-username")
    normal = [(n.lower().replace("_", "-"), v) for n, v in header_list]
    return sorted((n, v) for n, v in normal if n.startswith(prefixes))


@pytest.mark.parametrize("public", [False, True], ids=["protected-path", "public-path"])
async def test_behind_a_trusted_proxy_client_sent_identity_headers_never_reach_the_app(
    make_stack: StackFactory, client: aiohttp.ClientSession, public: bool
) -> None:
    # The flows connect from 127.0.0.1: trusting it puts every request behind a trusted proxy.
    stack = await make_stack(trusted_proxies=["127.0.0.1/32"], public_paths=["/public/**"])
    bob = stack.provider.user("bob")
    assert bob is not None
    headers = CIMultiDict(SPOOFED)
    headers.add("X-Forwarded-For", "198.51.100.7")
    if not public:
        headers.update(bearer(stack.provider.mint_access_token("bob")))

    async with client.get(stack.url("/public/page" if public else "/api/me"), headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        got: dict[str, Any] = await resp.json()

    # The proxy is believed for what it may say (where the client is)...
    assert got["headers"]["X-Forwarded-For"] == "198.51.100.7, 127.0.0.1"
    # ...never for who the client is.
    expected = [] if public else [("x-user-groups", "users"), ("x-user-id", bob.sub), ("x-user-name", "bob")]
    assert identity_like(got["header_list"]) == expected
    assert not any(word in str(got["header_list"]) for word in FORGED)


# -- 4. `*` stays inside one path segment, wherever patterns are used -------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/static/app.js", 200), ("/static/a/b", 401), ("/static/a/b/c.js", 401), ("/static", 401)],
    ids=["one-segment-is-public", "two-segments-are-not", "three-segments-are-not", "the-bare-prefix-is-not"],
)
async def test_a_public_path_star_covers_one_segment_only(
    make_stack: StackFactory, client: aiohttp.ClientSession, path: str, status: int
) -> None:
    stack = await make_stack(public_paths=["/static/*"])
    async with client.get(stack.url(path)) as resp:
        assert resp.status == status


@pytest.mark.parametrize(
    ("path", "status"),
    [("/team/t1", 403), ("/team/t1/members", 200), ("/team/t1/a/b", 200)],
    ids=["one-segment-is-ruled", "two-segments-are-not", "three-segments-are-not"],
)
async def test_a_rule_star_covers_one_segment_only(
    make_stack: StackFactory, client: aiohttp.ClientSession, path: str, status: int
) -> None:
    stack = await make_stack(rules=[{"path": "/team/*", "groups_any": ["admins"]}])
    token = stack.provider.mint_access_token("bob")  # in "users", not in "admins"
    async with client.get(stack.url(path), headers=bearer(token)) as resp:
        assert resp.status == status


@pytest.mark.parametrize(
    ("path", "status"),
    [("/hooks/github", 200), ("/hooks/github/push", 403), ("/hooks", 403)],
    ids=["one-segment-is-exempt", "two-segments-are-not", "the-bare-prefix-is-not"],
)
async def test_a_csrf_exempt_star_covers_one_segment_only(
    make_stack: StackFactory, path: str, status: int
) -> None:
    stack = await make_stack(csrf={"exempt_paths": ["/hooks/*"]})
    browser = await logged_in(stack)
    # A cross-site form post: the cookie rides along, no CSRF token, a foreign Origin.
    answer = await browser.post(stack.url(path), data={"x": "1"}, headers={"Origin": "https://evil.test"})
    assert answer.status == status
    if status == 403:
        assert (await answer.json())["error"] == "csrf_failed"


# -- 5. the refresh token is used only under cookies.refresh_token_path ------------------------------------


@pytest.mark.parametrize("path", ["/api/items", "/", "/authority/x", "/auth-like"],
                         ids=["app-path", "root", "prefix-of-auth-without-slash", "auth-dash"])
@pytest.mark.parametrize("access", ["expired", "absent"])
async def test_a_refresh_token_sent_raw_to_an_app_path_is_not_used(
    stack: Stack, client: aiohttp.ClientSession, path: str, access: str
) -> None:
    browser = await logged_in(stack)
    names = ("access_token", "id_token", "refresh_token") if access == "expired" else ("refresh_token",)
    raw = session_cookies(stack, browser, *names)
    stack.clock.advance(PAST_EXPIRY)

    async with client.get(stack.url(path), headers=cookie_header(raw)) as resp:
        assert resp.status == 401
        assert (await resp.json())["reason"] == ("expired" if access == "expired" else "missing")
        assert not set_cookie_map(resp)
    assert stack.provider.calls[REFRESHES] == 0


@pytest.mark.parametrize("access", ["expired", "absent"])
async def test_with_refresh_token_path_root_the_same_raw_request_is_refreshed(
    make_stack: StackFactory, client: aiohttp.ClientSession, access: str
) -> None:
    stack = await make_stack(cookies={"refresh_token_path": "/"})
    browser = await logged_in(stack)
    names = ("access_token", "id_token", "refresh_token") if access == "expired" else ("refresh_token",)
    raw = session_cookies(stack, browser, *names)
    stack.clock.advance(PAST_EXPIRY)

    async with client.get(stack.url("/api/items"), headers=cookie_header(raw)) as resp:
        assert resp.status == 200, await resp.text()
        assert set_cookie_map(resp)["access_token"].value
    assert stack.provider.calls[REFRESHES] == 1


async def test_under_the_refresh_token_path_the_raw_refresh_token_is_used(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    browser = await logged_in(stack)
    raw = session_cookies(stack, browser, "refresh_token", "id_token")
    stack.clock.advance(PAST_EXPIRY)

    async with client.get(stack.url("/auth/me"), headers=cookie_header(raw)) as resp:
        assert resp.status == 200
    assert stack.provider.calls[REFRESHES] == 1


# -- 6. a failing Bearer token never falls back to the cookies ---------------------------------------------


@pytest.mark.parametrize("bad", ["expired", "garbage", "foreign-signature"])
async def test_a_failing_bearer_token_is_401_even_with_refreshable_session_cookies(
    make_stack: StackFactory, client: aiohttp.ClientSession, bad: str
) -> None:
    # refresh_token_path "/": the refresh cookie would be usable on this path, were it asked for.
    stack = await make_stack(cookies={"refresh_token_path": "/"})
    browser = await logged_in(stack)
    raw = session_cookies(stack, browser, "access_token", "id_token", "refresh_token")
    if bad == "expired":
        token = raw["access_token"]
        stack.clock.advance(PAST_EXPIRY)
    elif bad == "garbage":
        token = "not-a-jwt"
    else:
        header, claims, _ = raw["access_token"].split(".")
        token = f"{header}.{claims}.c2lnbmF0dXJl"
    reached = stack.upstream_stats.total

    async with client.get(stack.url("/api/items"), headers={**bearer(token), **cookie_header(raw)}) as resp:
        assert resp.status == 401
        assert not set_cookie_map(resp)
    assert stack.provider.calls[REFRESHES] == 0
    assert stack.upstream_stats.total == reached
