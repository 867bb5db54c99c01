"""Every typed application and request key: the whole map of shared state at a glance.

Objects stored under app keys are created before the app starts and never reassigned (a started
aiohttp app is frozen); objects that need I/O to become ready (sessions, the JWKS cache) live on
:class:`sidecar.runtime.Runtime`, filled in by ``cleanup_ctx``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from sidecar.config import Settings
from sidecar.identity import Clock, Identity
from sidecar.observability import Metrics

if TYPE_CHECKING:
    from sidecar.runtime import Runtime

SETTINGS = web.AppKey("authsidecar.settings", Settings)
METRICS = web.AppKey("authsidecar.metrics", Metrics)
CLOCK: web.AppKey[Clock] = web.AppKey("authsidecar.clock")
RUNTIME: web.AppKey[Runtime] = web.AppKey("authsidecar.runtime")

# Callables applied to the response just before its headers are sent (new cookies after a refresh).
RESPONSE_HOOKS: web.RequestKey[list[Callable[[web.StreamResponse], None]]] = web.RequestKey(
    "authsidecar.response_hooks"
)
# Seconds until the app's response headers arrived (for the access log).
UPSTREAM_SECONDS = web.RequestKey("authsidecar.upstream_seconds", float)
REQUEST_ID = web.RequestKey("authsidecar.request_id", str)
IDENTITY = web.RequestKey("authsidecar.identity", Identity)
# Route class for metrics and logs: proxy | websocket | auth | preflight | other.
ROUTE_CLASS = web.RequestKey("authsidecar.route_class", str)
