"""Runtime: the long-lived resources of one sidecar process and their single lifetime.

Created before the app starts, stored once under ``keys.RUNTIME`` and filled in by ``start()`` from
``cleanup_ctx``: the upstream forwarder, the HTTP session to the provider, provider metadata
(discovered in the background with retries, so a provider outage at boot delays readiness rather
than crashing the pod), the JWKS cache, the token validator and the OIDC client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import aiohttp

from sidecar.config import Settings
from sidecar.errors import ProviderError
from sidecar.identity import Clock
from sidecar.observability import Metrics
from sidecar.oidc.client import OidcClient
from sidecar.oidc.discovery import ProviderMetadata, discover
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.tokens import TokenPolicy, TokenValidator
from sidecar.proxy.forward import Forwarder


class Runtime:
    """Owns every resource that needs I/O; the request path only reads its attributes."""

    def __init__(self, settings: Settings, metrics: Metrics, clock: Clock, log: Any) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.log = log
        self.forwarder = Forwarder(settings.upstream, metrics)
        self.session: aiohttp.ClientSession | None = None
        self.meta: ProviderMetadata | None = None
        self.jwks: JwksCache | None = None
        self.validator: TokenValidator | None = None
        self.client: OidcClient | None = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def ready(self) -> bool:
        """Provider metadata known and signing keys loaded: the sidecar can judge tokens."""
        return self.jwks is not None and self.jwks.ready and not self.closing

    async def start(self) -> None:
        await self.forwarder.start()
        oidc = self.settings.oidc
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=oidc.timeout),
            headers={"User-Agent": "authsidecar"},
        )
        self._task = asyncio.create_task(self._connect(), name="provider-connect")
        # Give a healthy provider the chance to be ready before the first request arrives.
        await asyncio.wait({self._task}, timeout=oidc.timeout)

    async def _connect(self) -> None:
        assert self.session is not None
        oidc = self.settings.oidc
        delay = 1.0
        while True:
            try:
                meta = await discover(self.session, oidc, oidc.timeout)
                break
            except ProviderError as exc:
                self.metrics.provider_errors.labels(endpoint="discovery").inc()
                self.log.warning("provider_discovery_failed", reason=exc.reason, retry_in_s=round(delay, 1))
                await asyncio.sleep(delay * (1 + random.random() / 4))  # noqa: S311 - jitter only
                delay = min(delay * 2, 60.0)
        self.meta = meta
        self.jwks = JwksCache(
            meta.jwks_uri,
            self.session,
            algorithms=oidc.algorithms,
            refresh_interval=oidc.jwks_refresh_interval,
            unknown_kid_cooldown=oidc.unknown_kid_cooldown,
            timeout=oidc.timeout,
            clock=self.clock,
            metrics=self.metrics,
            logger=self.log,
        )
        # The provider's exact issuer string (discovery tolerates a trailing-slash difference).
        policy = dataclasses.replace(TokenPolicy.from_settings(oidc), issuer=meta.issuer)
        # Identity.claims carries only what rules and extra identity headers read.
        keep = {name for rule in self.settings.rules for name in rule.claims}
        keep |= set(self.settings.identity_headers.claims)
        self.validator = TokenValidator(
            policy, self.jwks, self.clock, self.metrics, self.settings.tokens.validation_cache_size,
            keep_claims=keep,
        )
        secret = oidc.client_secret.get_secret_value() if oidc.client_secret else None
        self.client = OidcClient(self.session, meta, oidc.client_id, secret, oidc.timeout, self.metrics)
        await self.jwks.start()
        self.connected.set()

    async def close(self) -> None:
        self.closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.jwks is not None:
            await self.jwks.close()
        if self.session is not None:
            await self.session.close()
        await self.forwarder.close()
