"""The injector's two listeners: HTTPS ``POST /mutate`` for the API server, and the admin port
(``/healthz``, ``/readyz``, ``/metrics``) for the kubelet and Prometheus.

``/mutate`` never answers 500: a body over ``listen.max_body_bytes`` is 413, one that is no
AdmissionReview with a uid is 400, and everything else, a failure of the review itself included,
is an AdmissionReview echoing the request's uid (:mod:`sidecar.inject.review`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from sidecar.inject.review import Verdict, bad_request, failed, review
from sidecar.inject.settings import InjectorSettings
from sidecar.inject.tls import CertReloader
from sidecar.observability import Logger, flush_logs, make_logger, route_stdlib_logging
from sidecar.server import SafeAppRunner


class InjectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "authsidecar_injector_"
        self.reviews = Counter(p + "admission_reviews_total", "AdmissionReviews answered, by outcome "
                               "(injected, skipped, refused, invalid, error).", ["outcome"],
                               registry=registry)
        self.duration = Histogram(p + "admission_review_duration_seconds", "Time to answer one review.",
                                  registry=registry, buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1))
        self.reloads = Counter(p + "certificate_reloads_total", "Serving certificate reloads, by result.",
                               ["result"], registry=registry)
        self.expiry = Gauge(p + "certificate_expiry_timestamp_seconds",
                            "When the serving certificate expires.", registry=registry)


class Injector:
    """One injector process: settings, certificate, metrics, log, readiness."""

    def __init__(self, settings: InjectorSettings, *, log: Logger | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.log = log or make_logger(settings.logging.level, settings.logging.format)
        self.registry = registry or CollectorRegistry()
        self.metrics = InjectorMetrics(self.registry)
        self.tls = CertReloader(settings.listen.tls_cert, settings.listen.tls_key)
        self.metrics.expiry.set(self.tls.expires_at)
        self.closing = False
        # lingering_time: after a 413 the rest of an oversized upload is read for at most a
        # second (so the client sees the answer, not a reset), not aiohttp's default ten.
        self.webhook = SafeAppRunner(_webhook_app(self), handle_signals=False, access_log=None,
                                     shutdown_timeout=settings.listen.shutdown_grace, lingering_time=1.0)
        self.admin = SafeAppRunner(_admin_app(self), handle_signals=False, access_log=None)
        self.port = self.admin_port = 0
        self._watch: asyncio.Task[None] | None = None

    def reloaded(self, result: str) -> None:
        self.metrics.reloads.labels(result).inc()
        if result == "ok":
            self.metrics.expiry.set(self.tls.expires_at)
            self.log.info("certificate_reloaded", expires_at=self.tls.expires_at)
        else:
            self.log.warning("certificate_reload_failed", cert=str(self.tls.cert), key=str(self.tls.key))

    async def start(self) -> None:
        listen, admin = self.settings.listen, self.settings.admin
        await self.webhook.setup()
        await web.TCPSite(self.webhook, listen.host, listen.port, ssl_context=self.tls.context).start()
        self.port = _bound_port(self.webhook)
        await self.admin.setup()
        await web.TCPSite(self.admin, admin.host, admin.port).start()
        self.admin_port = _bound_port(self.admin)
        self._watch = asyncio.create_task(self.tls.watch(listen.cert_reload_interval, self.reloaded))

    async def stop(self) -> None:
        self.closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.webhook.cleanup()
        await self.admin.cleanup()


INJECTOR = web.AppKey("authsidecar.injector", Injector)
# What the MutatingWebhookConfiguration and the probes name (deploy/k8s/injector tests check them).
MUTATE_PATH = "/mutate"
HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"


async def mutate(request: web.Request) -> web.Response:
    injector = request.app[INJECTOR]
    started = time.perf_counter()
    limit = injector.settings.listen.max_body_bytes
    verdict: Verdict
    if request.content_length is not None and request.content_length > limit:
        verdict = bad_request("too_large", f"body: over {limit} bytes")
        status = 413
    else:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw, verdict = b"", bad_request("too_large", f"body: over {limit} bytes")
            status = 413
        else:
            try:
                verdict = review(raw, injector.settings.sidecar)
            except Exception:
                injector.log.exception("admission_review_failed")
                verdict = failed(raw)
            status = verdict.status
    injector.metrics.reviews.labels(verdict.outcome).inc()
    injector.metrics.duration.observe(time.perf_counter() - started)
    log = injector.log.info if verdict.outcome in ("injected", "skipped") else injector.log.warning
    log("admission_review", uid=verdict.uid, outcome=verdict.outcome, status=status,
        detail=verdict.message, **verdict.fields)
    response = web.json_response(verdict.body, status=status, headers={"Cache-Control": "no-store"})
    if status == 413:
        response.force_close()
    return response


def _webhook_app(injector: Injector) -> web.Application:
    # aiohttp refuses bodies over client_max_size itself when no Content-Length announced them.
    app = web.Application(client_max_size=injector.settings.listen.max_body_bytes)
    app[INJECTOR] = injector
    app.router.add_post(MUTATE_PATH, mutate)
    return app


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[INJECTOR].closing:
        return web.json_response({"status": "not_ready", "reason": "shutting_down"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[INJECTOR].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _admin_app(injector: Injector) -> web.Application:
    app = web.Application()
    app[INJECTOR] = injector
    app.router.add_get(HEALTHZ, healthz)
    app.router.add_get(READYZ, readyz)
    app.router.add_get(METRICS, metrics)
    return app


def _bound_port(runner: web.AppRunner) -> int:
    return next((int(a[1]) for a in runner.addresses if isinstance(a, tuple)), 0)


async def serve_injector(settings: InjectorSettings) -> int:
    """``authsidecar inject``: serve until SIGTERM / SIGINT; 1 when the certificate or a port fails."""
    log = make_logger(settings.logging.level, settings.logging.format)
    try:
        injector = Injector(settings, log=log)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.error("certificate_unusable", cert=str(settings.listen.tls_cert), error=str(exc))
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    unroute = route_stdlib_logging(log)
    try:
        await injector.start()
    except OSError as exc:
        await injector.stop()
        unroute()
        log.error("cannot_listen", error=exc.strerror or str(exc))
        return 1
    log.info("injector_listening", port=injector.port, admin_port=injector.admin_port,
             image=settings.sidecar.image, native_sidecar=settings.sidecar.native_sidecar)
    await stop.wait()
    log.info("injector_stopping", grace_s=settings.listen.shutdown_grace)
    await injector.stop()
    unroute()
    flush_logs(log)
    return 0
