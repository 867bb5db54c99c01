"""Writing and clearing the token cookies on a response.

Lifetimes: the access token cookie lives as long as its token. The ID token cookie lives as long as
the session (the refresh token's lifetime): an expired ID token is still the signed record of who is
logged in, needed for ``id_token_hint`` at logout and for the CSRF binding when ``/auth/refresh``
runs after the access token is gone. Its expiry is checked wherever its claims are used.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from sidecar.auth import cookies as ck
from sidecar.auth.cookies import CookieKind, CookiePolicy
from sidecar.auth.csrf import CsrfTokens
from sidecar.identity import Clock

_TOKEN_KINDS: tuple[CookieKind, ...] = ("access", "id", "refresh")


class SessionCookies:
    """The sidecar's cookies for one browser session: tokens, chunks, the CSRF token."""

    def __init__(self, policy: CookiePolicy, csrf: CsrfTokens, clock: Clock, session_max_age: int) -> None:
        self.policy = policy
        self.csrf = csrf
        self.clock = clock
        self.session_max_age = session_max_age

    def read(self, cookies: Mapping[str, str], kind: CookieKind) -> str | None:
        return ck.join(cookies, self.policy.name(kind))

    def write(
        self,
        response: web.StreamResponse,
        present: Mapping[str, str],
        *,
        access_token: str,
        access_exp: float,
        id_token: str | None,
        refresh_token: str | None,
        sub: str,
        xsrf: str | None = None,
    ) -> None:
        """Set the token cookies (chunked where needed), clear stale chunks, issue a CSRF token.

        ``xsrf`` is the CSRF token the browser holds: it is kept when still valid for ``sub`` so that
        requests the SPA already built with it do not fail during a refresh.
        """
        now = self.clock()
        self._put(response, present, "access", access_token, remaining=access_exp - now)
        if id_token is not None:
            self._put(response, present, "id", id_token, remaining=self.session_max_age)
        if refresh_token is not None:
            self._put(response, present, "refresh", refresh_token, remaining=None)
        if xsrf is None or self.csrf.verify(xsrf, xsrf, sub) is not None:
            response.set_cookie(self.policy.name("xsrf"), self.csrf.issue(sub), **self.policy.attrs("xsrf"))

    def _put(self, response: web.StreamResponse, present: Mapping[str, str], kind: CookieKind,
             value: str, *, remaining: float | None) -> None:
        name = self.policy.name(kind)
        parts = ck.split(name, value)
        attrs = self.policy.attrs(kind, remaining=remaining)
        for part_name, part in parts:
            response.set_cookie(part_name, part, **attrs)
        for old in ck.stale(name, present, len(parts)):
            response.set_cookie(old, "", **self.policy.clear_attrs(kind))

    def clear(self, response: web.StreamResponse, present: Mapping[str, str]) -> None:
        """Expire every sidecar cookie the browser sent, with the attributes it was set with."""
        for kind in (*_TOKEN_KINDS, "xsrf", "tx"):
            name = self.policy.name(kind)
            stale = ck.stale(name, present, 0)
            # Always clear the plain name too: the request may not have carried a Path=/auth cookie.
            for old in dict.fromkeys([name, *stale]):
                response.set_cookie(old, "", **self.policy.clear_attrs(kind))
