"""The admin listener: /healthz (liveness), /readyz (keys loaded, not shutting down), /metrics."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from sidecar.oidc.provider import ProviderLink
from sidecar.store.watch import StoreWatch


class Health:
    """Readiness of one sidecar process: the provider's keys loaded, and not shutting down."""

    def __init__(self, provider: ProviderLink, registry: CollectorRegistry,
                 store: StoreWatch | None = None) -> None:
        self.provider = provider
        self.registry = registry
        self.store = store
        # Set once SIGTERM arrived: readiness fails so the load balancer stops sending traffic.
        self.closing = False

    def problem(self) -> str | None:
        """Why the process is not ready (a fixed identifier), or None when it is."""
        if self.closing:
            return "shutting_down"
        if not self.provider.ready:
            return "keys_not_loaded"
        if self.store is not None and not self.store.answered_once:
            # At start only: a shared store lost later is survived without taking the replica out.
            return "store_unavailable"
        return None


HEALTH = web.AppKey("authsidecar.health", Health)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problem = request.app[HEALTH].problem()
    if problem is None:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not_ready", "reason": problem}, status=503)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[HEALTH].registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One scrape sees every worker of `serve --workers N` (prometheus-client multiprocess mode).
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_admin_app(health: Health, middlewares: Sequence[Middleware] = ()) -> web.Application:
    app = web.Application(middlewares=middlewares)
    app[HEALTH] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
