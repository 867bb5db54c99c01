"""Headers between the client, the sidecar and the app: compiled once, then only looked up.

:class:`HeaderPolicy` turns the client's request headers into the app's, and :func:`response_headers`
turns the app's response headers into the client's. Both are pure: no I/O, no clock, no globals
(the identity assertion, when on, comes from a signer that reads its own injected clock).

Request side, in one pass over the incoming headers:

* hop-by-hop fields (RFC 9110 §7.6.1) and every field named in ``Connection`` are dropped; so are
  ``Host`` (the client library sets the app's), ``Expect`` (the sidecar already answered
  ``100-continue``) and the per-hop WebSocket handshake fields (each hop negotiates its own key,
  version and extensions; a caller handling an upgrade passes the subprotocols on separately);
* ``Content-Length`` is kept: the body is streamed with the same framing the client used, so the app
  sees the same length, or chunked when the client sent chunked;
* client-sent identity headers are always dropped, matched on a normalized name (lower case, ``_`` as
  ``-``) because Django, PHP and every CGI gateway map ``X-User-Id`` and ``X_User_Id`` to one variable;
  any other underscored spelling of a header this policy manages (``Content_Length``,
  ``X_Forwarded_For``...) is dropped as well, as nginx does by default;
* ``X-Original-URL``/``X-Rewrite-URL`` and the method-override headers are dropped: some frameworks
  route on them, which would let a request reach a path or method the sidecar's rules never saw;
* the sidecar's own cookies are removed from ``Cookie``; the others are passed on as received;
* ``X-Forwarded-For``/``-Proto``/``-Host`` (and ``Forwarded``, ``X-Real-IP``, ``X-Forwarded-*``) are
  believed only from a trusted proxy, otherwise rebuilt from the connection;
* with an identity, ``Authorization: Bearer`` is consumed (the app never sees the token) unless
  ``forward_access_token`` is on, in which case it is set to the validated token. Without an identity
  (a public path) ``Authorization`` is the client's business and passes through; so does any
  non-Bearer scheme.
"""

from __future__ import annotations

import ipaddress
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

from multidict import CIMultiDict, MultiMapping

from sidecar.auth.assertion import AssertionSigner
from sidecar.config import IdentityHeaderSettings
from sidecar.identity import Identity

__all__ = ["APP_COOKIE", "HOP_BY_HOP", "HeaderPolicy", "response_headers"]

# Forward-auth: the Cookie header the app should get (the sidecar's own cookies removed).
APP_COOKIE: Final = "X-Authsidecar-Cookie"

# RFC 9110 §7.6.1, plus Proxy-Connection (never standard, still sent by old clients).
HOP_BY_HOP: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authorization", "proxy-authenticate",
    }
)
_IDENTITY_PREFIXES: Final = ("x-user-", "x-auth-request-")
# oauth2-proxy's names: an app written against it may trust them.
_FORWARDED_IDENTITY: Final = frozenset(
    {
        "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
        "x-forwarded-access-token", "x-forwarded-preferred-username",
    }
)
_ALWAYS_DROP: Final = frozenset(
    {
        "host", "expect", "x-request-id",
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept",
        "x-original-url", "x-rewrite-url",
        "x-http-method-override", "x-http-method", "x-method-override",
    }
)

# Actions, by lower-cased header name.
_KEEP, _DROP, _COOKIE, _AUTH, _XFF, _XFP, _XFH, _TRUSTED_ONLY = range(8)
_ACTIONS: Final = {
    **dict.fromkeys(HOP_BY_HOP | _ALWAYS_DROP, _DROP),
    "cookie": _COOKIE,
    "authorization": _AUTH,
    "x-forwarded-for": _XFF,
    "x-forwarded-proto": _XFP,
    "x-forwarded-host": _XFH,
    "forwarded": _TRUSTED_ONLY,
    "x-real-ip": _TRUSTED_ONLY,
}

# C0 controls and DEL: CR/LF would end the header, NUL truncates it in C servers.
_CONTROL: Final = dict.fromkeys([*range(0x20), 0x7F])
_CACHE_LIMIT: Final = 1024
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: OrderedDict[_K, _V], key: _K, value: _V) -> _V:
    """Insert into a bounded cache, evicting the oldest entry (keys may be client-controlled).

    An OrderedDict: evicting the first key of a plain dict again and again walks over every slot
    deleted before it (``next(iter(d))``), a cost that grows with the churn this bound is for.
    """
    if len(cache) >= _CACHE_LIMIT:
        cache.popitem(last=False)
    cache[key] = value
    return value


def _clean(value: str) -> str:
    """A header value that cannot end the header line: control characters are removed."""
    return value if value.isprintable() else value.translate(_CONTROL).strip()


def _claim_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(t for t in map(_claim_text, value) if t is not None)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


class HeaderPolicy:
    """Request-header rules compiled from the settings; :meth:`upstream_headers` runs per request."""

    def __init__(
        self,
        settings: IdentityHeaderSettings,
        trusted_proxies: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        *,
        cookie_filter: Callable[[str], str | None],
        assertion: AssertionSigner | None = None,
    ) -> None:
        """``cookie_filter``: a ``Cookie`` header without the sidecar's own cookies (the session
        store's ``CookieCache.for_app``, built from ``CookieNames``: the one list of those names).
        ``assertion``: signs the identity assertion header, when it is enabled."""
        self._assertion = assertion
        self._trusted = tuple(trusted_proxies)
        self._cookie_filter = cookie_filter
        self._forward_token = settings.forward_access_token
        mapped = (settings.user_id, settings.email, settings.groups, settings.username)
        self._identity_names = frozenset(
            _normalize(n) for n in (*mapped, *settings.claims.values(), *settings.strip,
                                    settings.assertion.header)
        ) | _FORWARDED_IDENTITY
        self._managed = frozenset(_normalize(n) for n in (*_ACTIONS, "content-length"))
        self._user_id, self._email, self._groups, self._username = mapped
        self._claim_headers = tuple(settings.claims.items())
        # Per-name action, per-Connection-value names, per-address trust, per-Cookie-header result,
        # per-identity header block.
        self._actions: OrderedDict[str, int] = OrderedDict()
        self._connections: OrderedDict[str, frozenset[str] | None] = OrderedDict()
        self._trust: OrderedDict[str, bool] = OrderedDict()
        self._identities: OrderedDict[int, tuple[Identity, tuple[tuple[str, str], ...]]] = OrderedDict()
        self._auth_request: OrderedDict[int, tuple[Identity, tuple[tuple[str, str], ...]]] = OrderedDict()

    # -- per request -------------------------------------------------------------------------------

    def upstream_headers(
        self,
        incoming: MultiMapping[str],
        *,
        peer: str | None,
        scheme: str,
        host: str,
        identity: Identity | None,
        access_token: str | None,
        request_id: str,
    ) -> CIMultiDict[str]:
        """The headers to send the app for one request (see the module docstring for the rules)."""
        out: list[tuple[str, str]] = []
        actions = self._actions
        connection = incoming.get("Connection")
        named = self._connection_named(connection) if connection else None
        trusted = self.is_trusted(peer)
        cookies: list[str] | None = None
        chain: list[str] | None = None
        proto = fwd_host = None
        for name, value in incoming.items():
            action = actions.get(name)
            if action is None:
                action = self._learn(name)
            if named is not None and name.lower() in named:
                continue
            if action == _KEEP:
                out.append((name, value))
            elif action == _DROP:
                continue
            elif action == _COOKIE:
                if cookies is None:
                    cookies = [value]
                else:
                    cookies.append(value)
            elif action == _AUTH:
                # With an identity the Bearer token was the sidecar's to consume (or is replaced
                # below when forwarded); other schemes and public requests pass through.
                if identity is None or not (self._forward_token or value[:6].lower() == "bearer"):
                    out.append((name, value))
            elif not trusted:
                continue
            elif action == _XFF:
                if chain is None:
                    chain = [value]
                else:
                    chain.append(value)
            elif action == _XFP:
                proto = value
            elif action == _XFH:
                fwd_host = value
            else:  # _TRUSTED_ONLY
                out.append((name, value))

        if cookies is not None:
            cookie = self._cookie_filter(cookies[0] if len(cookies) == 1 else "; ".join(cookies))
            if cookie is not None:
                out.append(("Cookie", cookie))
        if peer is not None:
            out.append(("X-Forwarded-For", f"{', '.join(chain)}, {peer}" if chain else peer))
        out.append(("X-Forwarded-Proto", proto or scheme))
        out.append(("X-Forwarded-Host", fwd_host or host))
        out.append(("X-Request-Id", request_id))
        if identity is not None:
            out.extend(self.identity_headers(identity))
            if self._assertion is not None:
                out.append((self._assertion.header, self._assertion.assertion(identity)))
            if self._forward_token and access_token:
                out.append(("Authorization", "Bearer " + _clean(access_token)))
        return CIMultiDict(out)

    def client_ip(self, incoming: MultiMapping[str], peer: str | None) -> str:
        """The client's address: the rightmost untrusted hop of ``X-Forwarded-For`` (for logging)."""
        if peer is None:
            return "unknown"
        if not self._is_trusted(peer):
            return peer
        hops = [h.strip() for v in incoming.getall("X-Forwarded-For", ()) for h in v.split(",")]
        hops = [h for h in hops if h]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    # -- compiled lookups --------------------------------------------------------------------------

    def _learn(self, name: str) -> int:
        lower = name.lower()
        normal = lower.replace("_", "-")
        spoofed = normal in self._identity_names or normal.startswith(_IDENTITY_PREFIXES)
        if spoofed or (normal != lower and normal in self._managed):
            action = _DROP
        elif normal.startswith("x-forwarded-"):
            action = _ACTIONS.get(lower, _TRUSTED_ONLY)
        else:
            action = _ACTIONS.get(lower, _KEEP)
        return _remember(self._actions, name, action)

    def _connection_named(self, connection: str) -> frozenset[str] | None:
        if connection in self._connections:
            return self._connections[connection]
        # `Connection: keep-alive` / `close` / `upgrade` name nothing beyond the hop-by-hop set.
        tokens = frozenset(t.strip().lower() for t in connection.split(",")) - HOP_BY_HOP - {"", "close"}
        return _remember(self._connections, connection, tokens or None)

    def _is_trusted(self, address: str) -> bool:
        known = self._trust.get(address)
        if known is not None:
            return known
        trusted = False
        if self._trusted:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is not None:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                trusted = any(ip in net for net in self._trusted)
        return _remember(self._trust, address, trusted)

    def is_trusted(self, peer: str | None) -> bool:
        """Whether ``peer`` is one of ``trusted_proxies`` (whose forwarding headers are believed)."""
        return peer is not None and self._is_trusted(peer)

    def verify_headers(self, identity: Identity, access_token: str,
                       cookies: list[str]) -> list[tuple[str, str]]:
        """The response headers of a forward-auth 200: the ``X-User-*`` block, oauth2-proxy's
        ``X-Auth-Request-*`` names, the assertion, the access token only when forwarded, and
        ``X-Authsidecar-Cookie``: the request's ``Cookie`` without the sidecar's own cookies, for
        the gateway to send the app instead (the app never sees the session's tokens).

        Every identity header is present, empty when the identity has no value: a gateway that
        copies a named header would otherwise leave the client's own (or, Caddy before 2.7, its
        placeholder's text) in place.
        """
        entry = self._auth_request.get(id(identity))
        if entry is not None and entry[0] is identity:
            block = entry[1]
        else:
            values = [
                ("X-Auth-Request-User", identity.sub),
                ("X-Auth-Request-Email", identity.email),
                ("X-Auth-Request-Groups", ",".join(identity.groups)),
                ("X-Auth-Request-Preferred-Username", identity.username),
            ]
            block = tuple((n, _clean(v or "")) for n, v in (*self._identity_values(identity), *values))
            _remember(self._auth_request, id(identity), (identity, block))
        out = list(block)
        cookie = self._cookie_filter("; ".join(cookies)) if cookies else None
        out.append((APP_COOKIE, cookie or ""))
        if self._assertion is not None:
            out.append((self._assertion.header, self._assertion.assertion(identity)))
        if self._forward_token:
            out.append(("X-Auth-Request-Access-Token", _clean(access_token)))
        return out

    def identity_headers(self, identity: Identity) -> tuple[tuple[str, str], ...]:
        """The ``X-User-*`` block for ``identity`` (names from the settings), cached per object."""
        # Identities are cached per token upstream, so the same object comes back request after
        # request. The entry holds the object itself: its id cannot be reused while it is cached.
        entry = self._identities.get(id(identity))
        if entry is not None and entry[0] is identity:
            return entry[1]
        block = tuple((name, _clean(v)) for name, v in self._identity_values(identity) if v)
        _remember(self._identities, id(identity), (identity, block))
        return block

    def _identity_values(self, identity: Identity) -> list[tuple[str, str | None]]:
        values = [
            (self._user_id, identity.sub),
            (self._email, identity.email),
            (self._groups, ",".join(identity.groups)),
            (self._username, identity.username),
        ]
        claims = identity.claims
        values.extend((header, _claim_text(claims.get(claim))) for claim, header in self._claim_headers)
        return values


def response_headers(upstream: Mapping[str, str] | Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """The app's response headers for the client: all but hop-by-hop (RFC 9110 §7.6.1).

    ``Content-Length`` and ``Content-Encoding`` are kept: the body is relayed byte for byte (never
    decompressed), so a sized response stays sized; ``Transfer-Encoding`` is the server's to choose
    again. Every ``Set-Cookie`` survives.
    """
    out = CIMultiDict(upstream)
    connection = out.get("Connection")
    for name in HOP_BY_HOP:
        if name in out:
            out.popall(name)
    if connection:
        for token in connection.split(","):
            out.popall(token.strip(), None)
    return out
