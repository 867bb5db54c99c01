"""Cookie names, attributes, chunking and clearing for the token cookies.

Pure: the routes call ``response.set_cookie(name, value, **policy.attrs(kind, ...))`` and
``response.set_cookie(name, "", **policy.clear_attrs(kind))``; aiohttp renders the ``Set-Cookie``
header. Nothing here parses or renders cookies by hand.

Names. With ``cookies.host_prefix`` every cookie is named ``__Host-…`` (RFC 6265bis §4.1.3.2: Secure,
no Domain, ``Path=/``), except the refresh token when its path is not ``/``: ``__Host-`` forbids
``Path=/auth``, so it becomes ``__Secure-refresh_token`` (Secure is still enforced by the browser,
but a sibling host could toss a same-named cookie with ``Domain=``). Keeping the refresh token off the
app's paths was judged worth more; set ``refresh_token_path: /`` to get ``__Host-`` for it too.

Chunks. Browsers drop a cookie whose name and value exceed 4096 bytes (RFC 6265 §6.1 counts the
attributes as well), and ID tokens with many groups get there. A value that fits stays one cookie
``name``; a longer one becomes ``name.0``, ``name.1``, … (at most :data:`MAX_CHUNKS`). A set is never
mixed: ``join`` refuses a plain cookie next to chunks, a gap, or an index out of range, and ``stale``
names what to clear when the number of chunks changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import Morsel, SimpleCookie
from typing import Literal, TypedDict

from aiohttp._cookie_helpers import parse_cookie_header as _aiohttp_parse_cookie_header

from sidecar.config import CookieSettings, CsrfSettings

CookieKind = Literal["access", "id", "refresh", "xsrf", "tx", "session"]

HOST_PREFIX = "__Host-"
SECURE_PREFIX = "__Secure-"
TRANSACTION_COOKIE = "authsidecar_tx"
# Server sessions: the opaque session id (sidecar.auth.server_session).
SESSION_COOKIE = "authsidecar_session"
# name + "=" + value of one chunk. 296 bytes are left for "; Path=…; Max-Age=…; Secure; …".
CHUNK_LIMIT = 3800
MAX_CHUNKS = 10
# A fixed date in the past: clearing needs no clock (RFC 6265 §3.1, Max-Age=0 for modern browsers).
EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"

_BASE_NAMES = {
    "access": "access_token", "id": "id_token", "refresh": "refresh_token", "tx": TRANSACTION_COOKIE,
    "session": SESSION_COOKIE,
}
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


class CookieTooLarge(ValueError):
    """The value needs more than :data:`MAX_CHUNKS` cookies."""


class CookieAttrs(TypedDict, total=False):
    """Keyword arguments of ``aiohttp.web.StreamResponse.set_cookie``."""

    path: str
    domain: str
    max_age: int
    expires: str
    secure: bool
    httponly: bool
    samesite: str


def _strip_prefix(name: str) -> str:
    for prefix in (HOST_PREFIX, SECURE_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@dataclass(frozen=True)
class CookieNames:
    """The name of every cookie the sidecar sets, prefixes included."""

    access_token: str
    id_token: str
    refresh_token: str
    xsrf: str
    transaction: str
    session: str
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bases = sorted({_strip_prefix(n) for n in (self.access_token, self.id_token, self.refresh_token,
                                                    self.xsrf, self.transaction, self.session)})
        alternatives = "|".join(re.escape(b) for b in bases)
        # Any prefix, any chunk index, any case: for stripping them before the request goes upstream.
        pattern = re.compile(rf"\A(?:__host-|__secure-)?(?:{alternatives})(?:\.[0-9]+)?\Z", re.IGNORECASE)
        object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def build(cls, cookies: CookieSettings, csrf: CsrfSettings) -> CookieNames:
        def named(base: str, path: str = "/") -> str:
            if not cookies.host_prefix or base.startswith((HOST_PREFIX, SECURE_PREFIX)):
                return base
            return (HOST_PREFIX if path == "/" else SECURE_PREFIX) + base

        return cls(
            access_token=named(_BASE_NAMES["access"]),
            id_token=named(_BASE_NAMES["id"]),
            refresh_token=named(_BASE_NAMES["refresh"], cookies.refresh_token_path),
            xsrf=named(csrf.cookie),
            transaction=named(TRANSACTION_COOKIE),
            session=named(SESSION_COOKIE),
        )

    def of(self, kind: CookieKind) -> str:
        return {"access": self.access_token, "id": self.id_token, "refresh": self.refresh_token,
                "xsrf": self.xsrf, "tx": self.transaction, "session": self.session}[kind]

    @property
    def pattern(self) -> re.Pattern[str]:
        """Anchored, case-insensitive: matches every name in this set (for stripping them upstream)."""
        return self._pattern

    def is_sidecar_cookie(self, name: str) -> bool:
        """True for any of these names, with or without ``__Host-``/``__Secure-``, chunks included."""
        return self._pattern.fullmatch(name) is not None


class CookiePolicy:
    """Attributes for each kind of cookie, compiled once from the settings."""

    def __init__(self, cookies: CookieSettings, csrf: CsrfSettings) -> None:
        self.names = CookieNames.build(cookies, csrf)
        same_site = _SAMESITE[cookies.same_site]
        paths: dict[CookieKind, str] = {"access": "/", "id": "/", "refresh": cookies.refresh_token_path,
                                        "xsrf": "/", "tx": "/", "session": "/"}
        self._max_age: dict[CookieKind, int] = {
            "access": cookies.access_token_max_age,
            # The ID token cookie is the session's signed record of who is logged in (sidecar.auth.session):
            # /auth/refresh binds the CSRF check to its `sub` after the access token is gone, so it must
            # outlive the access token and live as long as the refresh token.
            "id": cookies.refresh_token_max_age,
            "refresh": cookies.refresh_token_max_age,
            # The CSRF token lives as long as the session it protects.
            "xsrf": cookies.refresh_token_max_age,
            # The server session lives as long as the refresh token it holds.
            "session": cookies.refresh_token_max_age,
            "tx": cookies.transaction_max_age,
        }
        self._base: dict[CookieKind, CookieAttrs] = {}
        for kind, path in paths.items():
            attrs = CookieAttrs(path=path, secure=cookies.secure, httponly=kind != "xsrf", samesite=same_site)
            if kind == "tx" and same_site == "Strict":
                # The callback is a cross-site navigation from the provider: a Strict cookie would not
                # come back with it (RFC 6265bis, SameSite). Lax is sent on a top-level GET.
                attrs["samesite"] = "Lax"
            domain = (csrf.cookie_domain or cookies.domain) if kind == "xsrf" else cookies.domain
            if domain:
                attrs["domain"] = domain
            self._check_prefix(self.names.of(kind), attrs)
            self._base[kind] = attrs

    @staticmethod
    def _check_prefix(name: str, attrs: CookieAttrs) -> None:
        # Browsers silently drop a prefixed cookie whose attributes break the prefix's rules.
        if name.startswith((HOST_PREFIX, SECURE_PREFIX)) and not attrs.get("secure"):
            raise ValueError(f"cookie {name!r} needs secure: true")
        if name.startswith(HOST_PREFIX) and ("domain" in attrs or attrs.get("path") != "/"):
            raise ValueError(f"cookie {name!r} needs Path=/ and no Domain")

    def name(self, kind: CookieKind) -> str:
        return self.names.of(kind)

    def attrs(self, kind: CookieKind, *, remaining: float | None = None) -> CookieAttrs:
        """Attributes to set a ``kind`` cookie. ``remaining``: seconds the token stays valid.

        Access and ID token cookies require ``remaining`` and never outlive it (Max-Age is the smaller
        of the configured maximum and ``remaining``, never negative): the access token's lifetime, the
        session's for the ID token. For the other kinds it is an optional further cap.
        """
        if remaining is None and kind in ("access", "id"):
            raise ValueError(f"the {kind} token cookie needs the token's remaining lifetime")
        max_age = self._max_age[kind]
        if remaining is not None:
            max_age = max(0, min(max_age, math.floor(remaining)))
        return {**self._base[kind], "max_age": max_age}

    def clear_attrs(self, kind: CookieKind) -> CookieAttrs:
        """Attributes that expire a ``kind`` cookie: same Path, Domain and Secure as when it was set."""
        return {**self._base[kind], "max_age": 0, "expires": EXPIRED}


def chunk_name(name: str, index: int) -> str:
    return f"{name}.{index}"


def _chunk_index(family: str, cookie: str) -> int | None:
    """The chunk index of ``cookie`` in ``family``'s set, None when it is not a chunk name."""
    if not cookie.startswith(family + "."):
        return None
    suffix = cookie[len(family) + 1 :]
    if not (suffix.isascii() and suffix.isdigit()):
        return None
    # A long run of digits is out of range anyway (and int() of thousands of digits raises).
    return int(suffix) if len(suffix) <= 3 else MAX_CHUNKS


def split(name: str, value: str, limit: int = CHUNK_LIMIT) -> list[tuple[str, str]]:
    """The cookies that carry ``value``: ``[(name, value)]`` when it fits, else ``name.0``, ``name.1``, …

    ``limit`` bounds ``name=value`` of each cookie as rendered. A value with characters outside the
    cookie-octets (say the ``/`` of an opaque refresh token) is sent quoted by ``SimpleCookie``, and
    quoted chunks come back unquoted, so that costs two bytes per cookie. Raises :class:`ValueError`
    for an empty value or one that would need escaping (``"``, ``\\``, ``;``, ``,``, controls,
    non-ASCII: no token has them), and :class:`CookieTooLarge` past :data:`MAX_CHUNKS` cookies.
    """
    if not value:
        raise ValueError("an empty cookie value: clear the cookie instead")
    coded = SimpleCookie().value_encode(value)[1]
    if not value.isascii() or coded not in (value, f'"{value}"'):
        raise ValueError("cookie value would need escaping; encode it (e.g. base64url) first")
    if len(name) + 1 + len(coded) <= limit:
        return [(name, value)]
    quotes = len(coded) - len(value)
    size = limit - len(chunk_name(name, MAX_CHUNKS - 1)) - 1 - quotes
    if size <= 0:
        raise ValueError(f"limit {limit} leaves no room for a value next to {name!r}")
    count = math.ceil(len(value) / size)
    if count > MAX_CHUNKS:
        raise CookieTooLarge(f"{name}: {len(value)} bytes need {count} cookies, more than {MAX_CHUNKS}")
    return [(chunk_name(name, i), value[i * size : (i + 1) * size]) for i in range(count)]


def join(cookies: Mapping[str, str], name: str) -> str | None:
    """The value stored under ``name`` (one cookie or a complete chunk set), or None.

    None as well for anything inconsistent: a plain cookie beside chunks, a missing or empty chunk,
    an index at or past :data:`MAX_CHUNKS`, a non-canonical index such as ``name.01``.
    """
    chunks: dict[int, str] = {}
    for key, value in cookies.items():
        index = _chunk_index(name, key)
        if index is None:
            continue
        if index >= MAX_CHUNKS or key != chunk_name(name, index):
            return None
        chunks[index] = value
    plain = cookies.get(name)
    if not chunks:
        return plain or None
    if plain is not None or sorted(chunks) != list(range(len(chunks))) or not all(chunks.values()):
        return None
    return "".join(chunks[i] for i in range(len(chunks)))


def stale(name: str, present_names: Iterable[str], new_count: int) -> list[str]:
    """Cookies of ``name``'s set that the browser holds and the new value will not overwrite.

    ``new_count`` is ``len(split(...))`` of the new value, or 0 when the value is being removed.
    Plain name first, then chunks by index.
    """
    if new_count < 0:
        raise ValueError("new_count cannot be negative")
    keep = {name} if new_count == 1 else {chunk_name(name, i) for i in range(new_count)}
    found = {n for n in present_names if n == name or _chunk_index(name, n) is not None}
    return sorted(found - keep, key=lambda n: (n != name, _chunk_index(name, n) or 0, n))


def parse_cookie_header(raw: str) -> list[tuple[str, Morsel[str]]]:
    """Every ``name=value`` pair of a ``Cookie`` header, in order, each value as sent (``coded_value``).

    aiohttp's own parser (RFC 6265 §5.4, lenient like browsers; ``request.cookies`` is built from
    it), which is private: no public API gives the same. ``request.cookies`` keeps only the last
    decoded value per name, and ``http.cookies.SimpleCookie`` stops at the first pair it dislikes;
    the proxy needs every pair as sent to pass the app's cookies on byte-exact. The one import of the
    private ``aiohttp._cookie_helpers.parse_cookie_header``: ``pyproject.toml`` pins the aiohttp
    releases it was tested with and ``tests/test_aiohttp_internals.py`` fails, naming it, when an
    upgrade changes it.
    """
    return _aiohttp_parse_cookie_header(raw)


def filter_cookie_header(raw: str, sidecar_cookie: Callable[[str], object]) -> str | None:
    """``raw`` without the sidecar's cookies (RFC 6265 §5.4 pairs); ``None`` if nothing is left.

    The pairs come from aiohttp's Cookie parser and are rebuilt as ``name=value`` joined by
    ``"; "`` with each value exactly as received (quotes included), so a header a browser sent
    comes out byte-exact. What the parser does not understand is not passed on.
    """
    return filter_cookie_pairs(raw, parse_cookie_header(raw), sidecar_cookie)


def filter_cookie_pairs(raw: str, parsed: Iterable[tuple[str, Morsel[str]]],
                        sidecar_cookie: Callable[[str], object]) -> str | None:
    """:func:`filter_cookie_header` for a header already parsed by :func:`parse_cookie_header`.

    ``sidecar_cookie(name)`` is true for the sidecar's own names (``CookieNames.pattern.match``).
    """
    kept = "; ".join(f"{n}={m.coded_value}" for n, m in parsed if not sidecar_cookie(n))
    return (raw if kept == raw else kept) or None
