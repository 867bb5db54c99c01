"""The open-redirect guard for ``return_to`` (login) and post-logout destinations.

:class:`ReturnToPolicy` is compiled once from ``app_url`` and ``allowed_return_origins``; ``resolve``
turns whatever a client sent into a URL that is safe to put in a ``Location`` header, or falls back
to ``app_url``. Two shapes are accepted, nothing else:

* an absolute-path reference (RFC 3986 §4.2) such as ``/orders/7?tab=2``: one ``/`` not followed by
  ``/`` or ``\\``, also after percent-decoding. It names a path on the **app's** origin, not the
  sidecar's: with the sidecar on ``api.example.com`` and the SPA on ``app.example.com``, ``/orders``
  means ``https://app.example.com/orders``. The answer is therefore always absolute,
  ``app_origin + path`` (``app_url``'s own path is not a prefix: ``/x`` is origin-relative);
* an absolute ``http(s)`` URL without userinfo whose origin (scheme, host, port; lower-cased, default
  port dropped) is ``app_url``'s or an allowed one. It is rebuilt from the parsed parts, so the
  browser is handed exactly the origin that was checked.

Anything with characters outside RFC 3986 (controls, spaces, backslashes, raw non-ASCII such as IDN
look-alikes), longer than 2048 characters, or of any other shape resolves to ``app_url``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from sidecar.origin import URI_CHARS as _URI_CHARS
from sidecar.origin import origin_of

__all__ = ["MAX_LENGTH", "ReturnToPolicy", "origin_of"]

MAX_LENGTH = 2048

_DECODED_BAD = re.compile(r"[\x00-\x1f\x7f\\]")
_PATH_END = re.compile(r"[?#]")
_MAX_DECODE_ROUNDS = 4


def _safe_path(path: str) -> bool:
    """A path that starts with exactly one ``/`` and stays so after repeated percent-decoding."""
    decoded = path
    for _ in range(_MAX_DECODE_ROUNDS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        return False  # still changing after several rounds: nobody legitimately encodes that deep
    return decoded.startswith("/") and decoded[1:2] != "/" and not _DECODED_BAD.search(decoded)


class ReturnToPolicy:
    """Where a browser may be sent after login or logout; built once at start-up."""

    def __init__(self, app_url: str, allowed_origins: Iterable[str]) -> None:
        # The settings schema refuses both cases first (check-config == serve); these guard direct use.
        app_origin = origin_of(app_url)
        if app_origin is None:
            raise ValueError(f"app_url {app_url!r} has no http(s) origin")
        origins = {app_origin}
        for origin in allowed_origins:
            normalized = origin_of(origin)
            if normalized is None:
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
            origins.add(normalized)
        self.app_url = app_url
        self.app_origin = app_origin
        self.origins: frozenset[str] = frozenset(origins)

    def resolve(self, candidate: str | None, default: str | None = None) -> str:
        """A safe absolute URL for ``candidate``; ``default`` (``app_url``) when missing or unsafe."""
        fallback = default or self.app_url
        if not candidate or len(candidate) > MAX_LENGTH or not _URI_CHARS.fullmatch(candidate):
            return fallback
        if candidate.startswith("/"):
            path = _PATH_END.split(candidate, maxsplit=1)[0]
            return self.app_origin + candidate if _safe_path(path) else fallback
        return self._absolute(candidate) or fallback

    def _absolute(self, candidate: str) -> str | None:
        origin = origin_of(candidate)
        if origin is None or origin not in self.origins:
            return None
        parts = urlsplit(candidate)
        path = parts.path or "/"
        if not _safe_path(path):
            return None
        query = f"?{parts.query}" if parts.query else ""
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        return f"{origin}{path}{query}{fragment}"
