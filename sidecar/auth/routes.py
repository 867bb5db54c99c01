"""/auth/login, /auth/callback, /auth/refresh, /auth/logout, /auth/me.

Each handler reads the request, calls the pure modules, the authenticator and the session store,
and returns one response. Errors are raised as :mod:`sidecar.errors` values and turned into HTTP by the edge
middleware; no handler builds an error body.
"""

from __future__ import annotations

import contextlib
import html
import re
from typing import Any

from aiohttp import web

from sidecar.auth import pkce
from sidecar.auth.authenticate import Authenticator
from sidecar.auth.return_to import ReturnToPolicy
from sidecar.auth.session import SessionStore, Tokens
from sidecar.auth.token_digest import refresh_digest
from sidecar.auth.transaction import Transaction, TransactionStore
from sidecar.config import Settings
from sidecar.errors import FlowRejected, ProviderError, TokenRejected
from sidecar.identity import Clock, Identity
from sidecar.keys import ROUTE_CLASS
from sidecar.observability import Logger, Metrics
from sidecar.oidc import shape
from sidecar.oidc.client import OidcClient
from sidecar.oidc.discovery import authorize_url, logout_redirect

# Provider error codes (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6) are short identifiers; anything else
# is reported as "provider_error" so no attacker-chosen text is reflected.
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_PASSTHROUGH_VALUE = re.compile(r"[\x21-\x7e ]{1,256}")

# The routes below and their methods, for a 405 rather than a 404 on a known path.
_METHODS = {
    "/auth/login": ["GET"], "/auth/callback": ["GET"], "/auth/refresh": ["POST"],
    "/auth/logout": ["GET", "POST"], "/auth/me": ["GET"],
}

_CONFIRM_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Sign out?</title></head>
<body><h1>Sign out?</h1><p>Another site asked to sign you out.</p>
<form method="get" action="{action}"><button type="submit">Sign out</button></form>
<p><a href="{app}">Stay signed in</a></p></body></html>
"""


def identity_json(identity: Identity) -> dict[str, Any]:
    return {
        "sub": identity.sub,
        "username": identity.username,
        "email": identity.email,
        "groups": list(identity.groups),
        "scopes": list(identity.scopes),
        "expires_at": identity.expires_at,
    }


class AuthRoutes:
    def __init__(self, *, settings: Settings, authenticator: Authenticator, store: SessionStore,
                 transactions: TransactionStore, return_to: ReturnToPolicy, metrics: Metrics,
                 log: Logger, clock: Clock) -> None:
        self.settings = settings
        self.oidc = settings.oidc
        self.auth = authenticator
        self.provider = authenticator.provider
        self.store = store
        self.transactions = transactions
        self.return_to = return_to
        self.passthrough = frozenset(settings.oidc.passthrough_params)
        self.metrics = metrics
        self.log = log
        self.clock = clock
        # Where the browser lands after logout (validated like return_to at the door).
        self.after_logout = settings.logout.redirect_url or settings.app_url

    def register(self, router: web.UrlDispatcher, me_alias: str | None) -> None:
        router.add_get("/auth/login", self.login)
        router.add_get("/auth/callback", self.callback)
        router.add_post("/auth/refresh", self.refresh)
        router.add_route("GET", "/auth/logout", self.logout)
        router.add_route("POST", "/auth/logout", self.logout)
        router.add_get("/auth/me", self.me)
        if me_alias:
            router.add_get(me_alias, self.me)
        # /auth/* belongs to the sidecar: nothing under it reaches the app.
        router.add_route("*", "/auth/{tail:.*}", self.unknown)

    def _event(self, event: str, outcome: str) -> None:
        self.metrics.flow_events.labels(event, outcome).inc()

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_CLASS] = "auth"
        allowed = _METHODS.get(request.path)
        if allowed is not None:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    # -- login ----------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_CLASS] = "auth"
        meta = self.provider.get().meta
        return_to = self.return_to.resolve(request.query.get("return_to"))
        state, verifier, nonce = pkce.new_state(), pkce.new_verifier(), pkce.new_nonce()
        extra = {
            k: v for k, v in request.query.items()
            if k in self.passthrough and _PASSTHROUGH_VALUE.fullmatch(v)
        }
        location = authorize_url(
            meta, client_id=self.oidc.client_id, redirect_uri=self.settings.callback_url,
            scopes=self.oidc.scopes, state=state, nonce=nonce,
            code_challenge=pkce.challenge_s256(verifier), extra=extra,
        )
        response = web.Response(status=302, headers={"Location": location})
        tx = Transaction(verifier=verifier, nonce=nonce, return_to=return_to, created=self.clock())
        await self.transactions.begin(request, response, state, tx)
        self._event("login", "redirected")
        self.log.info("login_started")
        return response

    # -- callback -------------------------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_CLASS] = "auth"
        query = request.query
        state = query.get("state")
        response = web.Response(status=302)
        # Shapes first: nothing hashes, decrypts or sends on a value that cannot be ours or the
        # provider's (a state we never issued, a code that is not RFC 6749's VSCHARs).
        bad_state = bool(state) and not shape.state(state or "")
        if "error" in query:
            code = query["error"] if _ERROR_CODE.fullmatch(query["error"]) else "provider_error"
            target = self.settings.app_url
            if state and not bad_state:
                with contextlib.suppress(FlowRejected):
                    target = (await self.transactions.take(request, response, state))["return_to"]
            self._event("callback", code)
            self.log.info("login_refused_by_provider", error=code)
            sep = "&" if "?" in target.split("#", 1)[0] else "?"
            base, _, fragment = target.partition("#")
            suffix = f"#{fragment}" if fragment else ""
            response.headers["Location"] = f"{base}{sep}auth_error={code}{suffix}"
            return response
        auth_code = query.get("code")
        if not state:
            self._event("callback", "missing_state")
            raise FlowRejected("missing_state")
        if not auth_code:
            self._event("callback", "missing_code")
            raise FlowRejected("missing_code")
        if bad_state or not shape.auth_code(auth_code):
            self._event("callback", "malformed")
            self.log.info("callback_rejected", reason="malformed")
            raise FlowRejected("malformed")
        try:
            tx = await self.transactions.take(request, response, state)
        except FlowRejected as exc:
            self._event("callback", exc.reason)
            raise
        provider = self.provider.get()
        try:
            tokens = await provider.client.exchange_code(auth_code, tx["verifier"],
                                                         self.settings.callback_url)
        except ProviderError as exc:
            self._event("callback", "provider_error")
            self.log.warning("code_exchange_failed", reason=exc.reason)
            raise
        if tokens.id_token is None:
            raise ProviderError("token_invalid_response", "no id_token")
        try:
            claims = await provider.validator.id_token(tokens.id_token, nonce=tx["nonce"])
            identity = await provider.validator.access(tokens.access_token)
        except TokenRejected as exc:
            self._event("callback", "invalid_token")
            self.log.warning("callback_token_rejected", reason=exc.reason)
            reason = "nonce_mismatch" if exc.reason == "nonce_mismatch" else "invalid_token"
            raise FlowRejected(reason) from None
        # Both tokens must name the same user (OIDC Core §3.1.3.7 checks the ID token; the access
        # token is what every later request is judged by).
        if claims.get("sub") != identity.sub:
            self._event("callback", "subject_mismatch")
            raise FlowRejected("subject_mismatch")
        apply = await self.store.save(request, Tokens(
            access_token=tokens.access_token, access_exp=identity.expires_at, sub=identity.sub,
            id_token=tokens.id_token, refresh_token=tokens.refresh_token, fresh_login=True,
            sid=claims["sid"] if isinstance(claims.get("sid"), str) else None,
        ))
        apply(response)
        response.headers["Location"] = tx["return_to"]
        self._event("callback", "ok")
        self.log.info("login", sub=identity.sub)
        return response

    # -- refresh --------------------------------------------------------------------------------

    async def refresh(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_CLASS] = "auth"
        session = await self.store.load(request)
        if not session.refresh_token:
            self._event("refresh", "missing")
            raise TokenRejected("missing")
        # The CSRF token is bound to the session's user: its (possibly expired) ID token says who.
        sub = await self.auth.session_sub(session)
        self.auth.check_csrf(request, session, sub or "")
        digest = refresh_digest(session.refresh_token)
        await self.auth.check_session_revoked(session, digest, request=request)
        identity, _ = await self.auth.renew(request, session.refresh_token, digest)
        return web.json_response(identity_json(identity))

    # -- me -------------------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_CLASS] = "auth"
        caller = await self.auth.authenticate(request)
        # Personal data: never stored by a cache, also at the alias outside /auth/ (RFC 9111 §5.2.2.5).
        return web.json_response(identity_json(caller.identity), headers={"Cache-Control": "no-store"})

    # -- logout ---------------------------------------------------------------------------------

    async def logout(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_CLASS] = "auth"
        session = await self.store.load(request)
        if request.method == "POST":
            sub = await self.auth.session_sub(session)
            if sub is not None:
                self.auth.check_csrf(request, session, sub)
            else:
                self.auth.check_origin(request)
        elif self._cross_site(request):
            # Another site cannot log users out with a link or an <img>: ask the user.
            self._event("logout", "confirm")
            body = _CONFIRM_PAGE.format(action="/auth/logout", app=html.escape(self.settings.app_url))
            return web.Response(text=body, content_type="text/html")
        # Validated exactly like login's return_to; anything unsafe lands on logout.redirect_url.
        landing = self.return_to.resolve(request.query.get("return_to"), default=self.after_logout)
        outcome = "ok"
        revocation = self.auth.revocation
        # Read before the provider ends the session (a revoked token may no longer verify there).
        revoked = (await revocation.of_session(session.access_token, session.id_token, session.refresh_token)
                   if revocation is not None else [])
        provider = self.provider.current
        if provider is not None:
            outcome = await self._end_at_provider(provider.client, session.access_token,
                                                  session.refresh_token)
        target = None
        if provider is not None:
            target = logout_redirect(provider.meta, client_id=self.oidc.client_id,
                                     post_logout_uri=landing, id_token_hint=session.id_token)
        target = target or landing
        if request.method == "POST" and "application/json" in request.headers.get("Accept", ""):
            response: web.Response = web.json_response({"logout_url": target})
        else:
            response = web.Response(status=303 if request.method == "POST" else 302,
                                    headers={"Location": target})
        if revocation is not None and revoked:
            # Before the answer: a copy of these cookies is refused from now on, everywhere.
            await revocation.revoke(revoked, "logout")
        (await self.store.clear(request))(response)
        self._event("logout", outcome)
        self.log.info("logout", outcome=outcome)
        return response

    async def _end_at_provider(self, client: OidcClient, access_token: str | None,
                               refresh_token: str | None) -> str:
        outcome = "ok"
        # GlobalSignOut first: the access token authorizes it, and revoking the refresh token also
        # revokes the access tokens issued from it (Cognito), after which GlobalSignOut is refused.
        if self.oidc.global_sign_out and access_token:
            try:
                await client.global_sign_out(access_token)
            except ProviderError as exc:
                outcome = "global_sign_out_failed"
                self.log.warning("global_sign_out_failed", reason=exc.reason)
        if refresh_token:
            try:
                await client.revoke(refresh_token)
            except ProviderError as exc:
                outcome = "revoke_failed"
                self.log.warning("revoke_failed", reason=exc.reason)
        return outcome

    def _cross_site(self, request: web.Request) -> bool:
        headers = request.headers
        if headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            return True
        return not self.auth.origins.allows(headers.get("Origin"), None, headers.get("Referer"))
