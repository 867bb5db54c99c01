"""The proxy route: credentials → validated identity → rules → identity headers → upstream.

Every step is a lookup in something compiled at start-up; the only awaits on the hot path are the
token cache miss (an RSA verification, then cached until ``exp``) and the upstream itself.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

from aiohttp import web
from aiohttp._cookie_helpers import parse_cookie_header

from sidecar.auth.cookies import join as join_cookie
from sidecar.auth.flow import UNSAFE, SessionService
from sidecar.config import Settings
from sidecar.errors import AmbiguousPath, CsrfRejected, Forbidden, ProviderError, TokenRejected
from sidecar.identity import Identity
from sidecar.keys import IDENTITY, REQUEST_ID, ROUTE_CLASS
from sidecar.proxy.forward import is_websocket
from sidecar.proxy.headers import DEFAULT_SIDECAR_COOKIE, HeaderPolicy, filter_cookie_pairs
from sidecar.proxy.rules import PathSet, RuleSet, check_path
from sidecar.runtime import Runtime

_EMPTY: Mapping[str, str] = MappingProxyType({})
# A session's Cookie header carries its tokens (4 KB and more), and an entry holds it and its parse:
# 256 entries are about 2 MiB, and cover the sessions active at any moment on one worker.
_COOKIE_CACHE_SIZE = 256


class _Parsed:
    __slots__ = ("for_app", "pairs")

    def __init__(self, pairs: Mapping[str, str], for_app: str | None) -> None:
        self.pairs = pairs
        self.for_app = for_app


class CookieCache:
    """A raw ``Cookie`` header's parse and its app-bound form, remembered per header value.

    A browser sends the same header on every request until a cookie changes, so the parse (about
    12 µs in aiohttp) is paid once per distinct header instead of once per request. One entry
    serves both readers of the header: the gate and session code (:meth:`get`, the name → value
    pairs) and :class:`HeaderPolicy` (:meth:`for_app`, the header without the sidecar's cookies),
    so a header is held once.
    """

    def __init__(self, sidecar_cookie: re.Pattern[str] = DEFAULT_SIDECAR_COOKIE,
                 size: int = _COOKIE_CACHE_SIZE) -> None:
        self._sidecar_cookie = sidecar_cookie
        self._size = size
        self._cache: OrderedDict[str, _Parsed] = OrderedDict()

    def get(self, request: web.Request) -> Mapping[str, str]:
        raw = request.headers.get("Cookie")
        if not raw:
            return _EMPTY
        entry = self._cache.get(raw)
        if entry is None:
            entry = self._add(raw)
        return entry.pairs

    def for_app(self, raw: str) -> str | None:
        """``raw`` without the sidecar's cookies (see :func:`filter_cookie_header`)."""
        entry = self._cache.get(raw)
        if entry is None:
            entry = self._add(raw)
        return entry.for_app

    def _add(self, raw: str) -> _Parsed:
        # One parse for both readers: the pairs as aiohttp's ``request.cookies`` makes them, and
        # the app-bound header from the same pairs.
        parsed = parse_cookie_header(raw)
        pairs = MappingProxyType({name: morsel.value for name, morsel in parsed})
        entry = self._cache[raw] = _Parsed(pairs, filter_cookie_pairs(raw, parsed, self._sidecar_cookie))
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return entry


class Gate:
    """The catch-all handler in front of the app."""

    def __init__(self, settings: Settings, runtime: Runtime, headers: HeaderPolicy,
                 sessions: SessionService, cookies: CookieCache) -> None:
        self.runtime = runtime
        self.headers = headers
        self.sessions = sessions
        self.cookies = cookies
        self.public = PathSet(settings.public_paths)
        self.csrf_exempt = PathSet(settings.csrf.exempt_paths)
        self.rules = RuleSet(settings.rules)
        self.accept_bearer = settings.tokens.accept_bearer
        self.access_cookie = sessions.policy.name("access")
        self._decisions = {
            outcome: runtime.metrics.auth_decisions.labels(outcome=outcome)
            for outcome in ("ok", "public", "forbidden_by_rule", "refreshed")
        }

    def credentials(self, request: web.Request) -> tuple[str | None, str]:
        """The access token and where it came from: ``bearer``, ``cookie`` or ``none``."""
        if self.accept_bearer:
            auth = request.headers.get("Authorization")
            if auth is not None and auth[:7].lower() == "bearer ":
                return auth[7:].strip(), "bearer"
        cookies = self.cookies.get(request)
        token = cookies.get(self.access_cookie)
        if token is None and cookies:
            token = join_cookie(cookies, self.access_cookie)
        return (token, "cookie") if token else (None, "none")

    async def identify(self, token: str | None) -> Identity:
        if not token:
            raise TokenRejected("missing")
        validator, jwks = self.runtime.validator, self.runtime.jwks
        if validator is None or jwks is None or not jwks.ready:
            # No signing keys yet: a 401 would send a browser to log in, in a loop, for a valid token.
            raise ProviderError("not_ready")
        identity = validator.cached(token)
        if identity is None:
            identity = await validator.verify_access(token)
        return identity

    async def authenticate(self, request: web.Request, token: str | None, source: str) -> Identity:
        """The caller's identity; an expired or missing cookie session is refreshed once."""
        try:
            return await self.identify(token)
        except TokenRejected as exc:
            if source == "bearer" or exc.reason not in ("expired", "missing"):
                raise
            present = self.cookies.get(request)
            refresh_token = self.sessions.refresh_token(request, present)
            if not refresh_token:
                raise
            identity = await self.sessions.renew(request, refresh_token)
            self._decisions["refreshed"].inc()
            return identity

    async def handle(self, request: web.Request) -> web.StreamResponse:
        websocket = is_websocket(request)
        request[ROUTE_CLASS] = "websocket" if websocket else "proxy"
        try:
            # Before the public paths: "/public/../admin" must not pass as public.
            check_path(request.path)
        except AmbiguousPath as exc:
            self._record(exc.reason)
            raise
        token, source = self.credentials(request)
        identity: Identity | None = None
        if request.path in self.public:
            # Public paths never refuse; a valid token still identifies the caller, but a cookie
            # only does so past the forgery checks (else a cross-site form would post as the user).
            if token:
                try:
                    identity = await self.identify(token)
                    self.check_forgery(request, source, identity.sub, websocket)
                except (TokenRejected, ProviderError, CsrfRejected):
                    identity = None
            self._decisions["public"].inc()
        else:
            try:
                identity = await self.authenticate(request, token, source)
            except TokenRejected as exc:
                self._record(exc.reason)
                raise
            self.check_forgery(request, source, identity.sub, websocket)
            try:
                self.rules.check(request.method, request.path, identity)
            except Forbidden:
                self._decisions["forbidden_by_rule"].inc()
                raise
            self._decisions["ok"].inc()
        if identity is not None and identity.email is None and source == "cookie":
            identity = await self.sessions.enrich(identity, self.cookies.get(request))
        if identity is not None:
            request[IDENTITY] = identity
        upstream = self.headers.upstream_headers(
            request.headers,
            peer=request.remote,
            scheme=request.scheme,
            host=request.host,
            identity=identity,
            access_token=token if identity is not None and source != "none" else None,
            request_id=request[REQUEST_ID],
        )
        if websocket:
            return await self.runtime.forwarder.websocket(request, upstream)
        return await self.runtime.forwarder.forward(request, upstream)

    def check_forgery(self, request: web.Request, source: str, sub: str, websocket: bool) -> None:
        """CSRF checks for an unsafe request, the Origin check for a WebSocket handshake (RFC 6455
        §10.2), when the credentials came from a cookie: a browser attaches it to cross-site requests."""
        if source == "bearer" or request.path in self.csrf_exempt:
            return
        if request.method in UNSAFE:
            self.sessions.check_csrf(request, self.cookies.get(request), sub)
        elif websocket:
            self.sessions.check_origin(request)

    def _record(self, reason: str) -> None:
        counter = self._decisions.get(reason)
        if counter is None:
            counter = self._decisions[reason] = self.runtime.metrics.auth_decisions.labels(outcome=reason)
        counter.inc()
