"""Back-channel endpoints of the dev provider: token, revoke, userInfo.

Errors are raised as OAuthError and answered by the provider's instrumentation as RFC 6749 §5.2 JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar.dev.provider_authorize import browser_routes
from sidecar.dev.provider_claims import parse_basic_credentials, pkce_s256_matches, secrets_equal
from sidecar.dev.provider_state import InvalidToken, OAuthError

if TYPE_CHECKING:
    from multidict import MultiDictProxy

    from sidecar.dev.provider import DevProvider, Route

_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Scopes that open userInfo in Cognito.
_USERINFO_SCOPES = frozenset({"openid", "aws.cognito.signin.user.admin"})
_ADMIN_SCOPE = "aws.cognito.signin.user.admin"


def _field(form: MultiDictProxy[Any], name: str, *, required: bool = False) -> str | None:
    values = [v for v in form.getall(name, []) if isinstance(v, str)]
    if len(values) > 1:
        raise OAuthError("invalid_request", f"{name} was sent more than once (RFC 6749 §3.2)")
    if not values and required:
        raise OAuthError("invalid_request", f"{name} is required")
    return values[0] if values else None


class BackChannelEndpoints:
    def __init__(self, provider: DevProvider) -> None:
        self.p = provider
        self.config = provider.config

    def routes(self) -> list[Route]:
        return [
            ("POST", "/oauth2/token", "token", self.token),
            ("POST", "/oauth2/revoke", "revoke", self.revoke),
            ("GET", "/oauth2/userInfo", "userinfo", self.userinfo),
            ("POST", "/oauth2/userInfo", "userinfo", self.userinfo),
        ]

    async def _form(self, request: web.Request) -> MultiDictProxy[Any]:
        if request.content_type != _FORM:
            raise OAuthError("invalid_request", f"Content-Type must be {_FORM}")
        return await request.post()

    def authenticate_client(self, request: web.Request, form: MultiDictProxy[Any]) -> str:
        """client_secret_basic or client_secret_post when the client has a secret; client_id alone if not.

        RFC 6749 §2.3: a client MUST NOT use more than one authentication method in a request.
        Cognito answers invalid_client with 400, not RFC 6749's 401.
        """
        header = request.headers.get("Authorization")
        body_id = _field(form, "client_id")
        body_secret = _field(form, "client_secret")
        secret: str | None
        if header is not None:
            credentials = parse_basic_credentials(header)
            if credentials is None:
                raise OAuthError("invalid_client", "Authorization header is not valid client_secret_basic")
            if body_secret is not None:
                raise OAuthError("invalid_request", "client_secret in both the header and the body")
            client_id, secret = credentials
            if body_id is not None and body_id != client_id:
                raise OAuthError("invalid_client", "client_id in the body differs from the Basic header")
        else:
            client_id, secret = body_id or "", body_secret
        if not client_id:
            raise OAuthError("invalid_client", "client_id is required")
        if client_id != self.config.client_id:
            raise OAuthError("invalid_client", "client_id is not a registered app client")
        expected = self.config.client_secret
        if expected is None:
            if secret:
                raise OAuthError("invalid_client", "this app client has no secret; do not send one")
        elif secret is None:
            raise OAuthError(
                "invalid_client", "client has a secret: use client_secret_basic or client_secret_post"
            )
        elif not secrets_equal(secret, expected):
            raise OAuthError("invalid_client", "client secret is wrong")
        return client_id

    async def token(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        client_id = self.authenticate_client(request, form)
        grant_type = _field(form, "grant_type", required=True)
        if grant_type == "authorization_code":
            body = self._exchange_code(form, client_id)
        elif grant_type == "refresh_token":
            body = self._refresh(form, client_id)
        else:
            raise OAuthError("unsupported_grant_type", "use authorization_code or refresh_token")
        return web.json_response(body, headers=_NO_STORE)

    def _exchange_code(self, form: MultiDictProxy[Any], client_id: str) -> dict[str, Any]:
        code = _field(form, "code", required=True) or ""
        redirect_uri = _field(form, "redirect_uri", required=True) or ""
        verifier = _field(form, "code_verifier")
        now = self.p.now()
        record = self.p.ledger.redeem_code(code, client_id, redirect_uri, now)
        if record.code_challenge is not None:
            # RFC 7636 §4.6; the code is already burnt, so a wrong guess costs the attacker the code.
            if verifier is None:
                raise OAuthError("invalid_grant", "code_verifier is required: the request used PKCE")
            if not pkce_s256_matches(verifier, record.code_challenge):
                raise OAuthError("invalid_grant", "code_verifier does not match code_challenge")
        elif verifier is not None:
            raise OAuthError("invalid_grant", "code_verifier sent, but the authorization request had no PKCE")
        family = self.p.ledger.open_family(record.grant, refresh_ttl=self.config.refresh_ttl, now=now)
        return self.p.token_response(family, nonce=record.nonce, refresh_token=family.refresh_token)

    def _refresh(self, form: MultiDictProxy[Any], client_id: str) -> dict[str, Any]:
        refresh_token = _field(form, "refresh_token", required=True) or ""
        config = self.config
        now = self.p.now()
        grace = config.refresh_reuse_grace if config.rotate_refresh_tokens else None
        family = self.p.ledger.family_of_refresh(refresh_token, client_id, now, reuse_grace=grace)
        # Cognito without rotation answers with no refresh_token field at all.
        rotated = self.p.ledger.rotate_refresh(family, now) if config.rotate_refresh_tokens else None
        return self.p.token_response(family, nonce=None, refresh_token=rotated)

    async def revoke(self, request: web.Request) -> web.Response:
        """RFC 7009 in Cognito's shape: revokes a refresh token and every token of its family."""
        form = await self._form(request)
        client_id = self.authenticate_client(request, form)
        token = _field(form, "token", required=True) or ""
        if token.count(".") == 2:
            # Cognito revokes refresh tokens only; a JWT here is an access or ID token.
            raise OAuthError("unsupported_token_type", "only refresh tokens can be revoked")
        origin = self.p.ledger.refresh_index.get(token)
        family = self.p.ledger.families.get(origin) if origin is not None else None
        if family is not None:
            if family.grant.client_id != client_id:
                raise OAuthError("unauthorized_client", "the token was not issued to this client")
            self.p.ledger.revoke_family(family.grant.origin_jti)
        # RFC 7009 §2.2: an unknown or already revoked token is answered with 200 too.
        return web.Response(status=200, headers=_NO_STORE)

    async def userinfo(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            # RFC 6750 §3.1: no credentials -> a bare challenge, no error code.
            return _bearer_error(401, None, "Bearer access token required")
        try:
            claims = self.p.check_access_token(token.strip())
        except InvalidToken as exc:
            return _bearer_error(401, "invalid_token", str(exc))
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes & _USERINFO_SCOPES:
            return _bearer_error(403, "insufficient_scope", "needs the openid scope")
        user = self.p.user(str(claims.get("username")))
        if user is None:
            return _bearer_error(401, "invalid_token", "User does not exist")
        # Cognito's userInfo answers with strings only: email_verified is "true" / "false".
        body: dict[str, Any] = {"sub": user.sub}
        if "email" in scopes or _ADMIN_SCOPE in scopes:
            body["email_verified"] = "true" if user.email_verified else "false"
            body["email"] = user.email
        body["username"] = user.username
        if "profile" in scopes or _ADMIN_SCOPE in scopes:
            body["name"] = user.name
            body.update({key: str(value) for key, value in user.extra_claims.items()})
        return web.json_response(body, headers=_NO_STORE)


def _bearer_error(status: int, error: str | None, description: str) -> web.Response:
    challenge = "Bearer" if error is None else f'Bearer error="{error}", error_description="{description}"'
    body = {"error": error or "invalid_request", "error_description": description}
    return web.json_response(body, status=status, headers={"WWW-Authenticate": challenge, **_NO_STORE})


def oauth_routes(provider: DevProvider) -> list[Route]:
    return [*browser_routes(provider), *BackChannelEndpoints(provider).routes()]
