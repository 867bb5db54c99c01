"""Token verification: claim rules (pure), signatures and headers (real keys), the verified-token cache."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from jwcrypto.common import base64url_encode
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from prometheus_client import CollectorRegistry

from sidecar.config import OidcSettings
from sidecar.errors import TokenRejected
from sidecar.identity import Identity
from sidecar.observability import Metrics
from sidecar.oidc.claims import TokenPolicy, check_claims, identity_from_claims
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.tokens import MAX_TOKEN_LENGTH, TokenValidator
from tests.conftest import FakeClock

from .conftest import (
    CLIENT_ID,
    COOLDOWN,
    ISSUER,
    LEEWAY,
    NOW,
    FakeJwks,
    access_claims,
    b64json,
    id_claims,
    mint,
    reason_of,
)

GENERIC_ISSUER = "https://idp.example.com/realms/main"
API = "https://api.example.com"


def cognito() -> TokenPolicy:
    return TokenPolicy(ISSUER, CLIENT_ID, True, None, frozenset({"RS256"}), LEEWAY)


def generic(access_audience: str | None = None) -> TokenPolicy:
    return TokenPolicy(GENERIC_ISSUER, CLIENT_ID, False, access_audience, frozenset({"RS256"}), LEEWAY)


def oidc_access(**overrides: Any) -> dict[str, Any]:
    """A generic OIDC access token: `aud` instead of Cognito's client_id, no token_use."""
    generic = {"iss": GENERIC_ISSUER, "aud": CLIENT_ID, "client_id": None, "token_use": None}
    return access_claims(**{**generic, **overrides})


def oidc_id(**overrides: Any) -> dict[str, Any]:
    return id_claims(**{"iss": GENERIC_ISSUER, "token_use": None, **overrides})


def verifications(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("authsidecar_token_validation_seconds_count") or 0.0


# ------------------------------------------------------------------------------------ check_claims (pure)

COG, GEN, GEN_API = cognito(), generic(), generic(API)
Row = tuple[TokenPolicy, str, dict[str, Any], str | None, str | None]
CLAIM_CASES: dict[str, Row] = {
    "cognito access token": (COG, "access", access_claims(), None, None),
    "cognito id token": (COG, "id", id_claims(), None, None),
    "wrong issuer": (COG, "access", access_claims(iss="https://evil.example.com"), None, "wrong_issuer"),
    "issuer with trailing slash": (COG, "access", access_claims(iss=ISSUER + "/"), None, "wrong_issuer"),
    "issuer missing": (COG, "access", access_claims(iss=None), None, "missing_claim"),
    "issuer not a string": (COG, "access", access_claims(iss=["x"]), None, "malformed"),
    "expired beyond leeway": (COG, "access", access_claims(exp=NOW - LEEWAY - 1), None, "expired"),
    "expired but within leeway": (COG, "access", access_claims(exp=NOW - LEEWAY), None, None),
    "exp missing": (COG, "access", access_claims(exp=None), None, "missing_claim"),
    "exp a string": (COG, "access", access_claims(exp=str(int(NOW) + 60)), None, "malformed"),
    "exp a boolean": (COG, "access", access_claims(exp=True), None, "malformed"),
    "exp infinite": (COG, "access", access_claims(exp=float("inf")), None, "malformed"),
    "nbf in the future": (COG, "access", access_claims(nbf=NOW + LEEWAY + 1), None, "not_yet_valid"),
    "nbf within leeway": (COG, "access", access_claims(nbf=NOW + LEEWAY), None, None),
    "iat in the future": (COG, "access", access_claims(iat=NOW + LEEWAY + 1), None, "not_yet_valid"),
    "iat a string": (COG, "access", access_claims(iat="yesterday"), None, "malformed"),
    "wrong client_id": (COG, "access", access_claims(client_id="other"), None, "wrong_audience"),
    "client_id missing": (COG, "access", access_claims(client_id=None), None, "missing_claim"),
    "id token used as access token": (COG, "access", id_claims(), None, "wrong_token_use"),
    "access token used as id token": (COG, "id", access_claims(), None, "wrong_token_use"),
    "token_use missing": (COG, "access", access_claims(token_use=None), None, "missing_claim"),
    "cognito id token for another client": (COG, "id", id_claims(aud="other"), None, "wrong_audience"),
    "cognito id token aud list": (COG, "id", id_claims(aud=[CLIENT_ID]), None, None),
    "sub missing": (COG, "access", access_claims(sub=None), None, "missing_claim"),
    "sub empty": (COG, "access", access_claims(sub=""), None, "missing_claim"),
    "sub a number": (COG, "access", access_claims(sub=42), None, "malformed"),
    "nonce matches": (COG, "id", id_claims(nonce="n-0S6_WzA2Mj"), "n-0S6_WzA2Mj", None),
    "nonce differs": (COG, "id", id_claims(nonce="n-0S6_WzA2Mj"), "n-other", "nonce_mismatch"),
    "nonce missing": (COG, "id", id_claims(), "n-0S6_WzA2Mj", "nonce_mismatch"),
    "nonce non-ascii": (COG, "id", id_claims(nonce="é"), "e", "nonce_mismatch"),
    "nonce not a string": (COG, "id", id_claims(nonce=1), "1", "nonce_mismatch"),
    "oidc access aud string": (GEN, "access", oidc_access(), None, None),
    "oidc access aud list": (GEN, "access", oidc_access(aud=["x", CLIENT_ID]), None, None),
    "oidc access aud list without us": (GEN, "access", oidc_access(aud=["x", "y"]), None, "wrong_audience"),
    "oidc access empty aud list": (GEN, "access", oidc_access(aud=[]), None, "wrong_audience"),
    "oidc access aud missing": (GEN, "access", oidc_access(aud=None), None, "missing_claim"),
    "oidc access aud list of numbers": (GEN, "access", oidc_access(aud=[1, 2]), None, "malformed"),
    "oidc access audience configured": (GEN_API, "access", oidc_access(aud=API), None, None),
    "oidc access meant for the client only": (GEN_API, "access", oidc_access(), None, "wrong_audience"),
    "oidc access token_use id": (GEN, "access", oidc_access(token_use="id"), None, "wrong_token_use"),
    "oidc id token": (GEN, "id", oidc_id(), None, None),
    "oidc id token for another client": (GEN, "id", oidc_id(aud="other"), None, "wrong_audience"),
    "oidc id aud list with azp": (GEN, "id", oidc_id(aud=[CLIENT_ID, "x"], azp=CLIENT_ID), None, None),
    "oidc id aud list without azp": (GEN, "id", oidc_id(aud=[CLIENT_ID, "x"]), None, "missing_claim"),
    "oidc id aud list other azp": (GEN, "id", oidc_id(aud=[CLIENT_ID, "x"], azp="x"), None, "wrong_audience"),
    "oidc id single aud other azp": (GEN, "id", oidc_id(azp="x"), None, "wrong_audience"),
}


@pytest.mark.parametrize(
    ("policy", "kind", "claims", "nonce", "reason"), list(CLAIM_CASES.values()), ids=list(CLAIM_CASES)
)
def test_check_claims(
    policy: TokenPolicy, kind: Any, claims: dict[str, Any], nonce: str | None, reason: str | None
) -> None:
    if reason is None:
        check_claims(claims, policy, kind=kind, now=NOW, nonce=nonce)
    else:
        with pytest.raises(TokenRejected) as caught:
            check_claims(claims, policy, kind=kind, now=NOW, nonce=nonce)
        assert caught.value.reason == reason


def test_check_claims_uses_the_given_now_not_the_wall_clock() -> None:
    claims = access_claims(now=1_000.0)  # expired for decades by the wall clock
    check_claims(claims, cognito(), kind="access", now=1_000.0)
    with pytest.raises(TokenRejected) as caught:
        check_claims(claims, cognito(), kind="access", now=1_000.0 + 3600 + LEEWAY + 1)
    assert caught.value.reason == "expired"


# ------------------------------------------------------------------------------------ Identity

IDENTITY_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cognito access token": (
        access_claims(),
        {"username": "alice", "groups": ("admins", "ops"), "scopes": ("openid", "email", "profile")},
    ),
    "cognito:username fallback": (access_claims(username=None, cognito__username="bob"), {"username": "bob"}),
    "groups claim": (access_claims(cognito__groups=None, groups=["g1"]), {"groups": ("g1",)}),
    "scp list": (access_claims(scope=None, scp=["read", "write"]), {"scopes": ("read", "write")}),
    "scp string": (access_claims(scope=None, scp="read write"), {"scopes": ("read", "write")}),
    "no optional claims": (
        access_claims(username=None, cognito__groups=None, scope=None),
        {"username": None, "email": None, "groups": (), "scopes": ()},
    ),
    "email": (access_claims(email="a@example.com"), {"email": "a@example.com"}),
}


@pytest.mark.parametrize(("claims", "expected"), list(IDENTITY_CASES.values()), ids=list(IDENTITY_CASES))
def test_identity_from_claims(claims: dict[str, Any], expected: dict[str, Any]) -> None:
    identity = identity_from_claims(claims)
    assert identity.sub == claims["sub"]
    assert identity.expires_at == claims["exp"]
    assert dict(identity.claims) == claims
    for name, value in expected.items():
        assert getattr(identity, name) == value


@pytest.mark.parametrize(
    "overrides",
    [{"cognito__groups": "admins"}, {"cognito__groups": [1]}, {"username": 7}, {"scope": ["a", 2]}],
    ids=["groups a string", "groups of numbers", "username a number", "scope list of mixed"],
)
def test_identity_refuses_mistyped_claims(overrides: dict[str, Any]) -> None:
    with pytest.raises(TokenRejected) as caught:
        identity_from_claims(access_claims(**overrides))
    assert caught.value.reason == "malformed"


def test_identity_claims_are_read_only() -> None:
    identity = identity_from_claims(access_claims())
    with pytest.raises(TypeError):
        identity.claims["sub"] = "mallory"  # type: ignore[index]


def test_policy_from_settings() -> None:
    cog = TokenPolicy.from_settings(OidcSettings(issuer=ISSUER, client_id=CLIENT_ID))
    assert cog == TokenPolicy(ISSUER, CLIENT_ID, True, None, frozenset({"RS256"}), 60.0)
    oidc = TokenPolicy.from_settings(
        OidcSettings(
            issuer=GENERIC_ISSUER + "/", client_id="c", access_token_audience=API,
            algorithms=("RS256", "ES256"), leeway=5,
        )
    )
    assert oidc == TokenPolicy(GENERIC_ISSUER, "c", False, API, frozenset({"RS256", "ES256"}), 5.0)


# ------------------------------------------------------------------------------------ signatures, headers


def forged(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{base64url_encode(signature) if signature else ''}"


def hs256_with_public_key(rsa: JWK, secret: bytes) -> str:
    """The classic RS256 -> HS256 confusion: an HMAC keyed with the provider's *public* key."""
    signing_input = f"{b64json({'alg': 'HS256', 'kid': rsa['kid'], 'typ': 'JWT'})}.{b64json(access_claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64url_encode(mac)}"


def pem(rsa: JWK) -> bytes:
    return bytes(rsa.export_to_pem(private_key=False))


def tamper(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json(access_claims(sub='mallory'))}.{signature}"


def json_serialized(rsa: JWK) -> str:
    jws = JWS(json.dumps(access_claims()).encode())
    jws.add_signature(rsa, alg="RS256", protected=json.dumps({"alg": "RS256", "kid": "key-a"}))
    return str(jws.serialize())


@dataclass(frozen=True)
class Keys:
    a: JWK  # key-a, published
    b: JWK  # key-b, not published
    ec: JWK  # key-ec, published


def signed(
    k: Keys, *, by: JWK | None = None, alg: str = "RS256", kid: str | None = None, **overrides: Any
) -> str:
    """An access token (signed by key-a unless ``by``) whose only defect is in the arguments."""
    return mint(access_claims(**overrides), key=by or k.a, alg=alg, kid=kid)


def infinite_exp(k: Keys) -> str:
    payload = json.dumps(access_claims(exp=None)).encode()[:-1] + b', "exp": Infinity}'
    return mint(payload, key=k.a)


Build = Callable[[Keys], str]
A_KID = {"alg": "RS256", "kid": "key-a"}
# case -> (expected reason, token builder)
TOKENS: dict[str, tuple[str, Build]] = {
    "garbage cookie value": ("malformed", lambda k: "not-a-jwt"),
    "empty": ("malformed", lambda k: ""),
    "two segments (signature cut off)": ("malformed", lambda k: signed(k).rsplit(".", 1)[0]),
    "four segments": ("malformed", lambda k: signed(k) + ".x"),
    "characters outside base64url": ("malformed", lambda k: "eyJ*.e30.c2ln"),
    "base64 padding": ("malformed", lambda k: signed(k) + "=="),
    "impossible base64 length": ("malformed", lambda k: "eyJhbGciOiJSUzI1NiJ9.e30.A"),
    "non-ascii": ("malformed", lambda k: "é.é.é"),
    "header not json": ("malformed", lambda k: f"{base64url_encode(b'hello')}.e30.c2ln"),
    "header a list": ("malformed", lambda k: f"{b64json(['RS256'])}.e30.c2ln"),
    "header without alg": ("malformed", lambda k: forged({"kid": "key-a"}, access_claims(), b"sig")),
    "alg not a string": ("malformed", lambda k: forged({**A_KID, "alg": ["RS256"]}, access_claims(), b"s")),
    "kid not a string": ("malformed", lambda k: forged({**A_KID, "kid": 7}, access_claims(), b"sig")),
    "crit header": ("malformed", lambda k: forged({**A_KID, "crit": ["exp"]}, access_claims(), b"s")),
    "b64 header": ("malformed", lambda k: forged({**A_KID, "b64": False}, access_claims(), b"s")),
    "json serialization": ("malformed", lambda k: json_serialized(k.a)),
    "huge token": ("malformed", lambda k: signed(k, pad="x" * MAX_TOKEN_LENGTH)),
    "payload not json": ("malformed", lambda k: mint(b"hello, world", key=k.a)),
    "payload a json list": ("malformed", lambda k: mint(b"[1, 2, 3]", key=k.a)),
    "payload with Infinity": ("malformed", infinite_exp),
    "signature truncated": ("bad_signature", lambda k: signed(k)[:-4]),
    "signature empty": ("bad_signature", lambda k: signed(k).rsplit(".", 1)[0] + "."),
    "payload tampered": ("bad_signature", lambda k: tamper(signed(k))),
    "signed by another key under our kid": ("bad_signature", lambda k: signed(k, by=k.b, kid="key-a")),
    "alg none": ("bad_algorithm", lambda k: forged({"alg": "none", "kid": "key-a"}, access_claims())),
    "alg None": ("bad_algorithm", lambda k: forged({"alg": "None", "kid": "key-a"}, access_claims())),
    "alg none without kid": ("bad_algorithm", lambda k: forged({"alg": "none"}, access_claims())),
    "HS256 keyed with the public key PEM": ("bad_algorithm", lambda k: hs256_with_public_key(k.a, pem(k.a))),
    "HS256 keyed with the public JWK": (
        "bad_algorithm", lambda k: hs256_with_public_key(k.a, k.a.export_public().encode())
    ),
    "alg outside allowlist": ("bad_algorithm", lambda k: signed(k, alg="RS512")),
    "ES256 header on an RSA kid": ("bad_algorithm", lambda k: signed(k, by=k.ec, alg="ES256", kid="key-a")),
    "RS256 header on an EC kid": ("bad_algorithm", lambda k: signed(k, kid="key-ec")),
    "no kid": ("unknown_kid", lambda k: mint(access_claims(), key=k.a, header={"kid": None})),
    "expired": ("expired", lambda k: signed(k, exp=NOW - LEEWAY - 1)),
    "not yet valid": ("not_yet_valid", lambda k: signed(k, nbf=NOW + 3600)),
    "issued in the future": ("not_yet_valid", lambda k: signed(k, iat=NOW + 3600)),
    "wrong issuer": ("wrong_issuer", lambda k: signed(k, iss="https://evil.example.com")),
    "wrong client_id": ("wrong_audience", lambda k: signed(k, client_id="someone-else")),
    "id token as access token": ("wrong_token_use", lambda k: mint(id_claims(), key=k.a)),
}



@pytest.mark.parametrize("case", list(TOKENS), ids=list(TOKENS))
async def test_access_rejects_with_reason(
    case: str, validator: TokenValidator, jwks_server: FakeJwks, rsa_a: JWK, rsa_b: JWK, ec_key: JWK
) -> None:
    reason, build = TOKENS[case]
    assert await reason_of(validator.access(build(Keys(rsa_a, rsa_b, ec_key)))) == reason
    assert jwks_server.requests == 1  # none of these is worth a JWKS fetch


async def test_valid_rs256_and_es256_tokens_are_accepted(
    validator: TokenValidator, rsa_a: JWK, ec_key: JWK
) -> None:
    rs = await validator.access(mint(access_claims(), key=rsa_a))
    es = await validator.access(mint(access_claims(sub="other"), key=ec_key, alg="ES256"))
    assert (rs.sub, rs.username, rs.groups) == ("1b2c3d4e-user", "alice", ("admins", "ops"))
    assert es.sub == "other"


async def test_expired_but_within_leeway_is_accepted(validator: TokenValidator, rsa_a: JWK) -> None:
    identity = await validator.access(mint(access_claims(exp=NOW - LEEWAY + 1), key=rsa_a))
    assert identity.expires_at == NOW - LEEWAY + 1


async def test_hs256_refused_even_if_the_policy_lists_it(
    jwks: JwksCache, clock: FakeClock, metrics: Metrics, rsa_a: JWK
) -> None:
    loose = TokenPolicy(ISSUER, CLIENT_ID, True, None, frozenset({"RS256", "HS256"}), LEEWAY)
    validator = TokenValidator(loose, jwks, clock, metrics, cache_size=10)
    assert await reason_of(validator.access(hs256_with_public_key(rsa_a, pem(rsa_a)))) == "bad_algorithm"


async def test_token_reason_never_carries_the_token(validator: TokenValidator, rsa_a: JWK) -> None:
    token = mint(access_claims(client_id="someone-else"), key=rsa_a)
    with pytest.raises(TokenRejected) as caught:
        await validator.access(token)
    signature = token.rsplit(".", 1)[1]
    assert signature not in str(caught.value)
    assert token.split(".")[1] not in repr(caught.value)


# ------------------------------------------------------------------------------------ id tokens


async def test_id_token_checks_nonce_and_returns_claims(validator: TokenValidator, rsa_a: JWK) -> None:
    token = mint(id_claims(nonce="abc"), key=rsa_a)
    claims = await validator.id_token(token, nonce="abc")
    assert claims["email"] == "alice@example.com"
    assert await reason_of(validator.id_token(token, nonce="abd")) == "nonce_mismatch"


async def test_id_token_cache_is_separate_from_access_cache(
    validator: TokenValidator, rsa_a: JWK, registry: CollectorRegistry
) -> None:
    token = mint(id_claims(), key=rsa_a)
    first = await validator.id_token(token)
    assert await validator.id_token(token) is first
    assert verifications(registry) == 1
    assert await reason_of(validator.access(token)) == "wrong_token_use"


async def test_id_token_with_nonce_is_not_cached(
    validator: TokenValidator, rsa_a: JWK, registry: CollectorRegistry
) -> None:
    token = mint(id_claims(nonce="abc"), key=rsa_a)
    await validator.id_token(token, nonce="abc")
    await validator.id_token(token, nonce="abc")
    assert verifications(registry) == 2
    assert len(validator) == 0


# ------------------------------------------------------------------------------------ the cache


async def test_cache_hit_returns_the_same_identity_without_verifying_again(
    validator: TokenValidator, rsa_a: JWK, registry: CollectorRegistry
) -> None:
    token = mint(access_claims(), key=rsa_a)
    assert validator.cached(token) is None
    first = await validator.access(token)
    assert validator.cached(token) is first
    assert await validator.access(token) is first
    assert verifications(registry) == 1
    assert registry.get_sample_value("authsidecar_token_validation_cache_total", {"result": "hit"}) == 2
    assert registry.get_sample_value("authsidecar_token_validation_cache_total", {"result": "miss"}) == 2


async def test_cache_is_a_bounded_lru(
    jwks: JwksCache, clock: FakeClock, metrics: Metrics, policy: TokenPolicy, rsa_a: JWK
) -> None:
    validator = TokenValidator(policy, jwks, clock, metrics, cache_size=2)
    t1, t2, t3 = (mint(access_claims(jti=f"j{i}"), key=rsa_a) for i in range(3))
    await validator.access(t1)
    await validator.access(t2)
    assert validator.cached(t1) is not None  # t1 is now the most recently used
    await validator.access(t3)
    assert len(validator) == 2
    assert validator.cached(t2) is None
    assert validator.cached(t1) is not None
    assert validator.cached(t3) is not None


async def test_cache_size_zero_disables_the_cache(
    jwks: JwksCache,
    clock: FakeClock,
    metrics: Metrics,
    policy: TokenPolicy,
    rsa_a: JWK,
    registry: CollectorRegistry,
) -> None:
    validator = TokenValidator(policy, jwks, clock, metrics, cache_size=0)
    token = mint(access_claims(), key=rsa_a)
    assert await validator.access(token) == await validator.access(token)
    assert verifications(registry) == 2
    assert validator.cached(token) is None


async def test_expired_entries_are_not_served_from_the_cache(
    validator: TokenValidator, clock: FakeClock, rsa_a: JWK
) -> None:
    token = mint(access_claims(exp=int(NOW) + 100), key=rsa_a)
    await validator.access(token)
    clock.advance(100 + LEEWAY)
    assert validator.cached(token) is not None  # still inside the leeway
    clock.advance(1)
    assert validator.cached(token) is None
    assert len(validator) == 0
    assert await reason_of(validator.access(token)) == "expired"


async def test_huge_input_is_not_even_hashed(validator: TokenValidator) -> None:
    assert validator.cached("x" * (MAX_TOKEN_LENGTH + 1)) is None


async def test_removed_key_evicts_what_it_signed(
    validator: TokenValidator, jwks: JwksCache, jwks_server: FakeJwks, rsa_a: JWK, rsa_b: JWK, ec_key: JWK
) -> None:
    by_a = mint(access_claims(), key=rsa_a)
    by_ec = mint(access_claims(), key=ec_key, alg="ES256")
    await validator.access(by_a)
    await validator.access(by_ec)

    jwks_server.keys = [ec_key, rsa_b]  # the provider withdrew key-a
    assert await jwks.refresh() is True

    assert validator.cached(by_a) is None
    assert validator.cached(by_ec) is not None
    assert await reason_of(validator.access(by_a)) == "unknown_kid"


# ------------------------------------------------------------------------------------ JWKS interplay


@pytest.mark.parametrize("callers", [100, 1000])
async def test_rotation_new_kid_fetched_once_under_concurrency(
    callers: int, validator: TokenValidator, jwks_server: FakeJwks, rsa_a: JWK, rsa_b: JWK
) -> None:
    token = mint(access_claims(), key=rsa_b)
    jwks_server.keys = [rsa_a, rsa_b]
    jwks_server.gate.clear()
    jwks_server.requested.clear()
    tasks = [asyncio.create_task(validator.access(token)) for _ in range(callers)]
    await jwks_server.requested.wait()
    jwks_server.gate.set()
    identities = await asyncio.gather(*tasks)
    assert {i.sub for i in identities} == {"1b2c3d4e-user"}
    assert jwks_server.requests == 2


async def test_unknown_kid_one_fetch_per_cooldown(
    validator: TokenValidator, jwks_server: FakeJwks, clock: FakeClock, rsa_a: JWK, rsa_b: JWK
) -> None:
    token = mint(access_claims(), key=rsa_b)
    results = await asyncio.gather(*(validator.access(token) for _ in range(1000)), return_exceptions=True)
    assert all(isinstance(r, TokenRejected) and r.reason == "unknown_kid" for r in results)
    assert jwks_server.requests == 2

    jwks_server.keys = [rsa_a, rsa_b]
    assert await reason_of(validator.access(token)) == "unknown_kid"
    assert jwks_server.requests == 2  # inside the cooldown: no fetch

    clock.advance(COOLDOWN)
    identity = await validator.access(token)
    assert isinstance(identity, Identity)
    assert jwks_server.requests == 3


async def test_jwks_down_at_refresh_keeps_old_keys_working(
    validator: TokenValidator, jwks: JwksCache, jwks_server: FakeJwks, rsa_a: JWK
) -> None:
    jwks_server.mode = "error"
    assert await jwks.refresh() is False
    identity = await validator.access(mint(access_claims(jti="fresh"), key=rsa_a))
    assert identity.username == "alice"


async def test_zero_usable_keys_response_keeps_old_set(
    validator: TokenValidator, jwks: JwksCache, jwks_server: FakeJwks, rsa_a: JWK
) -> None:
    jwks_server.mode, jwks_server.custom = "custom", {"keys": [{"kty": "RSA", "kid": "key-a", "use": "enc"}]}
    assert await jwks.refresh() is False
    assert await validator.access(mint(access_claims(), key=rsa_a))


def test_an_identity_keeps_only_the_claims_it_is_asked_to_keep() -> None:
    claims = {"sub": "s", "exp": 2_000_000_000, "custom:tier": "gold", "jti": "j", "scope": "openid"}
    kept = identity_from_claims(claims, keep={"custom:tier", "absent"})
    assert dict(kept.claims) == {"custom:tier": "gold"}
    assert kept.scopes == ("openid",)
    assert dict(identity_from_claims(claims, keep=set()).claims) == {}
    assert dict(identity_from_claims(claims).claims) == claims
