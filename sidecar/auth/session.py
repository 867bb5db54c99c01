"""Where a browser session's tokens live: the :class:`SessionStore` seam and its cookie implementation.

A store answers three questions and nothing else: which tokens does this request's session hold
(:meth:`~SessionStore.load`), keep these new tokens for it (:meth:`~SessionStore.save`), and forget
it (:meth:`~SessionStore.clear`). ``save`` and ``clear`` do their I/O at once and hand back what must
go on the response (``Set-Cookie`` headers), because a transparent refresh learns its new tokens only
after the app's response has started. Every store passes one contract suite
(``tests/auth/test_session_contract.py``).

:class:`CookieStore` keeps the tokens in the browser: HttpOnly cookies, chunked when long
(:mod:`sidecar.auth.cookies`). Lifetimes: the access token cookie lives as long as its token; the ID
token cookie as long as the session (the refresh token's lifetime): an expired ID token is still the
signed record of who is logged in, needed for ``id_token_hint`` at logout and for the CSRF binding
when ``/auth/refresh`` runs after the access token is gone. Its expiry is checked wherever its claims
are used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import Morsel
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, cast

from aiohttp import hdrs, web

from sidecar.auth import cookies as ck
from sidecar.auth.cookies import CookieKind, CookiePolicy, filter_cookie_pairs, parse_cookie_header
from sidecar.auth.csrf import CsrfTokens
from sidecar.identity import Clock

T = TypeVar("T")
_TOKEN_KINDS: tuple[CookieKind, ...] = ("access", "id", "refresh")
_EMPTY_PAIRS: Mapping[str, str] = MappingProxyType({})
# A session's Cookie header carries its tokens (4 KB and more), and an entry holds it and its parse:
# 256 entries are about 2 MiB, and cover the sessions active at any moment on one worker.
_COOKIE_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class Session:
    """The tokens one browser session holds, as its store gives them back (None: not there)."""

    access_token: str | None = None
    id_token: str | None = None
    refresh_token: str | None = None
    # The double-submit CSRF token the browser holds (always a cookie: JavaScript must read it).
    xsrf: str | None = None
    # The browser sent a session credential that cannot be one (bytes that are not ASCII, an id
    # of the wrong shape): a 401 "malformed", told apart from no credential at all.
    malformed: bool = False


NO_SESSION = Session()


@dataclass(frozen=True, slots=True)
class Tokens:
    """New tokens to keep for a session (after the code exchange or a refresh)."""

    access_token: str
    # When the access token expires (seconds since the epoch).
    access_exp: float
    sub: str
    id_token: str | None = None
    # None: the provider did not rotate it, keep the one the session has.
    refresh_token: str | None = None
    # A login (not a refresh): a server-side store starts a new session id (no fixation).
    fresh_login: bool = False
    # The provider's session (the ID token's sid), when it names one: server sessions are indexed
    # by it so that a revocation of that sid deletes them.
    sid: str | None = None


# Puts a store's answer on a response: Set-Cookie headers, added directly to the headers so it also
# works from ``on_response_prepare``, after aiohttp rendered ``response.cookies``.
ApplyToResponse = Callable[[web.StreamResponse], None]


class SessionStore(Protocol):
    """Load, save and clear the session of a request. See the module docstring for the contract."""

    async def load(self, request: web.Request) -> Session: ...

    async def save(self, request: web.Request, tokens: Tokens) -> ApplyToResponse: ...

    async def clear(self, request: web.Request) -> ApplyToResponse: ...


class _Parsed:
    __slots__ = ("derived", "for_app", "pairs")

    def __init__(self, pairs: Mapping[str, str], for_app: str | None) -> None:
        self.pairs = pairs
        self.for_app = for_app
        # What the app's one session store builds from these pairs (see CookieCache.derived).
        self.derived: object = None


class CookieCache:
    """A raw ``Cookie`` header's parse, its app-bound form and its session, remembered per value.

    A browser sends the same header on every request until a cookie changes, so the parse (about
    12 µs in aiohttp) is paid once per distinct header instead of once per request. One entry
    serves every reader of the header: the session store (:meth:`pairs`, :meth:`derived`) and the
    identity-header policy (:meth:`for_app`, the header without the sidecar's cookies).
    """

    def __init__(self, sidecar_cookie: Callable[[str], object], size: int = _COOKIE_CACHE_SIZE) -> None:
        """``sidecar_cookie``: true for a name of the sidecar's own (``CookieNames.pattern.match``)."""
        self._sidecar_cookie = sidecar_cookie
        self._size = size
        self._cache: OrderedDict[str, _Parsed] = OrderedDict()

    def pairs(self, request: web.Request) -> Mapping[str, str]:
        """The request's cookies, name → value, as aiohttp's ``request.cookies`` makes them."""
        raw = request.headers.get(hdrs.COOKIE)
        if not raw:
            return _EMPTY_PAIRS
        return self._entry(raw).pairs

    def for_app(self, raw: str) -> str | None:
        """``raw`` without the sidecar's cookies (see :func:`sidecar.auth.cookies.filter_cookie_pairs`)."""
        return self._entry(raw).for_app

    def derived(self, request: web.Request, build: Callable[[Mapping[str, str]], T], empty: T) -> T:
        """``build(pairs)`` of the request's cookies, computed once per distinct header; ``empty``
        without a ``Cookie`` header. One builder per cache: the app's session store."""
        raw = request.headers.get(hdrs.COOKIE)
        if not raw:
            return empty
        entry = self._entry(raw)
        if entry.derived is None:
            entry.derived = build(entry.pairs)
        return cast(T, entry.derived)

    def __len__(self) -> int:
        return len(self._cache)

    def _entry(self, raw: str) -> _Parsed:
        entry = self._cache.get(raw)
        if entry is not None:
            return entry
        # One parse for every reader: the pairs as aiohttp's ``request.cookies`` makes them, and
        # the app-bound header from the same pairs.
        parsed: list[tuple[str, Morsel[str]]] = parse_cookie_header(raw)
        pairs = MappingProxyType({name: morsel.value for name, morsel in parsed})
        entry = self._cache[raw] = _Parsed(pairs, filter_cookie_pairs(raw, parsed, self._sidecar_cookie))
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return entry


def _usable(value: str | None) -> str | None:
    # Tokens are ASCII (JWS compact serialization, opaque refresh tokens). A value with anything else
    # (aiohttp hands undecodable bytes over as lone surrogates) is no token: treat it as absent, so
    # nothing downstream hashes or encodes it.
    return value if value is not None and value.isascii() else None


class CookieStore:
    """The session in the browser's cookies: nothing kept on the server.

    ``budget``: a login whose cookies exceed ``budget.limit`` bytes is logged once, pointing to
    server sessions (API Gateway refuses request heads over 10,240 bytes), and every save's
    cookie bytes are observed (``authsidecar_session_cookie_bytes``).
    """

    def __init__(self, policy: CookiePolicy, csrf: CsrfTokens, cookies: CookieCache, clock: Clock,
                 session_max_age: int, budget: HeaderBudget | None = None) -> None:
        self.policy = policy
        self.csrf = csrf
        self.cookies = cookies
        self.clock = clock
        self.session_max_age = session_max_age
        self.budget = budget
        self._names = {kind: policy.name(kind) for kind in ("access", "id", "refresh", "xsrf")}

    def _build(self, pairs: Mapping[str, str]) -> Session:
        names = self._names
        # A plain access-token cookie wins over a stray chunk beside it (it is what the browser was
        # last given); the other kinds must be one consistent set.
        access = pairs.get(names["access"]) or ck.join(pairs, names["access"])
        return Session(
            access_token=_usable(access),
            id_token=_usable(ck.join(pairs, names["id"])),
            refresh_token=_usable(ck.join(pairs, names["refresh"])),
            xsrf=pairs.get(names["xsrf"]),
            malformed=access is not None and _usable(access) is None,
        )

    async def load(self, request: web.Request) -> Session:
        return self.cookies.derived(request, self._build, NO_SESSION)

    async def save(self, request: web.Request, tokens: Tokens) -> ApplyToResponse:
        """Set the token cookies (chunked where needed), clear stale chunks, issue a CSRF token.

        The browser's CSRF token is kept when still valid for ``tokens.sub``, so requests the SPA
        already built with it do not fail during a refresh.
        """
        present = self.cookies.pairs(request)
        held_xsrf = present.get(self._names["xsrf"])
        staged = web.StreamResponse()
        now = self.clock()
        self._put(staged, present, "access", tokens.access_token, remaining=tokens.access_exp - now)
        if tokens.id_token is not None:
            self._put(staged, present, "id", tokens.id_token, remaining=self.session_max_age)
        if tokens.refresh_token is not None:
            self._put(staged, present, "refresh", tokens.refresh_token, remaining=None)
        if held_xsrf is None or self.csrf.verify(held_xsrf, held_xsrf, tokens.sub) is not None:
            staged.set_cookie(self._names["xsrf"], self.csrf.issue(tokens.sub), **self.policy.attrs("xsrf"))
        if self.budget is not None:
            self.budget.record(staged, login=tokens.fresh_login)
        return applier(staged)

    async def clear(self, request: web.Request) -> ApplyToResponse:
        """Expire every sidecar cookie the browser sent, with the attributes it was set with."""
        present = self.cookies.pairs(request)
        staged = web.StreamResponse()
        for kind in (*_TOKEN_KINDS, "xsrf", "tx"):
            name = self.policy.name(kind)
            stale = ck.stale(name, present, 0)
            # Always clear the plain name too: the request may not have carried a Path=/auth cookie.
            for old in dict.fromkeys([name, *stale]):
                staged.set_cookie(old, "", **self.policy.clear_attrs(kind))
        return applier(staged)

    def _put(self, staged: web.StreamResponse, present: Mapping[str, str], kind: CookieKind,
             value: str, *, remaining: float | None) -> None:
        name = self.policy.name(kind)
        parts = ck.split(name, value)
        attrs = self.policy.attrs(kind, remaining=remaining)
        for part_name, part in parts:
            staged.set_cookie(part_name, part, **attrs)
        for old in ck.stale(name, present, len(parts)):
            staged.set_cookie(old, "", **self.policy.clear_attrs(kind))


class HeaderBudget:
    """What a browser will send back: the bytes of the cookies one save sets (name=value)."""

    def __init__(self, limit: int, histogram: Any, log: Any) -> None:
        self.limit = limit
        self._histogram = histogram
        self._log = log

    def record(self, staged: web.StreamResponse, *, login: bool) -> None:
        sent = sum(len(m.key) + 1 + len(m.coded_value) for m in staged.cookies.values() if m.value)
        # What the browser's Cookie header will carry: the pairs and their "; " separators.
        size = sent + 2 * max(0, len(staged.cookies) - 1)
        self._histogram.observe(size)
        if login and size > self.limit:
            self._log.warning("session_cookies_large", bytes=size, limit=self.limit,
                              detail="request heads this large are refused by API Gateway "
                                     "(10,240 bytes); consider sessions.mode: server")


def applier(staged: web.StreamResponse) -> ApplyToResponse:
    """What ``staged``'s cookies become on another response: its ``Set-Cookie`` lines, added."""
    lines = [morsel.OutputString() for morsel in staged.cookies.values()]

    def apply(response: web.StreamResponse) -> None:
        for line in lines:
            response.headers.add(hdrs.SET_COOKIE, line)

    return apply
