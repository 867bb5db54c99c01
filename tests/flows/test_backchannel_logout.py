"""OIDC Back-Channel Logout 1.0 at /auth/backchannel-logout: a session ended at the provider is
refused at the next request; a logout token that fails any check is a 400 that revokes nothing."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest

from sidecar.dev.provider import BACKCHANNEL_EVENT
from tests.flows.browser_support import jar_cookies, login_as, new_browser
from tests.flows.conftest import Stack, StackFactory

PATH = "/auth/backchannel-logout"
JSON = {"Accept": "application/json"}
FORM = "application/x-www-form-urlencoded"


async def backchannel_stack(make_stack: StackFactory) -> Stack:
    stack = await make_stack(logout={"backchannel": True})
    # The sidecar's URL is known only now: registered at the provider as its back-channel URI.
    stack.provider.config = dataclasses.replace(stack.provider.config,
                                                backchannel_logout_uris=(stack.url(PATH),))
    return stack


async def signed_in(stack: Stack) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession, dict[str, Any]]:
    """A browser signed in through the provider's form; its provider-side client; its ID token's claims."""
    browser, at_provider = await new_browser(stack), await stack.browser()
    assert (await login_as(stack, browser, "alice", at_provider=at_provider)).status == 302
    claims = stack.provider.keys.verify(jar_cookies(browser)["id_token"])
    assert claims is not None
    assert isinstance(claims.get("sid"), str)
    return browser, at_provider, claims


async def dashboard(browser: aiohttp.ClientSession, stack: Stack, **headers: str) -> aiohttp.ClientResponse:
    return await browser.get(stack.url("/dashboard"), allow_redirects=False, headers=headers or JSON)


async def test_a_session_ended_at_the_provider_is_refused_at_the_next_request(
    make_stack: StackFactory,
) -> None:
    stack = await backchannel_stack(make_stack)
    browser, at_provider, _ = await signed_in(stack)
    assert (await dashboard(browser, stack)).status == 200

    ended = await at_provider.get(stack.provider.url("/logout"), allow_redirects=False,
                                  params={"client_id": "authsidecar-dev", "logout_uri": stack.url("/")})

    assert ended.status == 302
    assert stack.provider.backchannel_statuses == [200]
    navigation = await dashboard(browser, stack, Accept="text/html")
    assert navigation.status == 302
    assert navigation.headers["Location"].startswith("/auth/login")
    assert (await dashboard(browser, stack)).status == 401
    assert stack.metric("authsidecar_revocations_total", source="backchannel") == 1


async def test_a_logout_token_naming_only_the_user_ends_every_session_of_that_user(
    make_stack: StackFactory,
) -> None:
    stack = await backchannel_stack(make_stack)
    first, _, claims = await signed_in(stack)
    second, _, _ = await signed_in(stack)
    assert await stack.provider.backchannel_logout(sub=claims["sub"]) == [200]
    for browser in (first, second):
        assert (await dashboard(browser, stack)).status == 401


async def test_the_answer_is_never_cached_and_a_replayed_logout_token_is_refused(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await backchannel_stack(make_stack)
    token = stack.provider.logout_token(sid="some-other-session", sub="someone")
    first = await client.post(stack.url(PATH), data={"logout_token": token})
    assert first.status == 200
    assert first.headers["Cache-Control"] == "no-store"
    again = await client.post(stack.url(PATH), data={"logout_token": token})
    assert again.status == 400
    assert again.headers["Cache-Control"] == "no-store"
    assert (await again.json())["error"] == "invalid_request"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned(stack: Stack, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _claims(stack: Stack, session: dict[str, Any]) -> dict[str, Any]:
    now = stack.provider.now()
    return {"iss": stack.provider.issuer, "aud": "authsidecar-dev", "iat": now, "exp": now + 120,
            "jti": "j-" + str(now), "events": {BACKCHANNEL_EVENT: {}}, "sid": session["sid"],
            "sub": session["sub"]}


def alg_none(stack: Stack, session: dict[str, Any]) -> str:
    return _unsigned(stack, {"alg": "none", "typ": "logout+jwt"}, _claims(stack, session)) + "."


def hs256_with_the_public_key(stack: Stack, session: dict[str, Any]) -> str:
    """The classic confusion: HMAC keyed with the provider's public key (the PEM anyone can fetch)."""
    (public,) = stack.provider.keys.jwks()["keys"]
    from jwcrypto import jwk

    pem = jwk.JWK(**public).export_to_pem()
    signing_input = _unsigned(stack, {"alg": "HS256", "kid": public["kid"], "typ": "logout+jwt"},
                              _claims(stack, session))
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bad_signature(stack: Stack, session: dict[str, Any]) -> str:
    head, body, signature = stack.provider.logout_token(sid=session["sid"], sub=session["sub"]).split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{body}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


def token(**overrides: Any) -> Any:
    def make(stack: Stack, session: dict[str, Any]) -> str:
        claims = {"sid": session["sid"], "sub": session["sub"], **overrides}
        headers = claims.pop("headers", None)
        return stack.provider.logout_token(headers=headers, **claims)
    return make


def an_id_token(stack: Stack, session: dict[str, Any]) -> str:
    return stack.provider.mint_id_token("alice", sid=session["sid"])


BAD_TOKENS = [
    pytest.param(bad_signature, id="bad-signature"),
    pytest.param(alg_none, id="alg-none"),
    pytest.param(hs256_with_the_public_key, id="hs256-keyed-with-the-public-key"),
    pytest.param(token(iss="https://evil.example.com"), id="wrong-iss"),
    pytest.param(token(aud="another-client"), id="wrong-aud"),
    pytest.param(token(events=None), id="missing-events"),
    pytest.param(token(events={"http://schemas.openid.net/event/other": {}}), id="wrong-event-uri"),
    pytest.param(token(events=[BACKCHANNEL_EVENT]), id="events-not-an-object"),
    pytest.param(token(events={BACKCHANNEL_EVENT: "yes"}), id="event-value-not-an-object"),
    pytest.param(token(nonce="n-1"), id="nonce-present"),
    pytest.param(token(sid=None, sub=None), id="neither-sid-nor-sub"),
    pytest.param(token(sid=42), id="sid-not-a-string"),
    pytest.param(token(jti=None), id="missing-jti"),
    pytest.param(token(iat=None), id="missing-iat"),
    pytest.param(token(iat=10**10), id="iat-far-in-the-future"),
    pytest.param(token(iat=1), id="iat-too-old"),
    pytest.param(token(exp=1), id="expired"),
    pytest.param(token(headers={"typ": "JWT"}), id="typed-as-another-jwt"),
    pytest.param(an_id_token, id="an-id-token"),
]


@pytest.mark.parametrize("make", BAD_TOKENS)
async def test_a_bad_logout_token_is_400_and_revokes_nothing(
    make_stack: StackFactory, client: aiohttp.ClientSession, make: Any,
) -> None:
    stack = await backchannel_stack(make_stack)
    browser, _, session = await signed_in(stack)
    answer = await client.post(stack.url(PATH), data={"logout_token": make(stack, session)})
    assert answer.status == 400
    assert answer.headers["Cache-Control"] == "no-store"
    assert (await answer.json())["error"] == "invalid_request"
    assert (await dashboard(browser, stack)).status == 200
    assert stack.metric("authsidecar_revocations_total", source="backchannel") == 0


@pytest.mark.parametrize(("body", "content_type"), [
    pytest.param({"token": "x"}, None, id="a-form-without-logout-token"),
    pytest.param({"logout_token": ""}, None, id="an-empty-logout-token"),
    pytest.param(b"logout_token=a&logout_token=b", FORM, id="two-logout-tokens"),
    pytest.param(b'{"logout_token": "x"}', "application/json", id="json-not-a-form"),
])
async def test_a_request_without_one_logout_token_in_a_small_form_is_400(
    make_stack: StackFactory, client: aiohttp.ClientSession, body: Any, content_type: str | None,
) -> None:
    stack = await backchannel_stack(make_stack)
    headers = {"Content-Type": content_type} if content_type else {}
    answer = await client.post(stack.url(PATH), data=body, headers=headers)
    assert answer.status == 400
    assert (await answer.json())["error"] == "invalid_request"


@pytest.mark.parametrize("chunked", [False, True], ids=["with-content-length", "chunked"])
async def test_an_oversized_form_is_400_even_around_a_good_logout_token(
    make_stack: StackFactory, client: aiohttp.ClientSession, chunked: bool,
) -> None:
    stack = await backchannel_stack(make_stack)
    browser, _, session = await signed_in(stack)
    good = stack.provider.logout_token(sid=session["sid"], sub=session["sub"])
    body = f"logout_token={good}&padding={'a' * 20_000}".encode()

    async def stream() -> Any:
        yield body

    answer = await client.post(stack.url(PATH), data=stream() if chunked else body,
                               headers={"Content-Type": FORM})
    assert answer.status == 400
    assert (await dashboard(browser, stack)).status == 200


async def test_back_channel_logout_is_off_unless_configured(
    stack: Stack, client: aiohttp.ClientSession,
) -> None:
    answer = await client.post(stack.url(PATH), data={"logout_token": stack.provider.logout_token(sub="x")})
    assert answer.status == 404


async def test_logs_and_metrics_of_a_back_channel_logout_carry_no_token(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await backchannel_stack(make_stack)
    _, at_provider, session = await signed_in(stack)
    bad = token(nonce="n")(stack, session)
    await client.post(stack.url(PATH), data={"logout_token": bad})
    await at_provider.get(stack.provider.url("/logout"), allow_redirects=False,
                          params={"client_id": "authsidecar-dev", "logout_uri": stack.url("/")})
    logs = stack.logs.getvalue()
    metrics = (await client.get(stack.admin + "/metrics")).content
    scraped = (await metrics.read()).decode()
    for secret in (bad, *bad.split(".")):
        assert secret not in logs
        assert secret not in scraped
    assert "backchannel_logout_refused" in logs
