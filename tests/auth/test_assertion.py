"""The signed identity assertion, checked by an independent library (PyJWT) from the published JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from sidecar.auth.assertion import AssertionSigner
from sidecar.config import AssertionSettings
from sidecar.config_load import parse_settings, redacted
from sidecar.errors import ConfigError
from sidecar.identity import Identity
from tests.conftest import FakeClock

ISSUER = "https://api.example.com"
AUDIENCE = "orders-app"


def pem(curve: ec.EllipticCurve | None = None) -> str:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


KEY_A, KEY_B = pem(), pem()


def signer(clock: FakeClock, key: str = KEY_A, secondary: str | None = None, **extra: Any) -> AssertionSigner:
    settings = AssertionSettings(
        enabled=True, audience=AUDIENCE, signing_key=SecretStr(key),
        secondary_key=SecretStr(secondary) if secondary else None, **extra,
    )
    return AssertionSigner(settings, issuer=ISSUER, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    """Starts at the real time: PyJWT checks ``exp`` against the wall clock."""
    return FakeClock.from_wall_clock()


def identity(clock: FakeClock, expires_in: float = 3600, **changes: Any) -> Identity:
    fields: dict[str, Any] = dict(sub="user-1", username="alice", email="alice@example.com",
                                  groups=("staff", "admins"), scopes=("openid",),
                                  expires_at=int(clock() + expires_in), claims={})
    fields.update(changes)
    return Identity(**fields)


def verify(token: str, jwks: dict[str, Any], audience: str = AUDIENCE) -> dict[str, Any]:
    """What an app does: pick the key by kid from the JWKS, check signature, iss, aud, exp."""
    keys = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], audience=audience, issuer=ISSUER,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    return claims


def test_the_assertion_verifies_with_the_published_keys_and_says_who(clock: FakeClock) -> None:
    start = clock()
    sign = signer(clock)
    claims = verify(sign.assertion(identity(clock)), sign.jwks)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert (claims["sub"], claims["email"], claims["groups"]) == ("user-1", "alice@example.com",
                                                                  ["staff", "admins"])
    assert claims["preferred_username"] == "alice"
    assert claims["iat"] == int(start)
    assert claims["exp"] == int(start) + 60
    assert jwt.get_unverified_header(sign.assertion(identity(clock)))["alg"] == "ES256"


def test_the_jwks_publishes_no_private_member(clock: FakeClock) -> None:
    sign = signer(clock, secondary=KEY_B)
    for key in sign.jwks["keys"]:
        assert set(key) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
        assert "d" not in key


def test_the_kid_is_the_rfc7638_thumbprint(clock: FakeClock) -> None:
    sign = signer(clock)
    key = sign.jwks["keys"][0]
    canonical = json.dumps({m: key[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"),
                           sort_keys=True)
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert key["kid"] == digest


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["admins", "root"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param("tampered", jwt.InvalidSignatureError, id="tampered-payload"),
        pytest.param("expired", jwt.ExpiredSignatureError, id="expired"),
        pytest.param("wrong_aud", jwt.InvalidAudienceError, id="wrong-audience"),
        pytest.param("wrong_key", jwt.InvalidSignatureError, id="signed-by-a-key-not-published"),
    ],
)
def test_a_bad_assertion_is_refused_by_an_independent_verifier(
    clock: FakeClock, case: str, expected: type[Exception]
) -> None:
    if case == "expired":
        clock.advance(-61)  # signed 61 s ago: past its 60 s lifetime now
    sign = signer(clock)
    token = sign.assertion(identity(clock))
    jwks, audience = sign.jwks, AUDIENCE
    if case == "tampered":
        token = _tamper(token)
    elif case == "wrong_aud":
        audience = "another-app"
    elif case == "wrong_key":
        # A key the sidecar does not publish, under the published kid.
        other = signer(clock, key=KEY_B)
        forged = other.assertion(identity(clock))
        _header, payload, signature = forged.split(".")
        token = ".".join([token.split(".")[0], payload, signature])
    with pytest.raises(expected):
        verify(token, jwks, audience)


def test_rotation_keeps_an_old_assertion_verifiable_until_it_expires(clock: FakeClock) -> None:
    old = signer(clock, key=KEY_A)
    before = old.assertion(identity(clock))
    # Rotated: the new key signs, the old one is still published.
    new = signer(clock, key=KEY_B, secondary=KEY_A)
    after = new.assertion(identity(clock))
    assert verify(before, new.jwks)["sub"] == "user-1"
    assert verify(after, new.jwks)["sub"] == "user-1"
    assert jwt.get_unverified_header(before)["kid"] != jwt.get_unverified_header(after)["kid"]
    # And a verifier still holding only the old JWKS cannot be fooled into the new key.
    with pytest.raises(StopIteration):
        verify(after, old.jwks)


def test_one_identity_is_signed_once_until_shortly_before_expiry(clock: FakeClock) -> None:
    clock.advance(-55)  # so that "50 s later" is not in PyJWT's future
    start = clock()
    sign = signer(clock)
    who = identity(clock)
    first = sign.assertion(who)
    clock.advance(49)
    assert sign.assertion(who) == first
    clock.advance(1)
    second = sign.assertion(who)
    assert second != first
    assert verify(second, sign.jwks)["iat"] == int(start) + 50


def test_another_identity_object_gets_its_own_assertion(clock: FakeClock) -> None:
    sign = signer(clock)
    alice, bob = identity(clock), identity(clock, sub="user-2", username="bob")
    assert jwt.decode(sign.assertion(bob), options={"verify_signature": False})["sub"] == "user-2"
    assert jwt.decode(sign.assertion(alice), options={"verify_signature": False})["sub"] == "user-1"


def test_an_assertion_never_outlives_the_access_token(clock: FakeClock) -> None:
    start = clock()
    sign = signer(clock)
    token = sign.assertion(identity(clock, expires_in=20))
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == int(start) + 20


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"enabled": True, "signing_key": KEY_A}, "needs audience", id="no-audience"),
        pytest.param({"enabled": True, "audience": "a"}, "needs audience and signing_key", id="no-key"),
        pytest.param({"signing_key": "not a key"}, "PEM EC P-256", id="not-pem"),
        pytest.param({"signing_key": pem(ec.SECP384R1())}, "PEM EC P-256", id="wrong-curve"),
        pytest.param({"secondary_key": "x"}, "PEM EC P-256", id="bad-secondary"),
        pytest.param({"lifetime": 3600}, "lifetime", id="lifetime-over-60"),
        pytest.param({"header": "Bad Header"}, "not a valid header name", id="bad-header"),
    ],
)
def test_assertion_settings_are_checked_at_the_door(settings: dict[str, Any], message: str) -> None:
    data = {
        "oidc": {"issuer": "https://idp.example.com", "client_id": "c"},
        "callback_url": "https://api.example.com/auth/callback", "app_url": "https://app.example.com/",
        "cookies": {"secret": "s" * 40},
        "identity_headers": {"assertion": settings},
    }
    with pytest.raises(ConfigError) as caught:
        parse_settings(data)
    text = "\n".join(caught.value.messages)
    assert "identity_headers.assertion" in text
    assert message in text
    assert "BEGIN" not in text


def test_the_signing_keys_are_masked_wherever_the_configuration_is_printed() -> None:
    data = {
        "oidc": {"issuer": "https://idp.example.com", "client_id": "c"},
        "callback_url": "https://api.example.com/auth/callback", "app_url": "https://app.example.com/",
        "cookies": {"secret": "s" * 40},
        "identity_headers": {"assertion": {"enabled": True, "audience": "a", "signing_key": KEY_A,
                                           "secondary_key": KEY_B}},
    }

    printed = json.dumps(redacted(parse_settings(data)))

    assert "PRIVATE KEY" not in printed
    assert KEY_A.splitlines()[1] not in printed


def test_upstream_null_from_the_environment_means_no_upstream() -> None:
    data = {
        "oidc": {"issuer": "https://idp.example.com", "client_id": "c"},
        "callback_url": "https://api.example.com/auth/callback", "app_url": "https://app.example.com/",
        "cookies": {"secret": "s" * 40}, "upstream": {"url": "http://127.0.0.1:3000"},
    }

    assert parse_settings(data).upstream is not None
    assert parse_settings(data, {"AUTHSIDECAR_UPSTREAM": "null"}).upstream is None
