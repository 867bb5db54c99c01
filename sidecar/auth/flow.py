"""The browser session service: everything the /auth routes and the proxy gate share.

Reading the session from cookies, renewing it with the refresh token (single-flight), writing the
new cookies onto whatever response goes out, and the CSRF / Origin checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from sidecar.auth.cookies import CookiePolicy
from sidecar.auth.csrf import CsrfTokens, OriginPolicy
from sidecar.auth.refresh import SingleFlight
from sidecar.auth.return_to import ReturnToPolicy
from sidecar.auth.session import SessionCookies
from sidecar.auth.transaction import TransactionStore, derive_key
from sidecar.config import Settings
from sidecar.errors import CsrfRejected, ProviderError, RefreshFailed, TokenRejected
from sidecar.identity import Identity
from sidecar.keys import RESPONSE_HOOKS
from sidecar.oidc.client import OidcClient, TokenSet
from sidecar.oidc.tokens import TokenValidator
from sidecar.runtime import Runtime

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ENRICHED_MAX = 10000


@dataclass(frozen=True, slots=True)
class Renewal:
    """The outcome of one refresh, shared by every caller that waited on it."""

    identity: Identity
    tokens: TokenSet


class SessionService:
    def __init__(self, settings: Settings, runtime: Runtime, self_origin: str,
                 cookie_reader: Callable[[web.Request], Mapping[str, str]]) -> None:
        self.settings = settings
        self.runtime = runtime
        self.cookie_reader = cookie_reader
        secret = (settings.cookies.secret.get_secret_value() if settings.cookies.secret else "").encode()
        self.policy = CookiePolicy(settings.cookies, settings.csrf)
        self.csrf = CsrfTokens(derive_key(secret, b"authsidecar/csrf-key/v1"))
        self.cookies = SessionCookies(self.policy, self.csrf, runtime.clock,
                                      settings.cookies.refresh_token_max_age)
        self.transactions = TransactionStore(secret, self.policy, settings.cookies.transaction_max_age,
                                             runtime.clock)
        self.flight: SingleFlight[Renewal] = SingleFlight(runtime.clock)
        app_origins = (settings.app_url, *settings.allowed_return_origins, *settings.cors.allowed_origins)
        self.return_to = ReturnToPolicy(settings.app_url, (self_origin, *app_origins[1:]))
        self.origins = OriginPolicy(app_origins, self_origin)
        self.csrf_header = settings.csrf.header
        self.refresh_everywhere = settings.cookies.refresh_token_path == "/"  # noqa: S105
        self.refresh_path = settings.cookies.refresh_token_path.rstrip("/") + "/"
        metrics = runtime.metrics
        self._csrf_rejections = metrics.csrf_rejections
        # (id of the access token's Identity, ID token) -> (that Identity, the enriched one).
        self._enriched: dict[tuple[int, str], tuple[Identity, Identity]] = {}

    # -- runtime pieces that exist once the provider is connected ---------------------------------

    @property
    def validator(self) -> TokenValidator:
        if self.runtime.validator is None:
            raise ProviderError("not_ready")
        return self.runtime.validator

    @property
    def client(self) -> OidcClient:
        if self.runtime.client is None:
            raise ProviderError("not_ready")
        return self.runtime.client

    # -- reading ----------------------------------------------------------------------------------

    def present(self, request: web.Request) -> Mapping[str, str]:
        return self.cookie_reader(request)

    def refresh_token(self, request: web.Request, present: Mapping[str, str]) -> str | None:
        """The refresh token, if the browser sends it to this path."""
        if not (self.refresh_everywhere or request.path.startswith(self.refresh_path)):
            return None
        return self.cookies.read(present, "refresh")

    async def session_sub(self, present: Mapping[str, str]) -> str | None:
        """The ``sub`` of the session's (possibly expired) ID token, signature and audience checked."""
        id_token = self.cookies.read(present, "id")
        if not id_token:
            return None
        try:
            claims = await self.validator.id_token(id_token, allow_expired=True)
        except TokenRejected:
            return None
        return str(claims["sub"])

    # -- renewing ---------------------------------------------------------------------------------

    async def renew(self, request: web.Request, refresh_token: str) -> Identity:
        """Refresh once (shared with concurrent callers); the new cookies ride on the response."""
        metrics = self.runtime.metrics
        try:
            renewal = await self.flight.run(refresh_token, lambda: self._renew(refresh_token))
        except RefreshFailed:
            metrics.flow_events.labels("refresh", "invalid_grant").inc()
            self.runtime.log.info("refresh_refused", reason="invalid_grant")
            raise
        except (ProviderError, TokenRejected) as exc:
            metrics.flow_events.labels("refresh", "error").inc()
            self.runtime.log.warning("refresh_failed", reason=getattr(exc, "reason", "error"))
            raise
        metrics.flow_events.labels("refresh", "ok").inc()
        present = self.present(request)
        tokens = renewal.tokens
        rotated = tokens.refresh_token if tokens.refresh_token != refresh_token else None
        identity = renewal.identity

        def write(response: web.StreamResponse) -> None:
            # This runs from on_response_prepare, after aiohttp has already rendered
            # response.cookies into headers (StreamResponse._start), so a set_cookie() here would
            # never be sent: stage the cookies on a scratch response and add the headers.
            staged = web.StreamResponse()
            self.cookies.write(
                staged, present, access_token=tokens.access_token, access_exp=identity.expires_at,
                id_token=tokens.id_token, refresh_token=rotated, sub=identity.sub,
                xsrf=present.get(self.policy.name("xsrf")),
            )
            for morsel in staged.cookies.values():
                response.headers.add(hdrs.SET_COOKIE, morsel.OutputString())

        add_response_hook(request, write)
        return identity

    async def _renew(self, refresh_token: str) -> Renewal:
        tokens = await self.client.refresh(refresh_token)
        identity = await self.validator.access(tokens.access_token)
        if tokens.id_token is not None:
            claims = await self.validator.id_token(tokens.id_token)
            if claims.get("sub") != identity.sub:
                raise TokenRejected("subject_mismatch")
            identity = with_id_claims(identity, claims)
        return Renewal(identity, tokens)

    async def enrich(self, identity: Identity, present: Mapping[str, str]) -> Identity:
        """Fill what the access token lacks (Cognito access tokens carry no email) from the ID token.

        Only a currently valid ID token of the same ``sub`` is used; its verification is cached like
        the access token's, so this is a dictionary lookup on the hot path.
        """
        if identity.email is not None:
            return identity
        id_token = self.cookies.read(present, "id")
        if not id_token:
            return identity
        # The same (identity, ID token) pair comes back on every request of a session: remember
        # the result, so the hot path neither re-checks the ID token nor builds a new Identity
        # (whose identity-header block downstream is cached per object).
        key = (id(identity), id_token)
        hit = self._enriched.get(key)
        if hit is not None and hit[0] is identity:
            return hit[1]
        try:
            claims = await self.validator.id_token(id_token)
        except TokenRejected:
            return identity
        enriched = with_id_claims(identity, claims)
        if len(self._enriched) >= _ENRICHED_MAX:
            self._enriched.clear()
        self._enriched[key] = (identity, enriched)
        return enriched

    # -- CSRF ---------------------------------------------------------------------------------------

    def check_origin(self, request: web.Request) -> None:
        headers = request.headers
        if not self.origins.allows(headers.get("Origin"), headers.get("Sec-Fetch-Site"),
                                   headers.get("Referer")):
            self._csrf_rejections.labels("origin").inc()
            raise CsrfRejected("origin")

    def check_csrf(self, request: web.Request, present: Mapping[str, str], sub: str) -> None:
        """Double-submit token bound to ``sub`` plus the Origin check (defence in depth)."""
        self.check_origin(request)
        failure = self.csrf.verify(request.headers.get(self.csrf_header),
                                   present.get(self.policy.name("xsrf")), sub)
        if failure is not None:
            self._csrf_rejections.labels(failure).inc()
            raise CsrfRejected(failure)

    async def close(self) -> None:
        await self.flight.close()
        await self.transactions.close()


def with_id_claims(identity: Identity, claims: Mapping[str, Any]) -> Identity:
    """``identity`` with the email of the ID token of the same subject, when it had none."""
    email = claims.get("email")
    if identity.email is not None or claims.get("sub") != identity.sub or not isinstance(email, str):
        return identity
    return dataclasses.replace(identity, email=email)


def add_response_hook(request: web.Request, hook: Callable[[web.StreamResponse], None]) -> None:
    """Run ``hook`` on whatever response this request ends with, just before its headers go out."""
    hooks: list[Any] | None = request.get(RESPONSE_HOOKS)
    if hooks is None:
        request[RESPONSE_HOOKS] = [hook]
    else:
        hooks.append(hook)
