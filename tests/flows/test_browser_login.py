"""GET /auth/login and the way back: state, PKCE, nonce, passthrough, tabs, and return_to."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from tests.flows.browser_support import (
    finish,
    new_browser,
    query_of,
    set_cookie_map,
    sign_in,
    start_login,
    transaction,
)
from tests.flows.conftest import Stack, StackFactory

_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url_bytes(value: str) -> bytes:
    assert _B64URL.fullmatch(value), value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


async def test_login_redirects_to_the_providers_authorize_endpoint_with_a_complete_request(
    stack: Stack,
) -> None:
    browser = await stack.browser()
    answer = await browser.get(stack.url("/auth/login"), allow_redirects=False)

    assert answer.status == 302
    location = answer.headers["Location"]
    assert location.split("?", 1)[0] == stack.provider.url("/oauth2/authorize")
    query = query_of(location)
    assert query["response_type"] == "code"
    assert query["client_id"] == "authsidecar-dev"
    assert query["redirect_uri"] == stack.url("/auth/callback")
    assert query["scope"].split() == ["openid", "email", "profile"]
    assert query["code_challenge_method"] == "S256"
    assert len(_b64url_bytes(query["state"])) * 8 >= 128
    assert len(_b64url_bytes(query["nonce"])) * 8 >= 128
    assert len(_b64url_bytes(query["code_challenge"])) == 32  # a SHA-256 digest
    assert answer.headers["Cache-Control"] == "no-store"


async def test_the_challenge_is_the_s256_of_the_verifier_kept_encrypted_in_the_transaction_cookie(
    stack: Stack,
) -> None:
    browser = await stack.browser()
    answer = await browser.get(stack.url("/auth/login"), allow_redirects=False)
    query = query_of(answer.headers["Location"])
    tx_cookie = set_cookie_map(answer)["authsidecar_tx"]

    assert tx_cookie.has("httponly")
    assert tx_cookie.get("path") == "/"
    assert tx_cookie.get("samesite") == "Lax"
    for secret in (query["state"], query["nonce"], query["code_challenge"]):
        assert secret not in tx_cookie.value
    pending = transaction(stack, tx_cookie.value)["tx"]
    assert list(pending) == [query["state"]]
    entry = pending[query["state"]]
    digest = hashlib.sha256(entry["verifier"].encode("ascii")).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == query["code_challenge"]
    assert entry["nonce"] == query["nonce"]
    assert 43 <= len(entry["verifier"]) <= 128


async def test_every_login_gets_a_fresh_state_nonce_and_verifier(stack: Stack) -> None:
    browser = await stack.browser()
    seen = [query_of(await start_login(stack, browser)) for _ in range(3)]
    for name in ("state", "nonce", "code_challenge"):
        assert len({query[name] for query in seen}) == 3, name


PASSTHROUGH = {
    "identity_provider": "Google", "lang": "fr", "prompt": "login", "login_hint": "alice@example.com",
}


@pytest.mark.parametrize("name", list(PASSTHROUGH), ids=list(PASSTHROUGH))
async def test_a_listed_parameter_passes_through_to_the_provider(stack: Stack, name: str) -> None:
    browser = await stack.browser()
    query = query_of(await start_login(stack, browser, **{name: PASSTHROUGH[name]}))
    assert query[name] == PASSTHROUGH[name]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("foo", "bar", id="unknown-parameter"),
        pytest.param("scope", "openid aws.cognito.signin.user.admin", id="scope"),
        pytest.param("redirect_uri", "https://evil.test/cb", id="redirect_uri"),
        pytest.param("client_id", "someone-else", id="client_id"),
        pytest.param("state", "attacker-state", id="state"),
        pytest.param("nonce", "attacker-nonce", id="nonce"),
        pytest.param("code_challenge", "A" * 43, id="code_challenge"),
        pytest.param("code_challenge_method", "plain", id="code_challenge_method"),
        pytest.param("response_type", "token", id="response_type"),
        pytest.param("simulate_error", "access_denied", id="provider-test-hook"),
    ],
)
async def test_any_other_parameter_does_not_reach_the_provider(stack: Stack, name: str, value: str) -> None:
    browser = await stack.browser()
    query = query_of(await start_login(stack, browser, **{name: value}))
    assert query.get(name) != value
    assert query["client_id"] == "authsidecar-dev"
    assert query["redirect_uri"] == stack.url("/auth/callback")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("fr\r\nX-Injected: 1", id="line-break"),
        pytest.param("a" * 300, id="too-long"),
        pytest.param("\u00e9", id="non-ascii"),
    ],
)
async def test_a_passthrough_value_with_odd_characters_is_dropped(stack: Stack, value: str) -> None:
    browser = await stack.browser()
    query = query_of(await start_login(stack, browser, lang=value))
    assert "lang" not in query


async def test_logins_started_in_three_tabs_each_complete_when_finished_in_reverse_order(
    stack: Stack,
) -> None:
    browser = await stack.browser()
    targets = ["/tab/one", "/tab/two", "/tab/three"]
    authorize_urls = [await start_login(stack, browser, return_to=target) for target in targets]
    callbacks = [await sign_in(stack, browser, url, "alice") for url in authorize_urls]

    for target, callback in reversed(list(zip(targets, callbacks, strict=True))):
        answer = await finish(browser, callback)
        assert answer.status == 302, await answer.text()
        assert answer.headers["Location"] == stack.url(target)
        assert set_cookie_map(answer)["access_token"].value

    assert stack.provider.calls["token:authorization_code"] == 3
    me = await browser.get(stack.url("/auth/me"))
    assert me.status == 200
    assert (await me.json())["username"] == "alice"


async def test_the_transaction_cookie_is_gone_once_the_last_pending_login_completes(stack: Stack) -> None:
    browser = await stack.browser()
    answer = await stack.login(browser, "alice")
    tx_cookie = set_cookie_map(answer)["authsidecar_tx"]
    assert tx_cookie.clears
    assert tx_cookie.get("path") == "/"
    assert stack.cookie(browser, "authsidecar_tx") is None


async def test_clearing_the_transaction_cookie_repeats_the_attributes_it_was_set_with(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(cookies={"secure": True, "host_prefix": True})
    browser = await new_browser(stack, secure=True)
    begun = await browser.get(stack.url("/auth/login"), allow_redirects=False)
    set_with = set_cookie_map(begun)["__Host-authsidecar_tx"]
    answer = await finish(browser, await sign_in(stack, browser, begun.headers["Location"]))

    cleared = set_cookie_map(answer)["__Host-authsidecar_tx"]
    assert cleared.clears
    for attribute in ("path", "secure", "samesite", "httponly"):
        assert cleared.get(attribute) == set_with.get(attribute), attribute
    assert not cleared.has("domain")
