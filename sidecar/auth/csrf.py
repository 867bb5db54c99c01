"""CSRF defences for cookie-authenticated unsafe requests: a signed double-submit token and an Origin check.

The token (OWASP "signed double-submit cookie"): ``base64url(r) "." base64url(HMAC-SHA256(k, r || binding))``
with ``r`` 16 random bytes and ``k`` derived from ``cookies.secret``. The SPA reads it from the
``XSRF-TOKEN`` cookie and echoes it in the ``X-XSRF-TOKEN`` header. A request passes when the header is
present, equals the cookie, and the MAC is valid for *this* session's binding. A sibling subdomain can
write a cookie for the parent domain, but without the secret it cannot mint a valid token, and a token
it obtained for its own session carries another binding.

The binding is the user's ``sub``. It is known wherever CSRF is checked (from the validated access
token), it survives access-token refresh and refresh-token rotation, and the refresh token itself
never reaches the app's paths (its cookie is ``Path=/auth``), so a digest of it could not be checked
there. The price: one user's tokens are interchangeable across that user's own sessions, which
gives an attacker nothing. Rotating ``cookies.secret`` invalidates every token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Literal

from sidecar.auth.return_to import origin_of

CsrfFailure = Literal["missing_header", "missing_cookie", "mismatch", "bad_signature"]

# Domain separation: the same cookies.secret also keys other things (the transaction encryption).
_KEY_LABEL = b"authsidecar/csrf/v1"
_RANDOM_BYTES = 16
# 16 bytes -> 22 base64url characters, 32 bytes -> 43, unpadded.
_TOKEN = re.compile(r"([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _as_bytes(text: str) -> bytes:
    # compare_digest refuses non-ASCII str; header values may carry any code point.
    return text.encode("utf-8", "surrogatepass")


class CsrfTokens:
    """Issues and verifies double-submit tokens bound to a session value (the user's ``sub``)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the CSRF secret must be at least 32 bytes")
        self._key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()

    def _mac(self, nonce: bytes, binding: str) -> bytes:
        # The nonce has a fixed length, so nonce || binding is unambiguous.
        return hmac.new(self._key, nonce + _as_bytes(binding), hashlib.sha256).digest()

    def issue(self, binding: str) -> str:
        """A new token for the session identified by ``binding``."""
        nonce = secrets.token_bytes(_RANDOM_BYTES)
        return f"{_b64encode(nonce)}.{_b64encode(self._mac(nonce, binding))}"

    def verify(self, header: str | None, cookie: str | None, binding: str) -> CsrfFailure | None:
        """None when the request passes, else the reason (a metric label and log field)."""
        if not header:
            return "missing_header"
        if not cookie:
            return "missing_cookie"
        if not hmac.compare_digest(_as_bytes(header), _as_bytes(cookie)):
            return "mismatch"
        match = _TOKEN.fullmatch(header)
        if match is None:
            return "bad_signature"
        try:
            nonce, mac = _b64decode(match[1]), _b64decode(match[2])
        except (binascii.Error, ValueError):
            return "bad_signature"
        if not hmac.compare_digest(mac, self._mac(nonce, binding)):
            return "bad_signature"
        return None


class OriginPolicy:
    """Defence in depth next to the token: which ``Origin``/``Referer`` an unsafe request may come from.

    ``self_origin`` is the sidecar's public origin; list the app's origin in ``allowed_origins`` when
    it differs. Rules, in order:

    * an ``Origin`` header is present: allowed only if it is one of those origins (``null`` never is);
    * no ``Origin`` and ``Sec-Fetch-Site: cross-site``: refused;
    * no ``Origin`` but a ``Referer``: its origin must be one of those origins;
    * none of these headers (older or privacy-stripping clients): allowed; the token still decides.
    """

    def __init__(self, allowed_origins: Iterable[str], self_origin: str) -> None:
        origins = set()
        for origin in (self_origin, *allowed_origins):
            normalized = origin_of(origin)
            if normalized is None:
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
            origins.add(normalized)
        self.origins: frozenset[str] = frozenset(origins)

    def allows(self, origin: str | None, sec_fetch_site: str | None, referer: str | None) -> bool:
        if origin is not None:
            # "null" (opaque origins: sandboxed frames, some redirects) has no origin and never matches.
            return origin_of(origin) in self.origins
        if sec_fetch_site is not None and sec_fetch_site.strip().lower() == "cross-site":
            return False
        if referer:
            return origin_of(referer) in self.origins
        return True


def origin_allowed(
    origin: str | None,
    sec_fetch_site: str | None,
    referer: str | None,
    allowed_origins: Iterable[str],
    self_origin: str,
) -> bool:
    """One-off form of :meth:`OriginPolicy.allows`; build an :class:`OriginPolicy` once for the hot path."""
    return OriginPolicy(allowed_origins, self_origin).allows(origin, sec_fetch_site, referer)


def is_websocket_upgrade(method: str, upgrade: str | None) -> bool:
    """Whether a request asks to upgrade to a WebSocket (RFC 6455 §4.1): its handshake carries the
    browser's cookies cross-site like any GET, so it gets the Origin check (§10.2)."""
    return upgrade is not None and upgrade.lower() == "websocket" and method == "GET"
