"""The signed identity assertion: a short-lived ES256 JWT saying who the caller is, for the app to verify.

An app that must not trust a plain ``X-User-Id`` (a misconfigured network policy would let anyone
set it) verifies this header instead, with the public keys at ``/.well-known/authsidecar/jwks.json``.

Claims: ``iss`` (the sidecar's public origin), ``aud`` (the configured app audience), ``sub``,
``email``, ``groups``, ``preferred_username`` when known, ``iat``, ``exp`` (at most ``lifetime``
seconds, never past the access token's own ``exp``) and ``jti`` (unique per signed assertion; a
cached assertion is sent again, so ``jti`` names the assertion, not the request).

Signing costs an ECDSA signature: one per identity is cached (by the object, which the token
validation cache hands back request after request) and reissued once fewer than ``_RENEW_BEFORE``
seconds remain, so the hot path signs at most once per identity per ``lifetime - _RENEW_BEFORE``
seconds. ``kid`` is the key's RFC 7638 thumbprint. The first key signs; a second one is only
published, for rotation (RFC 7517 §5: a JWKS may hold several keys, the verifier picks by ``kid``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

from jwcrypto import jwk, jws

from sidecar.config import AssertionSettings
from sidecar.identity import Clock, Identity

JWKS_PATH: Final = "/.well-known/authsidecar/jwks.json"
ALGORITHM: Final = "ES256"
# Reissued once fewer seconds than this remain: an app allowing a little clock skew never sees an
# assertion expire in flight.
_RENEW_BEFORE: Final = 10
_CACHE_LIMIT: Final = 10000


class AssertionSigner:
    """Signs (and caches) one assertion per identity; publishes the public keys."""

    def __init__(self, settings: AssertionSettings, *, issuer: str, clock: Clock) -> None:
        if settings.signing_key is None or not settings.audience:
            raise ValueError("identity_headers.assertion needs audience and signing_key")
        self.header = settings.header
        self._issuer = issuer
        self._audience = settings.audience
        self._lifetime = settings.lifetime
        self._clock = clock
        self._key = jwk.JWK.from_pem(settings.signing_key.get_secret_value().encode())
        keys = [self._key]
        if settings.secondary_key is not None:
            keys.append(jwk.JWK.from_pem(settings.secondary_key.get_secret_value().encode()))
        self._kid = self._key.thumbprint()
        self._protected = json.dumps({"alg": ALGORITHM, "kid": self._kid, "typ": "JWT"},
                                     separators=(",", ":"))
        # Public members only (export_public drops "d"), each with its thumbprint as kid.
        self.jwks: dict[str, Any] = {"keys": [
            {**key.export_public(as_dict=True), "kid": key.thumbprint(), "use": "sig", "alg": ALGORITHM}
            for key in keys
        ]}
        self.jwks_body = json.dumps(self.jwks, separators=(",", ":")).encode()
        # id(identity) -> (identity, assertion, renew at).
        self._cache: dict[int, tuple[Identity, str, float]] = {}

    def assertion(self, identity: Identity) -> str:
        """The current assertion for ``identity`` (cached until shortly before it expires)."""
        now = self._clock()
        hit = self._cache.get(id(identity))
        # The entry holds the object itself: its id cannot be reused while it is cached.
        if hit is not None and hit[0] is identity and now < hit[2]:
            return hit[1]
        iat = int(now)
        exp = min(iat + self._lifetime, identity.expires_at)
        token = self._sign(identity, iat, exp)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[id(identity)] = (identity, token, max(exp - _RENEW_BEFORE, iat + 1))
        return token

    def _sign(self, identity: Identity, iat: int, exp: int) -> str:
        claims: dict[str, Any] = {
            "iss": self._issuer, "aud": self._audience, "sub": identity.sub,
            "email": identity.email, "groups": list(identity.groups),
            "iat": iat, "exp": exp, "jti": secrets.token_urlsafe(16),
        }
        if identity.username is not None:
            claims["preferred_username"] = identity.username
        token = jws.JWS(json.dumps(claims, separators=(",", ":")))
        token.add_signature(self._key, alg=ALGORITHM, protected=self._protected)
        return str(token.serialize(compact=True))
