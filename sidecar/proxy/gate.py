"""The proxy route: path check → authenticator → rules → identity headers → the app.

Every step is a lookup in something compiled at start-up; the only awaits on the hot path are a
token cache miss (one signature check, then cached until ``exp``) and the app itself.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.auth.authenticate import Authenticator
from sidecar.errors import AmbiguousPath, Forbidden
from sidecar.keys import IDENTITY, REQUEST_ID, ROUTE_CLASS
from sidecar.observability import Metrics
from sidecar.proxy.forward import Forwarder, is_websocket
from sidecar.proxy.headers import HeaderPolicy
from sidecar.proxy.rules import PathSet, RuleSet, check_path


class Gate:
    """The catch-all handler in front of the app."""

    def __init__(self, *, authenticator: Authenticator, rules: RuleSet, public: PathSet,
                 headers: HeaderPolicy, forwarder: Forwarder, metrics: Metrics) -> None:
        self.authenticator = authenticator
        self.rules = rules
        self.public = public
        self.headers = headers
        self.forwarder = forwarder
        decisions = metrics.auth_decisions
        self._ok = decisions.labels(outcome="ok")
        self._public = decisions.labels(outcome="public")
        self._forbidden = decisions.labels(outcome="forbidden_by_rule")
        self._ambiguous = decisions.labels(outcome="ambiguous_path")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        websocket = is_websocket(request)
        request[ROUTE_CLASS] = "websocket" if websocket else "proxy"
        path = request.path
        try:
            # Before the public paths: "/public/../admin" must not pass as public.
            check_path(path)
        except AmbiguousPath:
            self._ambiguous.inc()
            raise
        if path in self.public:
            caller = await self.authenticator.identify_if_any(request)
            self._public.inc()
        else:
            caller = await self.authenticator.authenticate(request)
            try:
                self.rules.check(request.method, path, caller.identity)
            except Forbidden:
                self._forbidden.inc()
                raise
            self._ok.inc()
        if caller is not None:
            request[IDENTITY] = caller.identity
        upstream = self.headers.upstream_headers(
            request.headers,
            peer=request.remote,
            scheme=request.scheme,
            host=request.host,
            identity=caller.identity if caller is not None else None,
            access_token=caller.access_token if caller is not None else None,
            request_id=request[REQUEST_ID],
        )
        if websocket:
            return await self.forwarder.websocket(request, upstream)
        return await self.forwarder.forward(request, upstream)
