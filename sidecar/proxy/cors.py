"""CORS with credentials for an exact list of origins (Fetch standard, CORS protocol).

Hand-written rather than aiohttp-cors: that library configures CORS per route and installs its own
OPTIONS handlers, which collides with the sidecar's catch-all proxy route (every method, every
path), and it cannot express "answer the preflight here, add headers to a streamed upstream
response". The rules are few and compiled once; the request path does two dict lookups.
"""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.config import CorsSettings

_SIMPLE = frozenset({"accept", "accept-language", "content-language", "content-type"})


class CorsPolicy:
    def __init__(self, settings: CorsSettings) -> None:
        self.origins = frozenset(settings.allowed_origins)
        self.methods = frozenset(m.upper() for m in settings.allow_methods)
        self.headers = frozenset(h.lower() for h in settings.allow_headers) | _SIMPLE
        self._preflight = {
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": ", ".join(settings.allow_methods),
            "Access-Control-Allow-Headers": ", ".join(settings.allow_headers),
            "Access-Control-Max-Age": str(settings.max_age),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }

    def __bool__(self) -> bool:
        return bool(self.origins)

    def allows(self, origin: str) -> bool:
        # Origins are compared exactly (lower-cased scheme and host as configured; browsers send
        # them lower-case). "null" is never allowed.
        return origin.lower() in self.origins

    def preflight(self, origin: str, method: str, request_headers: str) -> Mapping[str, str] | None:
        """Headers answering an allowed preflight, or None to refuse it (no CORS headers at all)."""
        if not self.allows(origin) or method.upper() not in self.methods:
            return None
        asked = {h.strip().lower() for h in request_headers.split(",") if h.strip()}
        if not asked <= self.headers:
            return None
        return {"Access-Control-Allow-Origin": origin, **self._preflight}

    @staticmethod
    def actual(origin: str) -> Mapping[str, str]:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
        }
