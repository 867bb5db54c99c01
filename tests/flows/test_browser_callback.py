"""GET /auth/callback: every broken, replayed or refused callback is answered without a 500.

A callback the sidecar cannot tie to a login transaction of this browser never reaches the token
endpoint: ``provider.calls["token:authorization_code"]`` is the witness.
"""

from __future__ import annotations

import pytest
from aiohttp import ClientResponse
from yarl import URL

from tests.flows.browser_support import (
    AUTH_COOKIES,
    finish,
    plant_cookie,
    query_of,
    set_cookie_map,
    sign_in,
    start_login,
)
from tests.flows.conftest import Stack, StackFactory

EXCHANGES = "token:authorization_code"


def _with_query(url: str, **params: str) -> str:
    return str(URL(url, encoded=True).update_query(params))


def _no_auth_cookies(answer: ClientResponse) -> None:
    names = set(set_cookie_map(answer))
    assert not names & set(AUTH_COOKIES), names


# -- before any token request ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        pytest.param({}, "missing_state", id="no-parameters"),
        pytest.param({"code": "abc"}, "missing_state", id="code-without-state"),
        pytest.param({"code": "abc", "state": ""}, "missing_state", id="empty-state"),
        pytest.param({"code": "abc", "state": "not-the-state"}, "state_mismatch", id="state-mismatch"),
        pytest.param({"code": "abc", "state": "{state}x"}, "state_mismatch", id="state-with-a-suffix"),
        pytest.param({"state": "{state}"}, "missing_code", id="state-without-code"),
        pytest.param({"code": "", "state": "{state}"}, "missing_code", id="empty-code"),
    ],
)
async def test_a_callback_without_a_matching_state_is_refused_before_any_token_request(
    stack: Stack, query: dict[str, str], reason: str
) -> None:
    browser = await stack.browser()
    state = query_of(await start_login(stack, browser))["state"]
    params = {k: v.format(state=state) for k, v in query.items()}

    answer = await browser.get(stack.url("/auth/callback"), params=params, allow_redirects=False)

    assert answer.status == 400
    assert await answer.json() == {"error": "bad_request", "reason": reason}
    assert answer.headers["Cache-Control"] == "no-store"
    assert stack.provider.calls[EXCHANGES] == 0
    _no_auth_cookies(answer)


async def test_a_browser_navigation_gets_the_refusal_as_a_page(stack: Stack) -> None:
    browser = await stack.browser()
    answer = await browser.get(stack.url("/auth/callback"), params={"code": "abc"},
                               headers={"Accept": "text/html"}, allow_redirects=False)
    assert answer.status == 400
    assert answer.content_type == "text/html"
    assert "missing_state" in await answer.text()


async def test_a_callback_in_a_browser_that_never_started_the_login_is_refused(stack: Stack) -> None:
    victim = await stack.browser()
    attacker = await stack.browser()
    callback = await sign_in(stack, attacker, await start_login(stack, attacker), "bob")

    answer = await finish(victim, callback)

    assert answer.status == 400
    assert (await answer.json())["reason"] == "missing_transaction"
    assert stack.provider.calls[EXCHANGES] == 0
    assert stack.cookie(victim, "access_token") is None


async def test_a_transaction_older_than_its_lifetime_is_refused(stack: Stack) -> None:
    browser = await stack.browser()
    callback = await sign_in(stack, browser, await start_login(stack, browser))
    stack.clock.advance(stack.settings.cookies.transaction_max_age + 1)

    answer = await finish(browser, callback)

    assert answer.status == 400
    assert (await answer.json())["reason"] == "expired_transaction"
    assert stack.provider.calls[EXCHANGES] == 0


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda v: v[:-4] + ("AAAA" if not v.endswith("AAAA") else "BBBB"), id="changed-tail"),
        pytest.param(lambda v: v[:40], id="truncated"),
        pytest.param(lambda v: "not-even-base64!", id="garbage"),
    ],
)
async def test_a_tampered_transaction_cookie_is_refused(stack: Stack, tamper: object) -> None:
    browser = await stack.browser()
    callback = await sign_in(stack, browser, await start_login(stack, browser))
    original = stack.cookie(browser, "authsidecar_tx")
    assert original is not None
    assert callable(tamper)
    plant_cookie(stack, browser, "authsidecar_tx", tamper(original))

    answer = await finish(browser, callback)

    assert answer.status == 400
    assert (await answer.json())["reason"] == "missing_transaction"
    assert stack.provider.calls[EXCHANGES] == 0


async def test_a_replayed_callback_is_refused_with_and_without_the_old_transaction_cookie(
    stack: Stack,
) -> None:
    browser = await stack.browser()
    callback = await sign_in(stack, browser, await start_login(stack, browser))
    old_transaction = stack.cookie(browser, "authsidecar_tx")
    assert old_transaction is not None
    first = await finish(browser, callback)
    assert first.status == 302
    assert stack.provider.calls[EXCHANGES] == 1

    again = await finish(browser, callback)
    assert again.status == 400
    assert (await again.json())["reason"] == "replayed_callback"

    plant_cookie(stack, browser, "authsidecar_tx", old_transaction)
    with_old_cookie = await finish(browser, callback)
    assert with_old_cookie.status == 400
    assert (await with_old_cookie.json())["reason"] == "replayed_callback"

    elsewhere = await stack.browser()
    plant_cookie(stack, elsewhere, "authsidecar_tx", old_transaction)
    from_another_browser = await finish(elsewhere, callback)
    assert from_another_browser.status == 400

    assert stack.provider.calls[EXCHANGES] == 1
    _no_auth_cookies(again)
    _no_auth_cookies(with_old_cookie)


# -- the provider refuses or fails -----------------------------------------------------------------


async def test_a_code_already_redeemed_is_refused_by_the_provider_and_answered_502(stack: Stack) -> None:
    browser = await stack.browser()
    callback = await sign_in(stack, browser, await start_login(stack, browser))
    assert (await finish(browser, callback)).status == 302
    used_code = query_of(callback)["code"]

    fresh_state = query_of(await start_login(stack, browser))["state"]
    forged = _with_query(stack.url("/auth/callback"), code=used_code, state=fresh_state)
    answer = await finish(browser, forged)

    assert answer.status == 502
    assert (await answer.json())["error"] == "provider_unavailable"
    assert stack.provider.calls[EXCHANGES] == 2
    _no_auth_cookies(answer)


async def test_a_code_injected_from_another_login_fails_pkce_at_the_provider(stack: Stack) -> None:
    victim = await stack.browser()
    attacker = await stack.browser()
    attackers_callback = await sign_in(stack, attacker, await start_login(stack, attacker), "bob")
    attackers_code = query_of(attackers_callback)["code"]
    victims_state = query_of(await start_login(stack, victim))["state"]

    answer = await finish(victim, _with_query(stack.url("/auth/callback"),
                                              code=attackers_code, state=victims_state))

    assert answer.status == 502
    assert stack.cookie(victim, "access_token") is None


async def test_an_id_token_with_another_logins_nonce_is_refused(stack: Stack) -> None:
    browser = await stack.browser()
    tab_a = await start_login(stack, browser)
    tab_b = await start_login(stack, browser)
    # Tab B's authorize request, carrying tab A's nonce: the provider binds that nonce into the code,
    # PKCE and state still match tab B, so only the ID token's nonce can tell.
    swapped = str(URL(tab_b, encoded=True).update_query(nonce=query_of(tab_a)["nonce"]))
    callback = await sign_in(stack, browser, swapped)

    answer = await finish(browser, callback)

    assert answer.status == 400
    assert (await answer.json())["reason"] == "nonce_mismatch"
    assert stack.provider.calls[EXCHANGES] == 1
    _no_auth_cookies(answer)
    assert stack.metric("authsidecar_flow_events_total", event="callback", outcome="invalid_token") == 1


@pytest.mark.parametrize(
    ("mode", "overrides"),
    [
        pytest.param("500", {}, id="http-500"),
        pytest.param("garbage", {}, id="garbage-body"),
        pytest.param("timeout", {"oidc": {"timeout": 0.5}}, id="timeout"),
    ],
)
async def test_a_failing_token_endpoint_gives_a_502_page(
    make_stack: StackFactory, mode: str, overrides: dict[str, object]
) -> None:
    stack = await make_stack(**overrides)
    browser = await stack.browser()
    callback = await sign_in(stack, browser, await start_login(stack, browser))
    stack.provider.set_failure("token", mode)  # type: ignore[arg-type]

    answer = await finish(browser, callback, headers={"Accept": "text/html"})

    assert answer.status == 502
    assert answer.content_type == "text/html"
    assert answer.headers["Cache-Control"] == "no-store"
    page = await answer.text()
    assert "try again" in page
    _no_auth_cookies(answer)
    code = query_of(callback)["code"]
    assert code not in page
    assert code not in stack.logs.getvalue()
    assert any(line["event"] == "code_exchange_failed" for line in stack.log_lines())


# -- the provider says no ---------------------------------------------------------------------------


async def test_a_user_who_cancels_at_the_provider_lands_back_on_the_app_with_auth_error(stack: Stack) -> None:
    browser = await stack.browser()
    authorize = await start_login(stack, browser, return_to="/orders?x=1#list")
    callback = await sign_in(stack, browser, authorize, cancel=True)

    answer = await finish(browser, callback)

    assert answer.status == 302
    assert answer.headers["Location"] == stack.url("/orders?x=1&auth_error=access_denied#list")
    assert stack.provider.calls[EXCHANGES] == 0
    _no_auth_cookies(answer)
    # The transaction is spent: the same state cannot be used again.
    again = await finish(browser, callback.replace("error=access_denied", "code=abc"))
    assert again.status == 400


@pytest.mark.parametrize(
    ("error", "with_state", "expected"),
    [
        pytest.param("access_denied", False, "access_denied", id="no-state"),
        pytest.param("login_required", True, "login_required", id="login-required"),
        pytest.param("server_error", True, "server_error", id="server-error"),
        pytest.param("<script>alert(1)</script>", True, "provider_error", id="markup"),
        pytest.param("ACCESS_DENIED", True, "provider_error", id="upper-case"),
        pytest.param("", True, "provider_error", id="empty"),
        pytest.param("x" * 100, True, "provider_error", id="too-long"),
    ],
)
async def test_a_provider_error_redirects_to_the_app_with_a_safe_error_code(
    stack: Stack, error: str, with_state: bool, expected: str
) -> None:
    browser = await stack.browser()
    state = query_of(await start_login(stack, browser, return_to="/here"))["state"]
    params = {"error": error, "error_description": "<b>ignored</b>"}
    if with_state:
        params["state"] = state

    answer = await browser.get(stack.url("/auth/callback"), params=params, allow_redirects=False)

    assert answer.status == 302
    target = stack.url("/here") if with_state else stack.settings.app_url
    assert answer.headers["Location"] == _with_query(target, auth_error=expected)
    assert answer.headers["Cache-Control"] == "no-store"


async def test_a_provider_error_with_an_unknown_state_still_lands_on_the_app(stack: Stack) -> None:
    browser = await stack.browser()
    answer = await browser.get(stack.url("/auth/callback"),
                               params={"error": "access_denied", "state": "forged"}, allow_redirects=False)
    assert answer.status == 302
    assert answer.headers["Location"] == _with_query(stack.settings.app_url, auth_error="access_denied")


# -- a good callback --------------------------------------------------------------------------------


async def test_a_successful_callback_logs_the_login_without_the_code_or_any_token(stack: Stack) -> None:
    browser = await stack.browser()
    callback = await sign_in(stack, browser, await start_login(stack, browser))

    answer = await finish(browser, callback)

    assert answer.status == 302
    cookies = set_cookie_map(answer)
    logs = stack.logs.getvalue()
    assert query_of(callback)["code"] not in logs
    for name in ("access_token", "id_token", "refresh_token", "XSRF-TOKEN"):
        assert cookies[name].value not in logs, name
    alice = stack.provider.user("alice")
    assert alice is not None
    assert [line["sub"] for line in stack.log_lines() if line["event"] == "login"] == [alice.sub]
