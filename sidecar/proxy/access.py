"""The access decision the proxy route and forward-auth share: a path the rules can judge, then
who the caller is (nobody needed on a public path), then the rules.

Compiled once at start-up; every step is a lookup or the authenticator's own (cached) work.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.auth.authenticate import Authenticator, Caller
from sidecar.errors import AmbiguousPath, Forbidden
from sidecar.observability import Metrics
from sidecar.proxy.rules import PathSet, RuleSet, check_path


class AccessPolicy:
    def __init__(self, *, authenticator: Authenticator, rules: RuleSet, public: PathSet,
                 metrics: Metrics) -> None:
        self.authenticator = authenticator
        self.rules = rules
        self.public = public
        decisions = metrics.auth_decisions
        self._ok = decisions.labels(outcome="ok")
        self._public = decisions.labels(outcome="public")
        self._forbidden = decisions.labels(outcome="forbidden_by_rule")
        self._ambiguous = decisions.labels(outcome="ambiguous_path")

    def vet(self, path: str) -> None:
        """Refuse a path with a dot segment, before anything else looks at it: "/public/../admin"
        must not pass as public, and the app might resolve it unlike the rules."""
        try:
            check_path(path)
        except AmbiguousPath:
            self._ambiguous.inc()
            raise

    async def decide(self, request: web.Request) -> Caller | None:
        """The caller allowed to make ``request`` (None on a public path for nobody in particular),
        or the rejection: ``TokenRejected``/``CsrfRejected`` from the authenticator, ``Forbidden``
        from a rule. ``vet`` the path first."""
        path = request.path
        if path in self.public:
            caller = await self.authenticator.identify_if_any(request)
            self._public.inc()
            return caller
        caller = await self.authenticator.authenticate(request)
        try:
            self.rules.check(request.method, path, caller.identity)
        except Forbidden:
            self._forbidden.inc()
            raise
        self._ok.inc()
        return caller
