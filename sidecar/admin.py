"""The admin listener: /healthz (liveness), /readyz (keys loaded), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from sidecar.keys import RUNTIME
from sidecar.runtime import Runtime


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.ready:
        return web.json_response({"status": "ready"})
    reason = "shutting_down" if runtime.closing else "keys_not_loaded"
    return web.json_response({"status": "not_ready", "reason": reason}, status=503)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[RUNTIME].metrics.registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One scrape sees every worker of `serve --workers N` (prometheus-client multiprocess mode).
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_admin_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
