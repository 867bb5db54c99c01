"""Access tokens at the proxied port, over real HTTP: every way a token can be wrong, and the JWKS.

Each bad token is sent both as the ``access_token`` cookie and as ``Authorization: Bearer``; the
answer is always a 401 with a fixed JSON body naming the reason, never a 500 and never the app.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS

from tests.flows.conftest import Stack, StackFactory

API = "/api/items"
ACCESS_TTL = 3600
LEEWAY = 60
COOLDOWN = 60
INVALID = 'Bearer realm="authsidecar", error="invalid_token"'
DECISIONS = "authsidecar_auth_decisions_total"
# An escaped "&" in the query must come back escaped, or the app sees another parameter.
RETURN_PATH = "/reports/q3?tab=2&q=a%26b"


# -- token forgery kit ------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


@functools.cache
def stranger_key() -> JWK:
    """An RSA key the provider never published (generated once: key generation is slow)."""
    return JWK.generate(kty="RSA", size=2048)


def sign_with_stranger(claims: dict[str, Any], kid: str, **header: Any) -> str:
    jws = JWS(json.dumps(claims).encode())
    protected = json.dumps({"alg": "RS256", "kid": kid, **header})
    jws.add_signature(stranger_key(), alg="RS256", protected=protected)
    return str(jws.serialize(compact=True))


def stranger_with_embedded_key(stack: Stack) -> str:
    """RFC 7515 §4.1.3 ``jwk``: a token carrying its own verification key must not be believed."""
    claims = claims_of(stack.provider.mint_access_token("alice"))
    embedded = stranger_key().export_public(as_dict=True)
    return sign_with_stranger(claims, stack.provider.keys.current_kid, jwk=embedded)


def stranger_with_key_url(stack: Stack) -> str:
    """RFC 7515 §4.1.2 ``jku``: keys are fetched from the configured provider only."""
    claims = claims_of(stack.provider.mint_access_token("alice"))
    return sign_with_stranger(claims, stranger_key().thumbprint(), jku="http://127.0.0.1:1/jwks.json")


def provider_public_pem(stack: Stack) -> bytes:
    public = stack.provider.keys.jwks()["keys"][-1]
    pem: bytes = JWK(**public).export_to_pem()
    return pem


def hs256_with_public_key(stack: Stack) -> str:
    """RFC 8725 §2.1: the classic confusion, HMAC keyed with the provider's (public) RSA key."""
    header = b64json({"alg": "HS256", "typ": "JWT", "kid": stack.provider.keys.current_kid})
    payload = b64json(claims_of(stack.provider.mint_access_token("alice")))
    mac = hmac.new(provider_public_pem(stack), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def critical_extension(stack: Stack) -> str:
    """RFC 7515 §4.1.11: an extension we do not understand, marked critical, is refused."""
    _header, payload, signature = stack.provider.mint_access_token("alice").split(".")
    header = b64json({"alg": "RS256", "kid": stack.provider.keys.current_kid, "crit": ["x-policy"],
                      "x-policy": "strict"})
    return f"{header}.{payload}.{signature}"


def alg_none(stack: Stack) -> str:
    header = b64json({"alg": "none", "kid": stack.provider.keys.current_kid})
    return f"{header}.{b64json(claims_of(stack.provider.mint_access_token('alice')))}."


def escalated(stack: Stack) -> str:
    """bob's genuine token with its payload edited to put him in the admins group."""
    header, _payload, signature = stack.provider.mint_access_token("bob").split(".")
    claims = claims_of(stack.provider.mint_access_token("bob"))
    claims["cognito:groups"] = ["admins"]
    return f"{header}.{b64json(claims)}.{signature}"


def expired(stack: Stack) -> str:
    token = stack.provider.mint_access_token("alice")
    stack.clock.advance(ACCESS_TTL + LEEWAY + 1)
    return token


def truncated_in_payload(stack: Stack) -> str:
    token = stack.provider.mint_access_token("alice")
    return token[: token.index(".") + 20]


BAD_TOKENS = [
    pytest.param(lambda s: "this-is-not-a-jwt", "malformed", id="garbage"),
    pytest.param(lambda s: "a.b.c.d.e", "malformed", id="five-segments"),
    pytest.param(truncated_in_payload, "malformed", id="truncated-in-payload"),
    pytest.param(lambda s: s.provider.mint_access_token("alice")[:-40], "bad_signature",
                 id="truncated-signature"),
    pytest.param(lambda s: sign_with_stranger(claims_of(s.provider.mint_access_token("alice")),
                                              s.provider.keys.current_kid),
                 "bad_signature", id="other-key-same-kid"),
    pytest.param(escalated, "bad_signature", id="payload-edited-after-signing"),
    pytest.param(stranger_with_embedded_key, "bad_signature", id="embedded-jwk-header"),
    pytest.param(stranger_with_key_url, "unknown_kid", id="jku-header"),
    pytest.param(critical_extension, "malformed", id="crit-header"),
    pytest.param(alg_none, "bad_algorithm", id="alg-none"),
    pytest.param(hs256_with_public_key, "bad_algorithm", id="hs256-keyed-with-public-key"),
    pytest.param(lambda s: sign_with_stranger(claims_of(s.provider.mint_access_token("alice")),
                                              "no-such-kid"),
                 "unknown_kid", id="unknown-kid"),
    pytest.param(lambda s: s.provider.sign(claims_of(s.provider.mint_access_token("alice")),
                                           extra_headers={"kid": None}),
                 "unknown_kid", id="no-kid"),
    pytest.param(expired, "expired", id="expired-beyond-leeway"),
    pytest.param(lambda s: s.provider.mint_access_token("alice", nbf=int(s.clock()) + 3600),
                 "not_yet_valid", id="nbf-in-the-future"),
    pytest.param(lambda s: s.provider.mint_access_token("alice", iat=int(s.clock()) + 3600),
                 "not_yet_valid", id="iat-in-the-future"),
    pytest.param(lambda s: s.provider.mint_access_token("alice", iss="https://evil.example.com"),
                 "wrong_issuer", id="wrong-issuer"),
    pytest.param(lambda s: s.provider.mint_access_token("alice", client_id="another-client"),
                 "wrong_audience", id="wrong-client-id"),
    pytest.param(lambda s: s.provider.mint_id_token("alice"), "wrong_token_use",
                 id="id-token-as-access-token"),
    pytest.param(lambda s: s.provider.mint_access_token("alice", sub=None), "missing_claim", id="no-sub"),
    pytest.param(lambda s: s.provider.mint_access_token("alice", exp=None), "missing_claim", id="no-exp"),
    pytest.param(lambda s: s.provider.mint_access_token("alice", exp="tomorrow"), "malformed",
                 id="exp-not-a-number"),
]

VIAS = [pytest.param("cookie", id="cookie"), pytest.param("bearer", id="bearer")]


def credentials(token: str, via: str) -> dict[str, str]:
    if via == "cookie":
        return {"Cookie": f"access_token={token}"}
    return {"Authorization": f"Bearer {token}"}


async def get(client: aiohttp.ClientSession, stack: Stack, token: str, via: str = "bearer",
              path: str = API, **headers: str) -> aiohttp.ClientResponse:
    async with client.get(stack.url(path), headers={**credentials(token, via), **headers},
                          allow_redirects=False) as resp:
        await resp.read()
        return resp


async def assert_unauthorized(resp: aiohttp.ClientResponse, reason: str) -> None:
    assert resp.status == 401
    assert await resp.json() == {"error": "unauthorized", "reason": reason}
    assert resp.headers["WWW-Authenticate"] == INVALID
    assert resp.headers["Cache-Control"] == "no-store"


# -- the table --------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize(("make_token", "reason"), BAD_TOKENS)
async def test_a_bad_access_token_is_refused_with_401_naming_the_reason_and_never_reaches_the_app(
    stack: Stack, client: aiohttp.ClientSession, make_token: Callable[[Stack], str], reason: str, via: str
) -> None:
    token = make_token(stack)

    resp = await get(client, stack, token, via)

    await assert_unauthorized(resp, reason)
    assert stack.upstream_stats.total == 0
    assert stack.metric(DECISIONS, outcome=reason) == 1
    assert stack.metric(DECISIONS, outcome="ok") == 0


@pytest.mark.parametrize("via", VIAS)
async def test_a_valid_token_reaches_the_app_as_its_user(
    stack: Stack, client: aiohttp.ClientSession, via: str
) -> None:
    resp = await get(client, stack, stack.provider.mint_access_token("bob"), via)

    assert resp.status == 200
    echo = await resp.json()
    assert echo["identity"]["X-User-Id"] == stack.provider.user("bob").sub  # type: ignore[union-attr]
    assert stack.metric(DECISIONS, outcome="ok") == 1


def expired_within_leeway(stack: Stack) -> str:
    token = stack.provider.mint_access_token("alice")
    stack.clock.advance(ACCESS_TTL + LEEWAY - 5)
    return token


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(expired_within_leeway, id="expired-within-leeway"),
        pytest.param(lambda s: s.provider.mint_access_token("alice", nbf=int(s.clock()) + LEEWAY - 5),
                     id="nbf-within-leeway"),
        pytest.param(lambda s: s.provider.mint_access_token("alice", iat=int(s.clock()) + LEEWAY - 5),
                     id="iat-within-leeway"),
        pytest.param(lambda s: s.provider.mint_access_token("alice", unknown_claim={"x": [1]}),
                     id="unknown-extra-claim"),
    ],
)
async def test_a_token_within_the_clock_skew_leeway_is_accepted(
    stack: Stack, client: aiohttp.ClientSession, make_token: Callable[[Stack], str], via: str
) -> None:
    assert (await get(client, stack, make_token(stack), via)).status == 200


async def test_a_cached_token_is_refused_once_it_expires(stack: Stack, client: aiohttp.ClientSession) -> None:
    token = stack.provider.mint_access_token("alice")
    assert (await get(client, stack, token)).status == 200

    stack.clock.advance(ACCESS_TTL + LEEWAY + 1)

    await assert_unauthorized(await get(client, stack, token), "expired")


async def test_no_credentials_get_401_missing_without_an_invalid_token_error(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    async with client.get(stack.url(API)) as resp:
        assert resp.status == 401
        assert await resp.json() == {"error": "unauthorized", "reason": "missing"}
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="authsidecar"'
    assert stack.metric(DECISIONS, outcome="missing") == 1
    assert stack.upstream_stats.total == 0


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("Bearer    ", id="scheme-and-spaces"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic-scheme"),
        pytest.param("Token abc.def.ghi", id="unknown-scheme"),
    ],
)
async def test_an_authorization_header_without_a_bearer_token_counts_as_no_credentials(
    stack: Stack, client: aiohttp.ClientSession, header: str
) -> None:
    async with client.get(stack.url(API), headers={"Authorization": header}) as resp:
        assert resp.status == 401
        assert (await resp.json())["reason"] == "missing"


async def test_bearer_tokens_are_ignored_when_accept_bearer_is_off(
    make_stack: StackFactory, client: aiohttp.ClientSession
) -> None:
    stack = await make_stack(tokens={"accept_bearer": False})
    token = stack.provider.mint_access_token("alice")

    async with client.get(stack.url(API), headers=credentials(token, "bearer")) as resp:
        assert resp.status == 401
        assert (await resp.json())["reason"] == "missing"
    assert (await get(client, stack, token, "cookie")).status == 200


# -- browsers are sent to log in ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Sec-Fetch-Mode": "navigate"}, id="sec-fetch-mode-navigate"),
        pytest.param({"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, id="accept-html"),
        pytest.param({"Accept": "text/html", "Cookie": "access_token=garbage"}, id="accept-html-bad-cookie"),
    ],
)
async def test_a_top_level_navigation_without_a_valid_token_is_redirected_to_login(
    stack: Stack, client: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with client.get(stack.url(RETURN_PATH), headers=headers, allow_redirects=False) as resp:
        assert resp.status == 302
        location = urlsplit(resp.headers["Location"])
    assert location.path == "/auth/login"
    assert parse_qs(location.query) == {"return_to": [stack.url(RETURN_PATH)]}
    assert resp.headers["Location"].endswith(quote(stack.url(RETURN_PATH), safe=""))
    assert stack.upstream_stats.total == 0


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("GET", {"Sec-Fetch-Mode": "cors", "Accept": "text/html"}, id="fetch-mode-cors-wins"),
        pytest.param("GET", {"Accept": "application/json"}, id="json-client"),
        pytest.param("POST", {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}, id="form-post"),
    ],
)
async def test_a_request_that_is_not_a_navigation_gets_401_rather_than_a_redirect(
    stack: Stack, client: aiohttp.ClientSession, method: str, headers: dict[str, str]
) -> None:
    async with client.request(method, stack.url(API), headers=headers, allow_redirects=False) as resp:
        assert resp.status == 401
        assert "Location" not in resp.headers


# -- the signing keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "distinct_kids", [pytest.param(False, id="same-kid"), pytest.param(True, id="a-new-kid-each")]
)
async def test_a_hundred_concurrent_unknown_kids_cost_exactly_one_jwks_fetch(
    stack: Stack, client: aiohttp.ClientSession, distinct_kids: bool
) -> None:
    claims = claims_of(stack.provider.mint_access_token("alice"))
    tokens = [sign_with_stranger(claims, f"rogue-{i if distinct_kids else 0}") for i in range(100)]
    before = stack.provider.calls["jwks"]

    responses = await asyncio.gather(*(get(client, stack, token) for token in tokens))

    assert [r.status for r in responses] == [401] * 100
    assert stack.provider.calls["jwks"] - before == 1
    assert stack.metric(DECISIONS, outcome="unknown_kid") == 100
    assert stack.metric("authsidecar_jwks_refreshes_total", reason="unknown_kid", result="ok") == 1


@pytest.mark.parametrize(
    ("mode", "oidc"),
    [
        pytest.param("500", {}, id="http-500"),
        pytest.param("garbage", {}, id="garbage-body"),
        pytest.param("timeout", {"timeout": 0.5}, id="hangs"),
    ],
)
async def test_the_last_good_keys_keep_working_when_the_jwks_endpoint_fails_at_refresh(
    make_stack: StackFactory, client: aiohttp.ClientSession, mode: str, oidc: dict[str, Any]
) -> None:
    stack = await make_stack(oidc=oidc)
    stack.provider.set_failure("jwks", mode)  # type: ignore[arg-type]

    assert await stack.jwks.refresh() is False

    # A token never seen before: verified with the kept key, not answered from the cache.
    assert (await get(client, stack, stack.provider.mint_access_token("alice"))).status == 200
    assert stack.metric("authsidecar_jwks_refreshes_total", reason="manual", result="error") == 1
    assert any(line["event"] == "jwks_refresh_failed" for line in stack.log_lines())
    async with client.get(stack.admin + "/readyz") as ready:
        assert ready.status == 200
    stack.provider.set_failure("jwks", "ok")


async def test_a_rotated_key_is_picked_up_by_an_unknown_kid_fetch_once_the_cooldown_is_over(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    claims = claims_of(stack.provider.mint_access_token("alice"))
    # A client inventing a kid spends the unknown-kid fetch...
    await assert_unauthorized(await get(client, stack, sign_with_stranger(claims, "invented")), "unknown_kid")
    stack.provider.rotate_keys()
    fresh = stack.provider.mint_access_token("alice")
    fetches = stack.provider.calls["jwks"]

    # ...so the genuinely new kid waits for the cooldown, without another fetch meanwhile.
    await assert_unauthorized(await get(client, stack, fresh), "unknown_kid")
    assert stack.provider.calls["jwks"] == fetches

    stack.clock.advance(COOLDOWN + 1)
    assert (await get(client, stack, fresh)).status == 200
    assert stack.provider.calls["jwks"] == fetches + 1


async def test_a_rotated_key_is_used_without_any_fetch_after_a_refresh(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    stack.provider.rotate_keys()
    assert await stack.jwks.refresh() is True
    fetches = stack.provider.calls["jwks"]

    assert (await get(client, stack, stack.provider.mint_access_token("alice"))).status == 200
    assert stack.provider.calls["jwks"] == fetches


async def test_a_token_of_a_withdrawn_key_is_refused_even_after_it_was_accepted_and_cached(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    old = stack.provider.mint_access_token("alice")
    assert (await get(client, stack, old)).status == 200

    stack.provider.rotate_keys(keep_old=False)
    assert await stack.jwks.refresh() is True

    await assert_unauthorized(await get(client, stack, old), "unknown_kid")
    assert (await get(client, stack, stack.provider.mint_access_token("alice"))).status == 200


async def test_a_signed_claim_that_utf8_cannot_carry_is_a_401_not_a_500(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    # The provider signed a lone surrogate (JSON "\ud800") into the username: no identity header
    # could carry it, so the token is refused as malformed before anything is forwarded.
    token = stack.provider.mint_access_token("alice", username="alice\ud800")

    async with client.get(stack.url(API), headers=credentials(token, "bearer")) as resp:
        assert resp.status == 401
        assert (await resp.json())["reason"] == "malformed"
