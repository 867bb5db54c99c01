"""/auth/logout: clear every cookie, revoke at the provider, end the provider's session; refuse CSRF."""

from __future__ import annotations

import json
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from sidecar.dev.provider import InvalidToken
from tests.flows.browser_support import (
    AUTH_COOKIES,
    EVIL_ORIGIN,
    SetCookie,
    csrf_headers,
    jar_cookies,
    login_as,
    new_browser,
    plant_cookie,
    query_of,
    set_cookie_map,
)
from tests.flows.conftest import SIGNED_OUT, Stack, StackFactory

ADMIN_SCOPES = ["openid", "email", "profile", "aws.cognito.signin.user.admin"]
FROM_THE_SPA = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}


async def _logged_in(stack: Stack, user: str = "alice") -> aiohttp.ClientSession:
    browser = await new_browser(stack)
    answer = await login_as(stack, browser, user, at_provider=await stack.browser())
    assert answer.status == 302
    return browser


def _spa_headers(stack: Stack) -> dict[str, str]:
    return {**FROM_THE_SPA, "Referer": stack.url("/dashboard")}


def _assert_provider_logout(stack: Stack, location: str) -> None:
    assert location.split("?", 1)[0] == stack.provider.url("/logout")
    assert query_of(location) == {"client_id": "authsidecar-dev", "logout_uri": stack.settings.app_url}


def _assert_cleared_like_set(cleared: dict[str, SetCookie], were_set: dict[str, SetCookie]) -> None:
    for name, cookie in were_set.items():
        if not cookie.value or cookie.name == "authsidecar_tx":
            continue
        assert cleared[name].clears, name
        for attribute in ("path", "domain", "secure", "samesite", "httponly"):
            assert cleared[name].get(attribute) == cookie.get(attribute), (name, attribute)


async def test_logout_from_the_spa_clears_every_cookie_revokes_and_ends_the_provider_session(
    stack: Stack,
) -> None:
    browser = await new_browser(stack)
    login = await login_as(stack, browser, "alice", at_provider=await stack.browser())
    were_set = set_cookie_map(login)
    refresh_token = stack.cookie(browser, "refresh_token")
    assert refresh_token is not None
    plant_cookie(stack, browser, "authsidecar_tx", "left-over-login")

    answer = await browser.get(stack.url("/auth/logout"), headers=_spa_headers(stack), allow_redirects=False)

    assert answer.status == 302
    _assert_provider_logout(stack, answer.headers["Location"])
    cleared = set_cookie_map(answer)
    _assert_cleared_like_set(cleared, were_set)
    assert {*AUTH_COOKIES, "authsidecar_tx"} <= {name for name, c in cleared.items() if c.clears}
    assert not set(jar_cookies(browser)) & {*AUTH_COOKIES, "authsidecar_tx"}
    assert stack.provider.calls["revoke"] == 1
    assert not stack.provider.refresh_token_is_live(refresh_token)
    assert stack.metric("authsidecar_flow_events_total", event="logout", outcome="ok") == 1

    # The provider's logout sends the browser back to the app.
    provider_logout = await browser.get(answer.headers["Location"], allow_redirects=False)
    assert provider_logout.status == 302
    assert provider_logout.headers["Location"] == stack.settings.app_url

    # The revoked refresh token is useless, even replayed from a copy of the old cookies: the
    # sidecar's deny-list refuses it before any token request.
    thief = await new_browser(stack)
    plant_cookie(stack, thief, "refresh_token", refresh_token, path="/auth")
    for name in ("id_token", "XSRF-TOKEN"):
        plant_cookie(stack, thief, name, were_set[name].value)
    replay = await thief.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, thief))
    assert replay.status == 401
    assert (await replay.json())["reason"] == "revoked"
    assert stack.provider.calls["token:refresh_token"] == 0


async def test_logout_clears_every_chunk_of_a_chunked_session(stack: Stack) -> None:
    browser = await _logged_in(stack, "many-groups")
    chunks = [name for name in jar_cookies(browser) if "." in name]
    assert any(name.startswith("id_token.") for name in chunks)

    answer = await browser.get(stack.url("/auth/logout"), headers=_spa_headers(stack), allow_redirects=False)

    cleared = set_cookie_map(answer)
    for name in chunks:
        assert cleared[name].clears, name
        assert cleared[name].get("path") == "/"
    assert not jar_cookies(browser).keys() - {"authsidecar_dev_idp"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sec-fetch-site-cross-site"),
        pytest.param({"Sec-Fetch-Site": "cross-site", "Referer": "{base}/"}, id="cross-site-despite-referer"),
        pytest.param({"Origin": EVIL_ORIGIN}, id="foreign-origin"),
        pytest.param({"Origin": "null"}, id="null-origin"),
        pytest.param({"Referer": EVIL_ORIGIN + "/a-page"}, id="foreign-referer"),
    ],
)
async def test_a_cross_site_logout_link_gets_a_confirmation_page_and_changes_nothing(
    stack: Stack, headers: dict[str, str]
) -> None:
    browser = await _logged_in(stack)
    refresh_token = stack.cookie(browser, "refresh_token")
    assert refresh_token is not None
    sent = {k: v.format(base=stack.base) for k, v in headers.items()}

    answer = await browser.get(stack.url("/auth/logout"), headers=sent, allow_redirects=False)

    assert answer.status == 200
    assert answer.content_type == "text/html"
    assert answer.headers["Cache-Control"] == "no-store"
    page = await answer.text()
    assert 'action="/auth/logout"' in page
    assert not set_cookie_map(answer)
    assert stack.provider.calls["revoke"] == 0
    assert stack.provider.refresh_token_is_live(refresh_token)
    assert (await browser.get(stack.url("/auth/me"))).status == 200
    assert stack.metric("authsidecar_flow_events_total", event="logout", outcome="confirm") == 1


async def test_confirming_on_the_page_logs_out(stack: Stack) -> None:
    browser = await _logged_in(stack)
    confirm = await browser.get(stack.url("/auth/logout"), headers={"Sec-Fetch-Site": "cross-site"})
    assert confirm.status == 200

    # Submitting the page's own form: a same-origin navigation from the sidecar's page.
    answer = await browser.get(stack.url("/auth/logout"), allow_redirects=False,
                               headers={**FROM_THE_SPA, "Referer": stack.url("/auth/logout")})

    assert answer.status == 302
    assert set_cookie_map(answer)["access_token"].clears
    assert stack.provider.calls["revoke"] == 1


async def test_a_post_logout_with_csrf_logs_out(stack: Stack) -> None:
    browser = await _logged_in(stack)

    answer = await browser.post(stack.url("/auth/logout"), headers=csrf_headers(stack, browser),
                                allow_redirects=False)

    assert answer.status == 303
    _assert_provider_logout(stack, answer.headers["Location"])
    assert set_cookie_map(answer)["refresh_token"].clears
    assert stack.provider.calls["revoke"] == 1


async def test_a_post_logout_asking_for_json_gets_the_provider_logout_url(stack: Stack) -> None:
    browser = await _logged_in(stack)
    headers = {**csrf_headers(stack, browser), "Accept": "application/json"}

    answer = await browser.post(stack.url("/auth/logout"), headers=headers)

    assert answer.status == 200
    _assert_provider_logout(stack, (await answer.json())["logout_url"])
    assert set_cookie_map(answer)["access_token"].clears


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("no-token", id="without-csrf-token"),
        pytest.param("foreign-origin", id="valid-token-foreign-origin"),
        pytest.param("wrong-token", id="token-of-another-session-user"),
    ],
)
async def test_a_post_logout_failing_csrf_is_403_and_logs_nobody_out(stack: Stack, case: str) -> None:
    browser = await _logged_in(stack)
    headers = csrf_headers(stack, browser)
    if case == "no-token":
        headers = {"Origin": stack.base}
    elif case == "foreign-origin":
        headers["Origin"] = EVIL_ORIGIN
    elif case == "wrong-token":
        bob = await _logged_in(stack, "bob")
        token = stack.cookie(bob, "XSRF-TOKEN")
        assert token is not None
        plant_cookie(stack, browser, "XSRF-TOKEN", token)
        headers["X-XSRF-TOKEN"] = token
    revokes = stack.provider.calls["revoke"]

    answer = await browser.post(stack.url("/auth/logout"), headers=headers, allow_redirects=False)

    assert answer.status == 403
    assert (await answer.json())["error"] == "csrf_failed"
    assert not set_cookie_map(answer)
    assert stack.provider.calls["revoke"] == revokes
    assert (await browser.get(stack.url("/auth/me"))).status == 200


async def test_a_post_logout_without_a_session_still_checks_the_origin(stack: Stack) -> None:
    browser = await new_browser(stack)
    refused = await browser.post(stack.url("/auth/logout"), headers={"Origin": EVIL_ORIGIN})
    assert refused.status == 403
    accepted = await browser.post(stack.url("/auth/logout"), headers={"Origin": stack.base},
                                  allow_redirects=False)
    assert accepted.status == 303
    assert stack.provider.calls["revoke"] == 0


@pytest.mark.parametrize(
    ("mode", "overrides"),
    [
        pytest.param("500", {}, id="http-500"),
        pytest.param("timeout", {"oidc": {"timeout": 0.5}}, id="timeout"),
    ],
)
async def test_logout_completes_when_the_provider_cannot_revoke(
    make_stack: StackFactory, mode: str, overrides: dict[str, object]
) -> None:
    stack = await make_stack(**overrides)
    browser = await _logged_in(stack)
    stack.provider.set_failure("revoke", mode)  # type: ignore[arg-type]

    answer = await browser.get(stack.url("/auth/logout"), headers=_spa_headers(stack), allow_redirects=False)

    assert answer.status == 302
    _assert_provider_logout(stack, answer.headers["Location"])
    cleared = set_cookie_map(answer)
    for name in AUTH_COOKIES:
        assert cleared[name].clears, name
    assert stack.metric("authsidecar_flow_events_total", event="logout", outcome="revoke_failed") == 1
    assert stack.metric("authsidecar_provider_errors_total", endpoint="revocation") == 1
    failures = [line for line in stack.log_lines() if line["event"] == "revoke_failed"]
    assert len(failures) == 1


async def test_global_sign_out_ends_every_session_of_the_user(make_stack: StackFactory) -> None:
    stack = await make_stack(oidc={"global_sign_out": True, "scopes": ADMIN_SCOPES})
    laptop = await _logged_in(stack)
    phone = await _logged_in(stack)
    access_token = stack.cookie(laptop, "access_token")
    phone_refresh = stack.cookie(phone, "refresh_token")
    assert access_token is not None
    assert phone_refresh is not None

    answer = await laptop.get(stack.url("/auth/logout"), headers=_spa_headers(stack), allow_redirects=False)

    assert answer.status == 302
    assert stack.provider.calls["global_sign_out"] == 1
    assert stack.metric("authsidecar_flow_events_total", event="logout", outcome="ok") == 1
    assert not stack.provider.refresh_token_is_live(phone_refresh)
    with pytest.raises(InvalidToken):
        stack.provider.check_access_token(access_token)
    on_the_phone = await phone.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, phone))
    assert on_the_phone.status == 401


async def test_a_refused_global_sign_out_does_not_stop_the_logout(make_stack: StackFactory) -> None:
    # The user already signed out everywhere from another device: Cognito refuses GlobalSignOut for
    # the now revoked access token (NotAuthorizedException); the local logout goes on.
    stack = await make_stack(oidc={"global_sign_out": True, "scopes": ADMIN_SCOPES})
    browser = await _logged_in(stack)
    phone = await _logged_in(stack)
    phone_token = stack.cookie(phone, "access_token")
    assert phone_token is not None
    async with aiohttp.ClientSession() as elsewhere:
        signed_out = await elsewhere.post(
            stack.provider.url("/"), data=json.dumps({"AccessToken": phone_token}),
            headers={"X-Amz-Target": "AWSCognitoIdentityProviderService.GlobalSignOut",
                     "Content-Type": "application/x-amz-json-1.1"})
        assert signed_out.status == 200

    answer = await browser.get(stack.url("/auth/logout"), headers=_spa_headers(stack), allow_redirects=False)

    assert answer.status == 302
    assert set_cookie_map(answer)["access_token"].clears
    assert stack.provider.calls["global_sign_out"] == 2  # the phone's, then the refused one
    assert stack.metric("authsidecar_flow_events_total", event="logout",
                        outcome="global_sign_out_failed") == 1


async def test_logout_without_a_session_still_ends_at_the_provider(stack: Stack) -> None:
    browser = await new_browser(stack)
    answer = await browser.get(stack.url("/auth/logout"), headers=_spa_headers(stack), allow_redirects=False)
    assert answer.status == 302
    _assert_provider_logout(stack, answer.headers["Location"])
    assert stack.provider.calls["revoke"] == 0
    assert URL(answer.headers["Location"]).host == "127.0.0.1"


# -- where the browser lands after logout ---------------------------------------------------------------

async def _logout_target(stack: Stack, query: str = "") -> str:
    browser = await _logged_in(stack)
    answer = await browser.get(stack.url("/auth/logout" + query), headers=_spa_headers(stack),
                               allow_redirects=False)
    assert answer.status == 302
    location = answer.headers["Location"]
    assert location.split("?", 1)[0] == stack.provider.url("/logout")
    landing = query_of(location)["logout_uri"]
    # The provider (registered sign-out URLs only, as Cognito) sends the browser on to it.
    provider_logout = await browser.get(location, allow_redirects=False)
    assert provider_logout.status == 302
    assert provider_logout.headers["Location"] == landing
    return landing


async def test_logout_lands_on_logout_redirect_url_when_configured(make_stack: StackFactory) -> None:
    stack = await make_stack(logout={"redirect_url": "{base}" + SIGNED_OUT})
    assert await _logout_target(stack) == stack.url(SIGNED_OUT)


async def test_logout_honours_a_safe_return_to_like_login_does(make_stack: StackFactory) -> None:
    stack = await make_stack()
    assert await _logout_target(stack, "?return_to=" + SIGNED_OUT) == stack.url(SIGNED_OUT)


@pytest.mark.parametrize(
    "return_to",
    ["https://evil.test/", "//evil.test/", "/\\evil.test", "https:evil.test", "http://127.0.0.1@evil.test/",
     "javascript:alert(1)"],
    ids=["foreign-origin", "scheme-relative", "backslash", "scheme-no-slashes", "userinfo", "javascript"],
)
async def test_logout_refuses_an_unsafe_return_to_and_lands_on_the_default(
    make_stack: StackFactory, return_to: str,
) -> None:
    stack = await make_stack()
    assert await _logout_target(stack, "?return_to=" + quote(return_to, safe="")) == stack.settings.app_url
