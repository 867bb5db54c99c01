"""The cognito-idp JSON API (GlobalSignOut only) and the opt-in /_dev/ test hooks over HTTP."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sidecar.dev.provider_failures import ENDPOINTS, MODES, FailureMode
from sidecar.dev.provider_state import InvalidToken

if TYPE_CHECKING:
    from sidecar.dev.provider import DevProvider, Endpoint, Route

AMZ_JSON = "application/x-amz-json-1.1"
GLOBAL_SIGN_OUT = "AWSCognitoIdentityProviderService.GlobalSignOut"
# Cognito's user APIs called with an access token need this scope in it.
_ADMIN_SCOPE = "aws.cognito.signin.user.admin"


def _amz_error(kind: str, message: str, status: int = 400) -> web.Response:
    body = json.dumps({"__type": kind, "message": message})
    return web.Response(status=status, text=body, content_type=AMZ_JSON)


class CognitoApi:
    """POST / with X-Amz-Target, as AWS's cognito-idp endpoint; unsigned, as GlobalSignOut is."""

    def __init__(self, provider: DevProvider) -> None:
        self.p = provider

    async def dispatch(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        if target != GLOBAL_SIGN_OUT:
            return _amz_error("UnknownOperationException", f"operation {target!r} is not served here")
        if request.content_type != AMZ_JSON:
            return _amz_error("SerializationException", f"Content-Type must be {AMZ_JSON}")
        try:
            payload = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _amz_error("SerializationException", "body is not JSON")
        token = payload.get("AccessToken") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            return _amz_error("InvalidParameterException", "AccessToken is required")
        try:
            claims = self.p.check_access_token(token)
        except InvalidToken as exc:
            return _amz_error("NotAuthorizedException", str(exc))
        if _ADMIN_SCOPE not in str(claims.get("scope", "")).split():
            return _amz_error("NotAuthorizedException", "Access Token does not have required scopes")
        # Every refresh token of the user, and every access/ID token minted from them, stops working.
        self.p.ledger.revoke_user(str(claims.get("username")))
        return web.Response(status=200, text="{}", content_type=AMZ_JSON)


def api_routes(provider: DevProvider) -> list[Route]:
    return [("POST", "/", "global_sign_out", CognitoApi(provider).dispatch)]


def dev_routes(provider: DevProvider) -> list[web.RouteDef]:
    """HTTP twins of the test hooks, for a provider running in another process. Not counted."""

    async def calls(request: web.Request) -> web.Response:
        return web.json_response(dict(provider.calls))

    async def rotate_keys(request: web.Request) -> web.Response:
        keep_old = request.query.get("keep_old", "true").lower() not in ("0", "false", "no")
        return web.json_response({"kid": provider.rotate_keys(keep_old=keep_old)})

    async def failure(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        endpoint = body.get("endpoint") if isinstance(body, dict) else None
        mode = body.get("mode") if isinstance(body, dict) else None
        if endpoint not in ENDPOINTS or mode not in MODES:
            return web.json_response(
                {
                    "error": "expected {endpoint, mode}",
                    "endpoints": sorted(ENDPOINTS),
                    "modes": sorted(MODES),
                },
                status=400,
            )
        try:
            provider.set_failure(cast("Endpoint", endpoint), cast(FailureMode, mode))
        except ValueError as exc:  # a quirk asked of an endpoint it does not apply to
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"endpoint": endpoint, "mode": mode})

    return [
        web.get("/_dev/calls", calls),
        web.post("/_dev/rotate-keys", rotate_keys),
        web.post("/_dev/failure", failure),
    ]
