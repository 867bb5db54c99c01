"""Application factories: the proxied listener and the admin listener.

Wiring only: every object is built here once, from the frozen settings, and handed to what uses it.
Each long-lived resource (the provider link, the app client, the authenticator's in-flight
refreshes, the login transactions' replay memory) is born and closed in one ``cleanup_ctx`` entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.admin import HEALTH, Health, create_admin_app
from sidecar.auth.assertion import JWKS_PATH, AssertionSigner
from sidecar.auth.authenticate import Authenticator
from sidecar.auth.backchannel import PATH as BACKCHANNEL_PATH
from sidecar.auth.backchannel import BackChannelLogout
from sidecar.auth.cookies import CookiePolicy
from sidecar.auth.csrf import CsrfTokens, OriginPolicy
from sidecar.auth.refresh import RefreshFlight
from sidecar.auth.return_to import ReturnToPolicy
from sidecar.auth.revocation import CLAIMS as REVOCATION_CLAIMS
from sidecar.auth.revocation import Revocation
from sidecar.auth.revoke_api import PATH as REVOKE_PATH
from sidecar.auth.revoke_api import REVOKE_API, RevokeApi
from sidecar.auth.routes import AuthRoutes
from sidecar.auth.server_session import CHANNEL as SESSIONS_CHANNEL
from sidecar.auth.server_session import ServerStore
from sidecar.auth.session import CookieCache, CookieStore, HeaderBudget, SessionStore
from sidecar.auth.transaction import TransactionStore, derive_key
from sidecar.config import Settings
from sidecar.identity import Clock
from sidecar.observability import LOGGER, Logger, Metrics, flush_logs, make_logger
from sidecar.oidc.provider import PROVIDER, ProviderLink
from sidecar.proxy.access import AccessPolicy
from sidecar.proxy.cors import CorsPolicy
from sidecar.proxy.forward import FORWARDER, Forwarder
from sidecar.proxy.gate import Gate
from sidecar.proxy.headers import HeaderPolicy
from sidecar.proxy.middleware import (
    ErrorMapper,
    cors_middleware,
    edge_middleware,
    http_error_middleware,
    response_decorator,
)
from sidecar.proxy.rules import PathSet, RuleSet
from sidecar.proxy.verify import VERIFY_PATH, Verify
from sidecar.store.base import SharedStore
from sidecar.store.host import HostStoreClient
from sidecar.store.memory import MemoryStore
from sidecar.store.redis import RedisStore
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch, keep_watching

LOGIN_PATH = "/auth/login"
# The assertion signer, when assertions are on (the admin listener publishes its keys too).
ASSERTION = web.AppKey("authsidecar.assertion", AssertionSigner)
# Request lines and header fields up to 64 KiB: a chunked ID token of a user in many groups makes
# a long Cookie header (aiohttp's default limit is 8 KiB).
MAX_FIELD = 65536


def public_origin(settings: Settings) -> str:
    """The sidecar's own origin as browsers see it (from the registered callback URL)."""
    parts = urlsplit(settings.callback_url)
    return f"{parts.scheme}://{parts.netloc}"


def _cookie_secret(settings: Settings) -> bytes:
    if settings.cookies.secret is not None:
        return settings.cookies.secret.get_secret_value().encode()
    # Only dev_mode gets here (the schema requires a secret otherwise): a key of this process
    # alone, never one derived from nothing that anyone with the source could compute.
    return secrets.token_bytes(32)


def create_app(
    settings: Settings,
    *,
    clock: Clock = time.time,
    registry: CollectorRegistry | None = None,
    log: Logger | None = None,
    host_store: str | None = None,
) -> web.Application:
    """Assemble the proxied listener's app. Nothing starts until the app is run.

    ``host_store``: the supervisor's Unix socket when this process is one of ``serve --workers N``
    (the workers then share refreshes and spent login states without Redis).
    """
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    if log is None:
        # Batched: one write per 20 ms of log lines rather than a write and a flush per line.
        log = make_logger(settings.logging.level, settings.logging.format, batched=True)
    # Identity.claims carries only what rules and extra identity headers read.
    keep = {name for rule in settings.rules for name in rule.claims} | set(settings.identity_headers.claims)
    # ... and what the deny-list looks up (a few short strings per cached identity).
    keep |= set(REVOCATION_CLAIMS)
    provider = ProviderLink(settings.oidc, metrics=metrics, clock=clock, log=log,
                            cache_size=settings.tokens.validation_cache_size, keep_claims=keep)
    # No upstream: forward-auth only (no app client, no proxy route).
    forwarder = Forwarder(settings.upstream, metrics) if settings.upstream is not None else None

    origin = public_origin(settings)
    secret = _cookie_secret(settings)
    policy = CookiePolicy(settings.cookies, settings.csrf)
    # One cache of parsed Cookie headers for the session store and the app-bound Cookie header.
    cookies = CookieCache(policy.names.pattern.match)
    csrf = CsrfTokens(derive_key(secret, b"authsidecar/csrf-key/v1"))
    shared = shared_store(settings, host_store)
    watch = StoreWatch(shared.kind, getattr(shared, "where", "localhost"), metrics, log,
                       answered_yet=not isinstance(shared, RedisStore))
    health = Health(provider, metrics.registry, store=watch)
    store: SessionStore
    server_store = None
    if settings.sessions.mode == "server" and isinstance(shared, RedisStore):
        store = server_store = ServerStore(
            shared, Sealer(secret, b"authsidecar/sessions/v1"), policy, csrf, cookies,
            lifetime=settings.cookies.refresh_token_max_age, cache_seconds=settings.sessions.cache_seconds,
            watch=watch,
        )
    else:
        budget = HeaderBudget(settings.cookies.max_header_bytes, metrics.session_cookie_bytes, log)
        store = CookieStore(policy, csrf, cookies, clock, settings.cookies.refresh_token_max_age, budget)
    flight = RefreshFlight(
        clock, shared if shared.kind != "memory" else None, Sealer(secret), watch=watch,
        coordination=metrics.refresh_coordination, wait=settings.oidc.timeout + 5.0,
        # How long a silent (timing-out) store is waited for: three of its command timeouts.
        patience=3 * settings.store.redis.command_timeout if settings.store.redis else 3.0,
    )
    revocation = Revocation(
        shared, Sealer(secret, b"authsidecar/revoked/v1"), clock=clock, provider=provider,
        metrics=metrics, log=log, watch=watch, max_lifetime=settings.tokens.max_lifetime,
        refresh_lifetime=settings.cookies.refresh_token_max_age, leeway=settings.oidc.leeway,
        sessions=server_store,
    )
    app_origins = (settings.app_url, *settings.allowed_return_origins, *settings.cors.allowed_origins)
    authenticator = Authenticator(
        provider=provider, store=store, csrf=csrf, origins=OriginPolicy(app_origins, origin),
        csrf_header=settings.csrf.header, csrf_exempt=PathSet(settings.csrf.exempt_paths),
        accept_bearer=settings.tokens.accept_bearer,
        refresh_token_path=settings.cookies.refresh_token_path, flight=flight, metrics=metrics, log=log,
        revocation=revocation,
    )
    transactions = TransactionStore(secret, policy, settings.cookies.transaction_max_age, clock,
                                    spent=shared, watch=watch)
    routes = AuthRoutes(
        settings=settings, authenticator=authenticator, store=store, transactions=transactions,
        return_to=ReturnToPolicy(settings.app_url, (origin, *settings.allowed_return_origins)),
        metrics=metrics, log=log, clock=clock,
    )
    assertion_settings = settings.identity_headers.assertion
    signer = (AssertionSigner(assertion_settings, issuer=origin, clock=clock)
              if assertion_settings.enabled else None)
    headers = HeaderPolicy(settings.identity_headers, settings.trusted_proxies,
                           cookie_filter=cookies.for_app, assertion=signer)
    rules, public = RuleSet(settings.rules), PathSet(settings.public_paths)
    access = AccessPolicy(authenticator=authenticator, rules=rules, public=public, metrics=metrics)
    verify = Verify(access=access, headers=headers, login_url=origin + LOGIN_PATH)

    cors = CorsPolicy(settings.cors)
    middlewares = [
        # 1. request id, metrics, access log, and every error -> HTTP in one place.
        edge_middleware(metrics, log, ErrorMapper(login_path=LOGIN_PATH, public_origin=origin),
                        access_log=settings.logging.access_log),
    ]
    if cors:
        # 2. CORS preflights for the allowed origins, answered before any authentication.
        middlewares.append(cors_middleware(cors, metrics))
    # 3. /auth/* routes, then the gate (authenticate -> rules -> identity headers -> the app).
    app = web.Application(
        middlewares=middlewares,
        handler_args={"max_field_size": MAX_FIELD, "max_line_size": MAX_FIELD},
    )
    app[PROVIDER] = provider
    if forwarder is not None:
        app[FORWARDER] = forwarder
    if signer is not None:
        app[ASSERTION] = signer
    app[HEALTH] = health
    app[LOGGER] = log
    if settings.admin.revoke_token is not None:
        app[REVOKE_API] = RevokeApi(revocation, settings.admin.revoke_token.get_secret_value(),
                                    label=settings.admin.revoke_label, log=log)
    # Headers of every response, streamed ones included: request id, CORS, refreshed cookies.
    app.on_response_prepare.append(response_decorator(cors if cors else None))
    app.cleanup_ctx.extend([
        _resource(provider.start, provider.close),
        _resource(None, authenticator.close),
        _resource(None, transactions.close),
        _resource(None, shared.close),
    ])
    if forwarder is not None:
        app.cleanup_ctx.append(_resource(forwarder.start, forwarder.close))
    # Revocations of every process into this one's deny-list (and everything still revoked, loaded).
    app.cleanup_ctx.append(_background(revocation.listen))
    if isinstance(shared, RedisStore):
        redis = shared
        app.cleanup_ctx.append(_background(lambda: keep_watching(redis.ping, watch)))
        if server_store is not None:
            # Saves and clears on other processes drop this process's copy of that session.
            invalidate = server_store.invalidate
            app.cleanup_ctx.append(_background(lambda: redis.listen(
                SESSIONS_CHANNEL, invalidate, on_failure=watch.failed, on_answer=watch.answered)))

    async def flush(_app: web.Application) -> None:
        flush_logs(log)

    async def on_shutdown(_app: web.Application) -> None:
        # Sidecar.stop() already gave open WebSockets their grace period; whatever is left is
        # closed with 1001 (going away).
        health.closing = True
        if forwarder is not None:
            await forwarder.close_websockets()

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(flush)
    # Forward-auth, for every method a gateway may use; before /auth/*'s catch-all.
    app.router.add_route("*", VERIFY_PATH, verify.handle)
    app.router.add_route("*", VERIFY_PATH + "/{original:.*}", verify.handle)  # Envoy's ext_authz
    if settings.logout.backchannel:
        # Before /auth/*'s catch-all. Server to server: no cookie is read, so no CSRF check applies
        # (the provider's signature on the logout token is what authenticates the request).
        backchannel = BackChannelLogout(
            provider=provider, revocation=revocation, store=shared, client_id=settings.oidc.client_id,
            leeway=settings.oidc.leeway, max_age=settings.logout.backchannel_max_age, clock=clock,
            metrics=metrics, log=log,
        )
        app.router.add_post(BACKCHANNEL_PATH, backchannel.handle)
    routes.register(app.router, settings.me_alias)
    if signer is not None:
        app.router.add_get(JWKS_PATH, _jwks_handler(signer))
    if forwarder is not None:
        # Everything else goes to the app (without one: a JSON 404).
        gate = Gate(access=access, headers=headers, forwarder=forwarder)
        app.router.add_route("*", "/{tail:.*}", gate.handle)
    return app


def shared_store(settings: Settings, host_store: str | None) -> SharedStore:
    """Redis for a fleet, the supervisor's host store for the workers of one host, else memory."""
    redis = settings.store.redis
    if settings.store.backend == "redis" and redis is not None:
        return RedisStore(redis)
    if host_store:
        return HostStoreClient(host_store)
    return MemoryStore()


def _background(
    run: Callable[[], Coroutine[Any, Any, None]],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry for a task that runs as long as the app."""

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name="store-watch")
        yield
        # Again until it ends: a cancellation that lands as redis-py's read timeout fires is
        # turned into that timeout (asyncio.timeout on Python 3.11) and the listener reads on.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return lifetime


def _jwks_handler(signer: AssertionSigner) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /.well-known/authsidecar/jwks.json``: the assertion's public keys (never a private member)."""

    async def jwks(_request: web.Request) -> web.Response:
        # Short caching: a verifier that meets an unknown kid fetches again anyway.
        return web.Response(body=signer.jwks_body, content_type="application/jwk-set+json",
                            headers={"Cache-Control": "public, max-age=300"})

    return jwks


def _resource(
    start: Callable[[], Awaitable[None]] | None, close: Callable[[], Awaitable[None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry for one resource: started with the app, closed with it (in reverse)."""

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        if start is not None:
            await start()
        yield
        await close()

    return lifetime


def admin_app_for(app: web.Application) -> web.Application:
    """The admin listener of a proxied app made by :func:`create_app` (same health, same metrics)."""
    admin = create_admin_app(app[HEALTH], middlewares=[http_error_middleware()])
    signer = app.get(ASSERTION)
    if signer is not None:
        admin.router.add_get(JWKS_PATH, _jwks_handler(signer))
    revoke = app.get(REVOKE_API)
    if revoke is not None:
        # Only with a configured secret, and only here: the proxied port has no such route.
        admin.router.add_post(REVOKE_PATH, revoke.handle)
    return admin
