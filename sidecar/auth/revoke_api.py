"""``POST /admin/revoke`` on the admin listener: end a user's, a session's or a token's access everywhere.

For incident response: ``{"sub": …}`` refuses every token of that user issued until now (a new
login afterwards works), ``{"sid": …}`` every token of one provider session, ``{"jti": …}`` one
access token. The caller proves itself with ``Authorization: Bearer <admin.revoke_token>``
(compared in constant time); without a configured token the route is not registered at all, and it
never exists on the proxied port. Each call writes one audit line (who, what, how many sessions this
process knew) and counts ``authsidecar_revocations_total{source="admin"}``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from sidecar.auth.revocation import Kind, Revocation
from sidecar.observability import Logger

PATH = "/admin/revoke"
_KINDS: tuple[Kind, ...] = ("sub", "sid", "jti")
_MAX_BODY = 4096
_MAX_VALUE = 1024


class RevokeApi:
    def __init__(self, revocation: Revocation, token: str, *, label: str, log: Logger) -> None:
        self._revocation = revocation
        self._token = token.encode()
        self._label = label
        self._log = log

    async def handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request.headers.get("Authorization", "")):
            self._log.warning("admin_revoke_refused", who=self._label, reason="bad_admin_token")
            raise web.HTTPUnauthorized(text="bad_admin_token",
                                       headers={"WWW-Authenticate": 'Bearer realm="authsidecar-admin"'})
        if (request.content_length or 0) > _MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY, actual_size=request.content_length or 0,
                                                text="body_too_large")
        body = await request.content.read(_MAX_BODY + 1)
        kind, value = _target(body)
        revocation = self._revocation
        evicted = await revocation.revoke([revocation.of_subject(kind, value)], "admin")
        # An audit line: who asked, what was revoked, how many of this process's cached sessions
        # it ended (others are refused as they arrive). An identifier, never a token.
        self._log.warning("admin_revoke", who=self._label, kind=kind, value=value, sessions=evicted)
        return web.json_response({"revoked": {kind: value}, "sessions": evicted},
                                 headers={"Cache-Control": "no-store"})

    def _authorized(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or len(given) > 1024:
            return False
        # Bytes: a header with undecodable bytes arrives holding surrogates, which must not raise.
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token)


# The proxied app's RevokeApi, when admin.revoke_token is set (the admin listener registers it).
REVOKE_API = web.AppKey("authsidecar.revoke_api", RevokeApi)


def _target(body: bytes) -> tuple[Kind, str]:
    """The one identifier named by the body, or a 400."""
    if len(body) > _MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY, actual_size=len(body), text="body_too_large")
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text="expected_json") from None
    named = [k for k in _KINDS if isinstance(parsed, dict) and k in parsed]
    if not isinstance(parsed, dict) or len(named) != 1 or len(parsed) != 1:
        raise web.HTTPBadRequest(text="expected_one_of_sub_sid_jti")
    kind = named[0]
    value = parsed[kind]
    if not isinstance(value, str) or not value or len(value) > _MAX_VALUE or not value.isprintable():
        raise web.HTTPBadRequest(text="expected_one_of_sub_sid_jti")
    return kind, value
