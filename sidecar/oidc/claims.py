"""What a verified token's claims must say, and the :class:`Identity` they describe: pure functions.

:func:`check_claims` is a function of the claims, the policy and the injected ``now`` (jwcrypto's
own claim checks read the wall clock). A required claim that is absent is ``missing_claim``; one
present with the wrong JSON type is ``malformed``; one with the wrong value gets its specific reason
(``wrong_issuer``, ``wrong_audience``, ``wrong_token_use``, ``expired``, ``not_yet_valid``). The
nonce is the exception: when one is expected, anything but an exact match (absent included) is
``nonce_mismatch``.
"""

from __future__ import annotations

import hmac
import math
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from sidecar.config import OidcSettings
from sidecar.errors import TokenRejected
from sidecar.identity import Identity

Kind = Literal["access", "id"]


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What a token must say to be accepted; built once from the settings."""

    issuer: str
    client_id: str
    cognito: bool
    access_audience: str | None
    algorithms: frozenset[str]
    leeway: float

    @classmethod
    def from_settings(cls, oidc: OidcSettings) -> TokenPolicy:
        return cls(
            issuer=oidc.issuer,
            client_id=oidc.client_id,
            cognito=oidc.is_cognito,
            access_audience=oidc.access_token_audience,
            algorithms=frozenset(oidc.algorithms),
            leeway=oidc.leeway,
        )


def _claim(claims: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = claims.get(name)
    if value is None:
        raise TokenRejected("missing_claim", name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TokenRejected("malformed", name)
    return value


def _time(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    if not required and claims.get(name) is None:
        return None
    value = _claim(claims, name, (int, float))
    if not math.isfinite(value):  # Python's json accepts Infinity / NaN
        raise TokenRejected("malformed", name)
    return float(value)


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = _claim(claims, "aud", (str, list))
    aud = [aud] if isinstance(aud, str) else aud
    if not all(isinstance(a, str) for a in aud):
        raise TokenRejected("malformed", "aud")
    return aud


def _expect(claims: Mapping[str, Any], name: str, value: str, reason: str) -> None:
    if _claim(claims, name, str) != value:
        raise TokenRejected(reason, name)


def check_claims(
    claims: Mapping[str, Any],
    policy: TokenPolicy,
    *,
    kind: Kind,
    now: float,
    nonce: str | None = None,
    allow_expired: bool = False,
) -> None:
    """Raise :class:`TokenRejected` unless ``claims`` are those of a valid ``kind`` token at ``now``.

    Cognito: access tokens carry ``token_use=access`` and ``client_id``; ID tokens ``token_use=id``
    and ``aud``. Generic OIDC: ``aud`` holds the access audience (default the client id); an ID
    token's ``azp``, when present or when ``aud`` has several entries, is the client id (OIDC Core
    §3.1.3.7). ``token_use`` is checked for generic providers too when they send it.
    """
    _expect(claims, "iss", policy.issuer, "wrong_issuer")
    if policy.cognito or "token_use" in claims:
        _expect(claims, "token_use", kind, "wrong_token_use")
    if policy.cognito and kind == "access":
        _expect(claims, "client_id", policy.client_id, "wrong_audience")
    else:
        wanted = (policy.access_audience or policy.client_id) if kind == "access" else policy.client_id
        aud = _audiences(claims)
        if wanted not in aud:
            raise TokenRejected("wrong_audience", "aud")
        if kind == "id" and not policy.cognito and (len(aud) > 1 or "azp" in claims):
            _expect(claims, "azp", policy.client_id, "wrong_audience")
    exp = _time(claims, "exp", required=True)
    assert exp is not None
    if now > exp + policy.leeway and not allow_expired:
        raise TokenRejected("expired")
    for name in ("nbf", "iat"):
        at = _time(claims, name, required=False)
        if at is not None and at > now + policy.leeway:
            raise TokenRejected("not_yet_valid", name)
    if not _claim(claims, "sub", str):
        raise TokenRejected("missing_claim", "sub")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise TokenRejected("nonce_mismatch")


# Space-separated claims (``scope``) as split before: most tokens carry one of a few scope strings.
# Filled from verified tokens only; a provider minting many distinct ones empties it, never grows it.
_SPLIT: dict[str, tuple[str, ...]] = {}
_SPLIT_KEPT = 256


def _strings(claims: Mapping[str, Any], *names: str, split: bool = False) -> tuple[str, ...]:
    """The first present claim of ``names`` as a tuple of strings (a list, or space-separated).

    The strings are interned: every cached identity of a group or scope shares one copy.
    """
    for name in names:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str) and split:
            words = _SPLIT.get(value)
            if words is None:
                words = tuple(sys.intern(v) for v in value.split())
                if len(_SPLIT) >= _SPLIT_KEPT:
                    _SPLIT.clear()
                _SPLIT[value] = words
            return words
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(sys.intern(v) for v in value)
        raise TokenRejected("malformed", name)
    return ()


def _optional_str(claims: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise TokenRejected("malformed", name)
            return value
    return None


_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


def identity_from_claims(claims: Mapping[str, Any], keep: Collection[str] | None = None) -> Identity:
    """The :class:`Identity` an access token describes (claims already checked).

    ``keep``: the claims to carry in ``Identity.claims`` (those rules and extra identity headers
    read); None keeps all. A cached identity then costs hundreds of bytes, not a copy of the token.
    """
    if keep is None:
        kept: Mapping[str, Any] = MappingProxyType(dict(claims))
    else:
        subset = {name: claims[name] for name in keep if name in claims}
        kept = MappingProxyType(subset) if subset else _NO_CLAIMS
    return Identity(
        sub=claims["sub"],
        username=_optional_str(claims, "username", "cognito:username"),
        email=_optional_str(claims, "email"),
        groups=_strings(claims, "cognito:groups", "groups"),
        scopes=_strings(claims, "scope", "scp", split=True),
        expires_at=int(claims["exp"]),
        claims=kept,
    )
