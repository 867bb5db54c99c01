"""OIDC Back-Channel Logout 1.0: ``POST /auth/backchannel-logout`` with a provider-signed logout token.

When a session ends at the provider (its logout page, an administrator, a session timeout), the
provider posts ``logout_token=<JWT>`` here, server to server. The token is validated as §2.6 says
(:func:`check_logout_token`), then the session (``sid``) or, without one, every session of the user
(``sub``) goes on the deny-list (:mod:`sidecar.auth.revocation`) of every process and replica. The
answer is 200, or 400 ``{"error": "invalid_request"}`` (§2.8), never cached.

CSRF does not apply: the double-submit and Origin checks guard what a browser's *cookies* can do,
and this route reads no cookie and authenticates nobody from one. What authenticates the request is
the provider's signature on the token, which a cross-site form cannot produce.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from jwcrypto.common import base64url_decode

from sidecar.auth.revocation import Revocation, Revoked
from sidecar.errors import LogoutTokenRejected, TokenRejected
from sidecar.identity import Clock
from sidecar.keys import ROUTE_CLASS
from sidecar.observability import Logger, Metrics
from sidecar.oidc.provider import ProviderLink
from sidecar.store.base import SharedStore

PATH = "/auth/backchannel-logout"
EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A logout token is a few hundred bytes; the form around it, little more.
MAX_BODY = 16 * 1024
_TYPES = frozenset({"logout+jwt", "application/logout+jwt"})
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class LogoutToken:
    """What a valid logout token names."""

    jti: str
    sid: str | None
    sub: str | None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise LogoutTokenRejected("malformed_claim", name)
    return float(value)


def _identifier(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise LogoutTokenRejected("malformed_claim", name)
    return value


def check_logout_token(claims: Mapping[str, Any], typ: object, *, issuer: str, client_id: str,
                       now: float, leeway: float, max_age: float) -> LogoutToken:
    """§2.6 steps 3-7 on a token whose signature is already verified (step 2); the ``jti`` replay
    check (step 8) is the caller's, across replicas."""
    # §2.4: explicitly typed logout tokens; an untyped one is still accepted (older providers).
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise LogoutTokenRejected("wrong_type")
    if claims.get("iss") != issuer:
        raise LogoutTokenRejected("wrong_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or client_id not in audiences:
        raise LogoutTokenRejected("wrong_audience")
    iat = _number(claims, "iat")
    if iat is None:
        raise LogoutTokenRejected("missing_claim", "iat")
    if iat > now + leeway:
        raise LogoutTokenRejected("issued_in_future")
    if iat < now - max_age - leeway:
        raise LogoutTokenRejected("too_old")
    exp = _number(claims, "exp")  # required since the final version; checked when present
    if exp is not None and now > exp + leeway:
        raise LogoutTokenRejected("expired")
    jti = _identifier(claims, "jti")
    if jti is None:
        raise LogoutTokenRejected("missing_claim", "jti")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(EVENT), dict):
        raise LogoutTokenRejected("wrong_event")
    # §2.4: a nonce is prohibited (it would let an ID token pass for a logout token).
    if "nonce" in claims:
        raise LogoutTokenRejected("nonce_present")
    sid, sub = _identifier(claims, "sid"), _identifier(claims, "sub")
    if sid is None and sub is None:
        raise LogoutTokenRejected("missing_claim", "sid_or_sub")
    return LogoutToken(jti=jti, sid=sid, sub=sub)


class BackChannelLogout:
    def __init__(self, *, provider: ProviderLink, revocation: Revocation, store: SharedStore,
                 client_id: str, leeway: float, max_age: float, clock: Clock, metrics: Metrics,
                 log: Logger) -> None:
        self._provider = provider
        self._revocation = revocation
        self._store = store
        self._client_id = client_id
        self._leeway = leeway
        self._max_age = max_age
        self._clock = clock
        self._metrics = metrics
        self._log = log

    async def handle(self, request: web.Request) -> web.Response:
        request[ROUTE_CLASS] = "auth"
        try:
            logout = await self._validated(request)
        except LogoutTokenRejected as exc:
            self._metrics.flow_events.labels("backchannel_logout", exc.reason).inc()
            self._log.warning("backchannel_logout_refused", reason=exc.reason)
            raise
        revocation = self._revocation
        # §2.7: with a sid, that session; without, every session of the user.
        entry: Revoked = (revocation.of_subject("sid", logout.sid) if logout.sid is not None
                          else revocation.of_subject("sub", logout.sub or ""))
        sessions = await revocation.revoke([entry], "backchannel")
        self._metrics.flow_events.labels("backchannel_logout", "ok").inc()
        self._log.info("backchannel_logout", kind=entry.kind, sessions=sessions)
        return web.Response(status=200, headers={"Cache-Control": "no-store"})

    async def _validated(self, request: web.Request) -> LogoutToken:
        token = await _logout_token(request)
        provider = self._provider.get()
        try:
            claims = await provider.validator.signed_claims(token)
        except TokenRejected as exc:
            raise LogoutTokenRejected(exc.reason) from None
        typ = json.loads(base64url_decode(token.split(".", 1)[0])).get("typ")
        logout = check_logout_token(claims, typ, issuer=provider.meta.issuer, client_id=self._client_id,
                                    now=self._clock(), leeway=self._leeway, max_age=self._max_age)
        # §2.6 step 8, across replicas: a jti is spent once (kept as long as its iat is acceptable).
        key = "bcl-jti:" + hashlib.sha256(f"{provider.meta.issuer}\0{logout.jti}".encode()).hexdigest()
        if not await self._store.add(key, b"1", self._max_age + 2 * self._leeway + 60):
            raise LogoutTokenRejected("replayed_jti")
        return logout


async def _logout_token(request: web.Request) -> str:
    """The one ``logout_token`` field of a small urlencoded form."""
    if request.content_type != _FORM:
        raise LogoutTokenRejected("not_a_form")
    if (request.content_length or 0) > MAX_BODY:
        raise LogoutTokenRejected("body_too_large")
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY or not body.isascii():
        raise LogoutTokenRejected("body_too_large" if len(body) > MAX_BODY else "not_a_form")
    try:
        fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise LogoutTokenRejected("not_a_form") from None
    tokens = [value for name, value in fields if name == "logout_token"]
    if len(tokens) != 1 or not tokens[0] or not tokens[0].isascii():
        raise LogoutTokenRejected("missing_logout_token")
    return tokens[0]
