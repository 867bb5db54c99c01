"""The proxy route: path check → authenticator → rules → identity headers → the app.

Every step is a lookup in something compiled at start-up; the only awaits on the hot path are a
token cache miss (one signature check, then cached until ``exp``) and the app itself.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.keys import IDENTITY, REQUEST_ID, ROUTE_CLASS
from sidecar.proxy.access import AccessPolicy
from sidecar.proxy.forward import Forwarder, is_websocket
from sidecar.proxy.headers import HeaderPolicy


class Gate:
    """The catch-all handler in front of the app."""

    def __init__(self, *, access: AccessPolicy, headers: HeaderPolicy, forwarder: Forwarder) -> None:
        self.access = access
        self.headers = headers
        self.forwarder = forwarder

    async def handle(self, request: web.Request) -> web.StreamResponse:
        websocket = is_websocket(request)
        request[ROUTE_CLASS] = "websocket" if websocket else "proxy"
        self.access.vet(request.path)
        caller = await self.access.decide(request)
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
