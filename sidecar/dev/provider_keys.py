"""The dev provider's signing keys: RS256 keys made with jwcrypto, published as a JWKS."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jwcrypto import jwk, jwt
from jwcrypto.common import JWException

ALG = "RS256"
_KEY_BITS = 2048


def _new_key() -> jwk.JWK:
    """A fresh RSA key whose kid is its RFC 7638 thumbprint, so kids never collide."""
    raw = jwk.JWK.generate(kty="RSA", size=_KEY_BITS)
    params = raw.export(private_key=True, as_dict=True)
    params.update(kid=raw.thumbprint(), alg=ALG, use="sig")
    return jwk.JWK(**params)


class KeyRing:
    """Keys in publication order; the last one signs. Older keys may stay published for verification."""

    def __init__(self) -> None:
        self._keys: list[jwk.JWK] = [_new_key()]

    @property
    def current_kid(self) -> str:
        return str(self._keys[-1]["kid"])

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(str(key["kid"]) for key in self._keys)

    def rotate(self, *, keep_old: bool) -> str:
        """Sign with a new key from now on. With keep_old=False the old keys leave the JWKS too."""
        new = _new_key()
        self._keys = [*self._keys, new] if keep_old else [new]
        return str(new["kid"])

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (RFC 7517 §5): kty, kid, alg, use, n, e; never a private member."""
        return {"keys": [key.export_public(as_dict=True) for key in self._keys]}

    def sign(self, claims: Mapping[str, Any], *, extra_headers: Mapping[str, Any] | None = None) -> str:
        """A compact JWS over `claims`, with Cognito's header: exactly {"kid", "alg"} unless overridden."""
        key = self._keys[-1]
        header: dict[str, Any] = {"kid": key["kid"], "alg": ALG}
        header.update(extra_headers or {})
        token = jwt.JWT(header=header, claims=dict(claims))
        token.make_signed_token(key)
        return str(token.serialize())

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token signed by a published key, or None. Claims are NOT checked here:
        jwcrypto's own checks read the wall clock, and every caller checks against the injected clock."""
        keyset = jwk.JWKSet()
        for key in self._keys:
            keyset.add(key)
        try:
            parsed = jwt.JWT(jwt=token, key=keyset, algs=[ALG], check_claims=False, expected_type="JWS")
            claims = json.loads(parsed.claims)
        except (JWException, ValueError, TypeError):
            return None
        return claims if isinstance(claims, dict) else None
