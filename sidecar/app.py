"""Application factories: the proxied listener and the admin listener."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar import admin
from sidecar.auth.cookies import CookieNames
from sidecar.auth.flow import SessionService
from sidecar.auth.routes import AuthRoutes
from sidecar.config import Settings
from sidecar.identity import Clock
from sidecar.keys import CLOCK, METRICS, RUNTIME, SETTINGS
from sidecar.observability import Metrics, flush_logs, make_logger
from sidecar.proxy.cors import CorsPolicy
from sidecar.proxy.gate import CookieCache, Gate
from sidecar.proxy.headers import HeaderPolicy
from sidecar.proxy.middleware import ErrorMapper, cors_middleware, edge_middleware, response_decorator
from sidecar.runtime import Runtime

LOGIN_PATH = "/auth/login"
# Request lines and header fields up to 64 KiB: a chunked ID token of a user in many groups makes
# a long Cookie header (aiohttp's default limit is 8 KiB).
MAX_FIELD = 65536


def public_origin(settings: Settings) -> str:
    """The sidecar's own origin as browsers see it (from the registered callback URL)."""
    parts = urlsplit(settings.callback_url)
    return f"{parts.scheme}://{parts.netloc}"


def create_app(
    settings: Settings,
    *,
    clock: Clock = time.time,
    registry: CollectorRegistry | None = None,
    log: Any = None,
) -> web.Application:
    """Assemble the proxied listener's app. Nothing starts until the app is run."""
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    if log is None:
        # Batched: one write per 20 ms of log lines rather than a write and a flush per line.
        log = make_logger(settings.logging.level, settings.logging.format, batched=True)
    runtime = Runtime(settings, metrics, clock, log)
    origin = public_origin(settings)
    # One cache of parsed Cookie headers for the session code, the gate and the app-bound header
    # (the session code needs its reader before it exists, hence the names built here).
    cookies = CookieCache(CookieNames.build(settings.cookies, settings.csrf).pattern)
    sessions = SessionService(settings, runtime, origin, cookies.get)
    headers = HeaderPolicy(settings.identity_headers, settings.trusted_proxies, cookie_filter=cookies.for_app)
    gate = Gate(settings, runtime, headers, sessions, cookies)
    mapper = ErrorMapper(
        login_path=LOGIN_PATH,
        public_origin=origin,
        on_session_end=lambda request, response: sessions.cookies.clear(response, cookies.get(request)),
    )
    cors = CorsPolicy(settings.cors)

    middlewares = [
        # 1. request id, metrics, access log, and SidecarError -> HTTP in one place.
        edge_middleware(metrics, log, mapper, access_log=settings.logging.access_log),
    ]
    if cors:
        # 2. CORS preflights for the allowed origins, answered before any authentication.
        middlewares.append(cors_middleware(cors, metrics))
    app = web.Application(
        middlewares=middlewares,
        handler_args={"max_field_size": MAX_FIELD, "max_line_size": MAX_FIELD},
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[CLOCK] = clock
    app[RUNTIME] = runtime
    # Headers of every response, streamed ones included: request id, CORS, refreshed cookies.
    app.on_response_prepare.append(response_decorator(cors if cors else None))

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await sessions.close()
        await runtime.close()
        flush_logs(log)

    async def on_shutdown(_app: web.Application) -> None:
        # Sidecar.stop() already gave open WebSockets their grace period; whatever is left is
        # closed with 1001 (going away).
        runtime.closing = True
        await runtime.forwarder.close_websockets()

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(on_shutdown)
    AuthRoutes(sessions).register(app.router, settings.me_alias)
    # Everything else goes to the app.
    app.router.add_route("*", "/{tail:.*}", gate.handle)
    return app


def create_admin_app(runtime: Runtime) -> web.Application:
    """Liveness, readiness and metrics, on their own listener so they never shadow app routes."""
    return admin.create_admin_app(runtime)
