"""Pure pieces of the dev provider: Cognito-shaped claim sets, PKCE, client credentials parsing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from sidecar.dev.users import DevUser

# RFC 7636 §4.1 (verifier) and §4.2 (S256 challenge: base64url of 32 bytes, no padding).
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


@dataclass(frozen=True, slots=True)
class Grant:
    """What one sign-in event granted: shared by every token minted from it (Cognito's origin_jti)."""

    user: DevUser
    client_id: str
    scope: str
    origin_jti: str
    event_id: str
    auth_time: int
    # The provider session (sign-in form) it came from, named in ID tokens as `sid`.
    sid: str | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_claims(grant: Grant, *, issuer: str, now: int, ttl: int, jti: str) -> dict[str, Any]:
    """Claims of a Cognito user-pool access token, in Cognito's order; cognito:groups only when non-empty."""
    claims: dict[str, Any] = {"sub": grant.user.sub}
    if grant.user.groups:
        claims["cognito:groups"] = list(grant.user.groups)
    claims.update(
        {
            "iss": issuer,
            "version": 2,
            "client_id": grant.client_id,
            "origin_jti": grant.origin_jti,
            "event_id": grant.event_id,
            "token_use": "access",
            "scope": grant.scope,
            "auth_time": grant.auth_time,
            "exp": now + ttl,
            "iat": now,
            "jti": jti,
            "username": grant.user.username,
        }
    )
    return claims


def at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: base64url of the left half of SHA-256 over the access token's ASCII."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


def id_token_claims(
    grant: Grant,
    *,
    issuer: str,
    now: int,
    ttl: int,
    jti: str,
    nonce: str | None = None,
    access_token: str | None = None,
) -> dict[str, Any]:
    """Claims of a Cognito ID token. Custom attributes (`extra_claims`) are added last."""
    claims: dict[str, Any] = {}
    if access_token is not None:
        claims["at_hash"] = at_hash(access_token)
    claims["sub"] = grant.user.sub
    if grant.user.groups:
        claims["cognito:groups"] = list(grant.user.groups)
    claims["email_verified"] = grant.user.email_verified
    claims["iss"] = issuer
    claims["cognito:username"] = grant.user.username
    if nonce is not None:
        claims["nonce"] = nonce
    claims.update(
        {
            "origin_jti": grant.origin_jti,
            "aud": grant.client_id,
            "event_id": grant.event_id,
            "token_use": "id",
            "auth_time": grant.auth_time,
            "name": grant.user.name,
            "exp": now + ttl,
            "iat": now,
            "jti": jti,
            "email": grant.user.email,
        }
    )
    if grant.sid is not None:
        # OIDC Front-/Back-Channel Logout: the session a logout token will name.
        claims["sid"] = grant.sid
    claims.update(grant.user.extra_claims)
    return claims


def is_valid_verifier(verifier: str) -> bool:
    return _VERIFIER.fullmatch(verifier) is not None


def is_valid_s256_challenge(challenge: str) -> bool:
    return _S256_CHALLENGE.fullmatch(challenge) is not None


def pkce_s256_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6: BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge, compared in constant time."""
    if not is_valid_verifier(verifier):
        return False
    computed = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    return hmac.compare_digest(computed.encode("ascii"), challenge.encode("ascii"))


def parse_basic_credentials(authorization: str) -> tuple[str, str] | None:
    """client_secret_basic: RFC 6749 §2.3.1 form-urlencodes id and secret before Base64. None if malformed."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def secrets_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
