"""Logout that revokes: a copy of the session's cookies, or its access token as a Bearer, is refused
after /auth/logout although the tokens have not expired."""

from __future__ import annotations

import aiohttp
import pytest

from tests.flows.browser_support import jar_cookies, login_as, new_browser
from tests.flows.conftest import Stack

JSON = {"Accept": "application/json"}


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def logged_in_copy(stack: Stack, user: str = "alice") -> tuple[aiohttp.ClientSession, dict[str, str]]:
    browser = await new_browser(stack)
    assert (await login_as(stack, browser, user, at_provider=await stack.browser())).status == 302
    return browser, jar_cookies(browser)


async def logout(stack: Stack, browser: aiohttp.ClientSession) -> None:
    answer = await browser.get(stack.url("/auth/logout"), allow_redirects=False,
                               headers={"Sec-Fetch-Site": "same-origin", "Referer": stack.url("/")})
    assert answer.status == 302


async def test_a_session_cookie_copied_before_logout_is_refused_after_it_before_its_exp(
    stack: Stack, client: aiohttp.ClientSession,
) -> None:
    browser, copied = await logged_in_copy(stack)
    before = await client.get(stack.url("/dashboard"), headers={"Cookie": cookie_header(copied), **JSON})
    assert before.status == 200

    await logout(stack, browser)

    replayed = await client.get(stack.url("/dashboard"), headers={"Cookie": cookie_header(copied), **JSON})
    assert replayed.status == 401
    assert (await replayed.json())["reason"] == "revoked"
    assert stack.provider.calls["token:refresh_token"] == 0
    assert stack.metric("authsidecar_revocations_total", source="logout") == 1


async def test_the_access_token_of_a_logged_out_session_is_refused_as_a_bearer(
    stack: Stack, client: aiohttp.ClientSession,
) -> None:
    browser, copied = await logged_in_copy(stack)
    bearer = {"Authorization": f"Bearer {copied['access_token']}", **JSON}
    assert (await client.get(stack.url("/dashboard"), headers=bearer)).status == 200

    await logout(stack, browser)

    refused = await client.get(stack.url("/dashboard"), headers=bearer)
    assert refused.status == 401
    assert (await refused.json())["reason"] == "revoked"


# Without the access token a refresh is attempted; without the ID token too, only the refresh
# token's own deny-list entry (its digest) can refuse it.
WITHOUT = [pytest.param(("access_token",), id="with-the-id-token-that-says-whose-it-is"),
           pytest.param(("access_token", "id_token"), id="the-refresh-token-alone")]


@pytest.mark.parametrize("dropped", WITHOUT)
async def test_the_refresh_token_of_a_logged_out_session_is_refused_without_asking_the_provider(
    stack: Stack, client: aiohttp.ClientSession, dropped: tuple[str, ...],
) -> None:
    browser, copied = await logged_in_copy(stack)
    await logout(stack, browser)
    only_refresh = {k: v for k, v in copied.items() if k not in dropped}
    assert "refresh_token" in only_refresh
    refused = await client.get(stack.url("/auth/me"), headers={"Cookie": cookie_header(only_refresh), **JSON})
    assert refused.status == 401
    assert stack.provider.calls["token:refresh_token"] == 0


async def test_a_new_login_after_logout_works_and_another_session_of_the_user_is_untouched(
    stack: Stack, client: aiohttp.ClientSession,
) -> None:
    first, _ = await logged_in_copy(stack)
    _, other = await logged_in_copy(stack)
    await logout(stack, first)
    stack.clock.advance(1)
    _, again = await logged_in_copy(stack)
    for cookies in (other, again):
        answer = await client.get(stack.url("/dashboard"), headers={"Cookie": cookie_header(cookies), **JSON})
        assert answer.status == 200
