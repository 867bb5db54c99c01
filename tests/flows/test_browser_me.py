"""GET /auth/me (and its /me alias): who the browser session belongs to, or a 401 in JSON."""

from __future__ import annotations

import pytest

from tests.flows.browser_support import new_browser, plant_cookie
from tests.flows.conftest import Stack

IDENTITY_KEYS = {"sub", "username", "email", "groups", "scopes", "expires_at"}


@pytest.mark.parametrize("path", ["/auth/me", "/me"], ids=["auth-me", "me-alias"])
async def test_me_describes_the_logged_in_user(stack: Stack, path: str) -> None:
    browser = await new_browser(stack)
    await stack.login(browser, "alice")

    answer = await browser.get(stack.url(path))

    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    body = await answer.json()
    alice = stack.provider.user("alice")
    assert alice is not None
    assert set(body) == IDENTITY_KEYS
    assert body["sub"] == alice.sub
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["groups"] == ["admins", "users"]
    assert body["scopes"] == ["openid", "email", "profile"]
    assert stack.clock() < body["expires_at"] <= stack.clock() + 3600


async def test_a_user_without_groups_gets_an_empty_list(stack: Stack) -> None:
    browser = await new_browser(stack)
    await stack.login(browser, "carol")
    body = await (await browser.get(stack.url("/auth/me"))).json()
    assert body["groups"] == []
    assert body["username"] == "carol"


@pytest.mark.parametrize("path", ["/auth/me", "/me"], ids=["auth-me", "me-alias"])
async def test_me_without_a_session_is_a_401_in_json(stack: Stack, path: str) -> None:
    browser = await new_browser(stack)

    answer = await browser.get(stack.url(path))

    assert answer.status == 401
    assert await answer.json() == {"error": "unauthorized", "reason": "missing"}
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("cookie", "value"),
    [
        pytest.param("access_token", "not-a-jwt", id="garbage-access-token"),
        pytest.param("access_token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", id="unsigned-token"),
        pytest.param("access_token.0", "eyJhbGciOiJSUzI1NiJ9", id="incomplete-chunk-set"),
    ],
)
async def test_me_with_a_forged_cookie_is_401_never_500(stack: Stack, cookie: str, value: str) -> None:
    browser = await new_browser(stack)
    plant_cookie(stack, browser, cookie, value)

    answer = await browser.get(stack.url("/auth/me"))

    assert answer.status == 401
    assert (await answer.json())["error"] == "unauthorized"
