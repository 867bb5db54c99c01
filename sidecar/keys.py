"""Every typed request key: the per-request state shared between the middleware and the handlers.

A leaf: it imports nothing of the sidecar's but the :class:`~sidecar.identity.Identity` type. Each
long-lived resource's application key lives beside its type (``sidecar.oidc.provider.PROVIDER``,
``sidecar.proxy.forward.FORWARDER``, ``sidecar.admin.HEALTH``), stored once before the app starts and
never reassigned (a started aiohttp app is frozen).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from sidecar.identity import Identity

# Callables applied to the response just before its headers are sent (new cookies after a refresh).
RESPONSE_HOOKS: web.RequestKey[list[Callable[[web.StreamResponse], None]]] = web.RequestKey(
    "authsidecar.response_hooks"
)
# Seconds until the app's response headers arrived (for the access log).
UPSTREAM_SECONDS = web.RequestKey("authsidecar.upstream_seconds", float)
REQUEST_ID = web.RequestKey("authsidecar.request_id", str)
# Forward-auth: the login URL a 401 names in a header instead of redirecting (sidecar.proxy.verify).
LOGIN_URL = web.RequestKey("authsidecar.login_url", str)
IDENTITY = web.RequestKey("authsidecar.identity", Identity)
# Route class for metrics and logs: proxy | websocket | auth | preflight | other.
ROUTE_CLASS = web.RequestKey("authsidecar.route_class", str)
