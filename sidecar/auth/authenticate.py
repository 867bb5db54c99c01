"""The one place a request is authenticated: credentials → validated identity, refreshed when needed.

:meth:`Authenticator.authenticate` serves the proxy, ``/auth/me`` and anything else that asks who the
caller is. In order:

1. credentials: ``Authorization: Bearer`` (when accepted) wins over the session's access token;
2. the access token's identity: a cache lookup on a warm request, else one signature check;
3. a missing or expired *session* token is renewed once with the refresh token, when the browser
   sends it to this path (``cookies.refresh_token_path``) — never for a Bearer token: an API client's
   bad token must not turn into the browser session's refresh;
4. cookie credentials on an unsafe request pass the double-submit CSRF and Origin checks, a WebSocket
   handshake the Origin check (a browser attaches cookies to cross-site requests; a Bearer header it
   never adds by itself);
5. what the access token lacks (Cognito's carry no email) comes from the session's ID token;
6. the deny-list (:mod:`sidecar.auth.revocation`): a revoked token is refused after 2, from the
   in-process copy; a session's ID token too (its ``sid`` when the access token carries none), and
   a revoked session is never refreshed.

Renewing is single-flight per refresh token (twenty tabs noticing the expiry at once make one token
request: with rotation the provider would end the session for the rest); the new cookies ride on
whatever response the request ends with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from sidecar.auth.csrf import CsrfTokens, OriginPolicy, is_websocket_upgrade
from sidecar.auth.refresh import RefreshFlight
from sidecar.auth.revocation import ID_CLAIMS, Revocation
from sidecar.auth.session import ApplyToResponse, Session, SessionStore, Tokens
from sidecar.auth.token_digest import RefreshDigest, refresh_digest
from sidecar.errors import CsrfRejected, ProviderError, RefreshFailed, TokenRejected
from sidecar.identity import Identity
from sidecar.keys import RESPONSE_HOOKS
from sidecar.observability import Logger, Metrics
from sidecar.oidc import shape
from sidecar.oidc.client import TokenSet
from sidecar.oidc.provider import ProviderLink

Source = Literal["bearer", "cookie"]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ENRICHED_MAX = 10000


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: who, with which access token, from where."""

    identity: Identity
    # The access token the identity was validated from (after a refresh: the new one).
    access_token: str
    source: Source


@dataclass(slots=True)
class _IdTokenMemo:
    """What verifying one session ID token taught: one entry per ID token, so a warm request
    neither digests nor looks up the ID token again (the validation cache would, by its SHA-256).

    ``listed``: the claims the deny-list reads (:data:`~sidecar.auth.revocation.ID_CLAIMS`), from a
    signature-checked token. ``identity`` / ``enriched``: the access token's Identity last enriched
    from it, and the result (the identity-header block downstream is cached per Identity object).
    """

    listed: Mapping[str, Any]
    identity: Identity | None = None
    enriched: Identity | None = None


class Authenticator:
    """Credentials, validation cache, transparent refresh, enrichment and CSRF for every request."""

    def __init__(
        self,
        *,
        provider: ProviderLink,
        store: SessionStore,
        csrf: CsrfTokens,
        origins: OriginPolicy,
        csrf_header: str,
        csrf_exempt: Container[str],
        accept_bearer: bool,
        refresh_token_path: str,
        flight: RefreshFlight,
        metrics: Metrics,
        log: Logger,
        revocation: Revocation | None = None,
    ) -> None:
        self.provider = provider
        self.store = store
        self.csrf = csrf
        self.origins = origins
        self._csrf_header = csrf_header
        self._csrf_exempt = csrf_exempt
        self._accept_bearer = accept_bearer
        self._refresh_everywhere = refresh_token_path == "/"  # noqa: S105 - a cookie path
        self._refresh_prefix = refresh_token_path.rstrip("/") + "/"
        self._metrics = metrics
        self._log = log
        self.flight = flight
        self.revocation = revocation
        self._csrf_rejections = metrics.csrf_rejections
        self._decisions: dict[str, Any] = {}
        # Session ID token -> what was learnt from verifying it (see _IdTokenMemo).
        self._id_tokens: dict[str, _IdTokenMemo] = {}

    # -- the one entry point ------------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Caller:
        """The caller, or an :class:`~sidecar.errors.AuthRejected` / ``ProviderError`` saying why not."""
        session = await self.store.load(request)
        token, source = self._credentials(request, session)
        try:
            if token is None:
                raise TokenRejected("malformed" if session.malformed else "missing")
            # Not a compact JWS (too long, not ASCII, not three parts): refused before anything
            # hashes, decodes or looks it up.
            if not shape.jws_compact(token):
                raise TokenRejected("malformed")
            identity = await self._identify(token)
            if source == "cookie":
                await self.check_session_revoked(session)
        except TokenRejected as exc:
            if source == "bearer" or exc.reason not in ("expired", "missing"):
                self._record(exc.reason)
                if exc.reason == "revoked" and source == "cookie":
                    on_response(request, await self.store.clear(request))
                raise
            refresh_token = self._refresh_token_for(request, session)
            if refresh_token is None:
                self._record(exc.reason)
                raise
            digest = refresh_digest(refresh_token)
            await self.check_session_revoked(session, digest, request=request)
            identity, token = await self.renew(request, refresh_token, digest)
            self._record("refreshed")
        if source == "cookie":
            self._check_forgery(request, session, identity.sub)
            identity = await self._enrich(identity, session)
        return Caller(identity, token, source)

    # -- steps -------------------------------------------------------------------------------------

    def _credentials(self, request: web.Request, session: Session) -> tuple[str | None, Source]:
        if self._accept_bearer:
            auth = request.headers.get("Authorization")
            if auth is not None and auth[:7].lower() == "bearer ":
                return auth[7:].strip() or None, "bearer"
        return session.access_token, "cookie"

    async def _identify(self, token: str) -> Identity:
        validator = self.provider.get().validator
        identity = validator.cached(token)
        if identity is None:
            identity = await validator.verify_access(token)
        revocation = self.revocation
        if revocation is not None and revocation.refuses(identity):
            raise TokenRejected("revoked")
        return identity

    async def check_session_revoked(self, session: Session, refresh: RefreshDigest | None = None, *,
                                     request: web.Request | None = None) -> None:
        """A cookie session whose ID token (or refresh token, by its digest ``refresh``) is revoked
        is over.

        Providers that name the session (``sid``) in the ID token only, Cognito-shaped ones whose
        access token carries no ``sid``, are caught here. Before a refresh the (possibly expired)
        ID token is read too: a refresh must not turn a revoked session into a fresh one.
        """
        revocation = self.revocation
        if revocation is None or not len(revocation.deny):
            return
        revoked = refresh is not None and revocation.refuses_refresh(refresh)
        id_token = session.id_token
        if not revoked and id_token and shape.jws_compact(id_token):
            memo = await self._id_token_memo(id_token, allow_expired=refresh is not None)
            # The memo holds the token's claims, never a verdict: the deny-list is asked every time,
            # so a revocation that arrives after the memo was filled refuses the very next request.
            revoked = memo is not None and revocation.refuses_claims(memo.listed)
        if revoked:
            if request is not None:
                self._record("revoked")
                on_response(request, await self.store.clear(request))
            raise TokenRejected("revoked")

    async def identify_if_any(self, request: web.Request) -> Caller | None:
        """For a path that needs no identity: nothing is refused and nothing refreshed.

        A valid token still identifies the caller, a cookie only past the forgery checks (else a
        cross-site form would post as the user). None for an anonymous caller.
        """
        session = await self.store.load(request)
        token, source = self._credentials(request, session)
        if not shape.jws_compact(token):
            return None
        try:
            identity = await self._identify(token)
            if source == "cookie":
                self._check_forgery(request, session, identity.sub)
        except (TokenRejected, ProviderError, CsrfRejected):
            return None
        if source == "cookie":
            identity = await self._enrich(identity, session)
        return Caller(identity, token, source)

    def _refresh_token_for(self, request: web.Request, session: Session) -> str | None:
        """The session's refresh token, if the browser sends it to this path (RFC 6265 §5.1.4)."""
        if not (self._refresh_everywhere or request.path.startswith(self._refresh_prefix)):
            return None
        return session.refresh_token

    def _check_forgery(self, request: web.Request, session: Session, sub: str) -> None:
        if request.path in self._csrf_exempt:
            return
        if request.method in UNSAFE:
            self.check_csrf(request, session, sub)
        elif is_websocket_upgrade(request.method, request.headers.get("Upgrade")):
            self.check_origin(request)

    async def _enrich(self, identity: Identity, session: Session) -> Identity:
        """Fill what the access token lacks from a currently valid ID token of the same ``sub``.

        The ID token's verification is cached like the access token's, and the same (identity, ID
        token) pair comes back on every request of a session: the result is remembered, so the hot
        path neither re-checks the ID token nor builds a new Identity (whose identity-header block
        downstream is cached per object).
        """
        id_token = session.id_token
        if identity.email is not None or not id_token:
            return identity
        memo = self._id_tokens.get(id_token)
        if memo is not None and memo.identity is identity and memo.enriched is not None:
            return memo.enriched
        try:
            claims = await self.provider.get().validator.id_token(id_token)
        except (TokenRejected, ProviderError):
            return identity
        enriched = with_id_claims(identity, claims)
        memo = self._remember_id_token(id_token, claims)
        memo.identity, memo.enriched = identity, enriched
        return enriched

    async def _id_token_memo(self, id_token: str, *, allow_expired: bool) -> _IdTokenMemo | None:
        """The memo of a verified ``id_token`` (verified now on a miss); None when it does not verify.

        A hit is served even once the ID token has expired: its claims only ever refuse (a session
        whose ID token names a revoked sid is over, expired or not), as before a refresh.
        """
        memo = self._id_tokens.get(id_token)
        if memo is not None:
            return memo
        try:
            claims = await self.provider.get().validator.id_token(id_token, allow_expired=allow_expired)
        except TokenRejected:
            return None
        return self._remember_id_token(id_token, claims)

    def _remember_id_token(self, id_token: str, claims: Mapping[str, Any]) -> _IdTokenMemo:
        memo = self._id_tokens.get(id_token)
        if memo is None:
            if len(self._id_tokens) >= _ENRICHED_MAX:
                self._id_tokens.clear()
            listed = {name: claims[name] for name in ID_CLAIMS if name in claims}
            memo = self._id_tokens[id_token] = _IdTokenMemo(listed)
        return memo

    # -- shared with the /auth routes ---------------------------------------------------------------

    async def renew(self, request: web.Request, refresh_token: str,
                    digest: RefreshDigest) -> tuple[Identity, str]:
        """Refresh once (shared with concurrent callers); the new cookies ride on the response.

        ``digest`` is ``refresh_token``'s, computed once by the caller (which checked it against the
        deny-list). Returns the new identity (enriched from the new ID token) and the new access token.
        """
        metrics = self._metrics
        try:
            tokens = await self.flight.run(digest, lambda: self._refresh(refresh_token))
            identity = await self._validated(tokens)
        except RefreshFailed:
            metrics.flow_events.labels("refresh", "invalid_grant").inc()
            self._log.info("refresh_refused", reason="invalid_grant")
            # The session is over: whatever answer goes out clears it.
            on_response(request, await self.store.clear(request))
            raise
        except (ProviderError, TokenRejected) as exc:
            metrics.flow_events.labels("refresh", "error").inc()
            self._log.warning("refresh_failed", reason=exc.reason)
            raise
        metrics.flow_events.labels("refresh", "ok").inc()
        rotated = tokens.refresh_token if tokens.refresh_token != refresh_token else None
        apply = await self.store.save(request, Tokens(
            access_token=tokens.access_token, access_exp=identity.expires_at, sub=identity.sub,
            id_token=tokens.id_token, refresh_token=rotated,
        ))
        on_response(request, apply)
        return identity, tokens.access_token

    async def _refresh(self, refresh_token: str) -> TokenSet:
        return await self.provider.get().client.refresh(refresh_token)

    async def _validated(self, tokens: TokenSet) -> Identity:
        """The identity of freshly refreshed tokens (the same for every process that shares them)."""
        provider = self.provider.get()
        identity = await provider.validator.access(tokens.access_token)
        revocation = self.revocation
        if revocation is not None and revocation.refuses(identity):
            raise TokenRejected("revoked")
        if tokens.id_token is not None:
            claims = await provider.validator.id_token(tokens.id_token)
            if revocation is not None and revocation.refuses_claims(claims):
                raise TokenRejected("revoked")
            # OIDC Core §12.2: a refreshed ID token's sub must be the session's; the access token
            # must name the same user, or the session would carry two identities.
            if claims.get("sub") != identity.sub:
                raise TokenRejected("subject_mismatch")
            identity = with_id_claims(identity, claims)
        return identity

    async def session_sub(self, session: Session) -> str | None:
        """The ``sub`` of the session's (possibly expired) ID token, signature and audience checked."""
        if not session.id_token or not session.id_token.isascii():
            return None
        try:
            claims = await self.provider.get().validator.id_token(session.id_token, allow_expired=True)
        except TokenRejected:
            return None
        return str(claims["sub"])

    def check_origin(self, request: web.Request) -> None:
        headers = request.headers
        if not self.origins.allows(headers.get("Origin"), headers.get("Sec-Fetch-Site"),
                                   headers.get("Referer")):
            self._csrf_rejections.labels("origin").inc()
            raise CsrfRejected("origin")

    def check_csrf(self, request: web.Request, session: Session, sub: str) -> None:
        """Double-submit token bound to ``sub`` plus the Origin check (defence in depth)."""
        self.check_origin(request)
        failure = self.csrf.verify(request.headers.get(self._csrf_header), session.xsrf, sub)
        if failure is not None:
            self._csrf_rejections.labels(failure).inc()
            raise CsrfRejected(failure)

    def _record(self, outcome: str) -> None:
        counter = self._decisions.get(outcome)
        if counter is None:
            counter = self._decisions[outcome] = self._metrics.auth_decisions.labels(outcome=outcome)
        counter.inc()

    async def close(self) -> None:
        await self.flight.close()


def with_id_claims(identity: Identity, claims: Mapping[str, Any]) -> Identity:
    """``identity`` with the email of the ID token of the same subject, when it had none."""
    email = claims.get("email")
    if identity.email is not None or claims.get("sub") != identity.sub or not isinstance(email, str):
        return identity
    return dataclasses.replace(identity, email=email)


def on_response(request: web.Request, apply: ApplyToResponse) -> None:
    """Run ``apply`` on whatever response this request ends with, just before its headers go out."""
    hooks: list[Callable[[web.StreamResponse], None]] | None = request.get(RESPONSE_HOOKS)
    if hooks is None:
        request[RESPONSE_HOOKS] = [apply]
    else:
        hooks.append(apply)

