"""The provider link: connects to the OpenID provider in the background, then publishes one snapshot.

A provider outage at boot delays readiness rather than crashing the pod: discovery is retried with
backoff until it succeeds, then the signing keys are loaded and a frozen :class:`Provider` (metadata,
validator, client, keys) is published at once. Nothing else is ever half there: the request path asks
:meth:`ProviderLink.get` and either has everything or gets ``ProviderError("not_ready")`` (a 503, not
a 401 that would send a browser into a login loop for a valid token).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Collection
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from sidecar.config import OidcSettings
from sidecar.errors import ProviderError
from sidecar.identity import Clock
from sidecar.observability import Logger, Metrics
from sidecar.oidc.claims import TokenPolicy
from sidecar.oidc.client import OidcClient
from sidecar.oidc.discovery import ProviderMetadata, discover
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.tokens import TokenValidator


@dataclass(frozen=True, slots=True)
class Provider:
    """Everything needed to judge tokens and talk to the provider, published once, complete."""

    meta: ProviderMetadata
    validator: TokenValidator
    client: OidcClient
    keys: JwksCache


class ProviderLink:
    """Owns the HTTP session to the provider and the background connect; one per process."""

    def __init__(self, oidc: OidcSettings, *, metrics: Metrics, clock: Clock, log: Logger,
                 cache_size: int, keep_claims: Collection[str]) -> None:
        self._oidc = oidc
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._cache_size = cache_size
        self._keep_claims = frozenset(keep_claims)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._provider: Provider | None = None
        # Set once the snapshot is published (tests and the demo wait on it).
        self.connected = asyncio.Event()

    @property
    def current(self) -> Provider | None:
        """The published snapshot, or None before the first successful connect."""
        return self._provider

    @property
    def ready(self) -> bool:
        """Metadata known and signing keys loaded: tokens can be judged."""
        provider = self._provider
        return provider is not None and provider.keys.ready

    def get(self) -> Provider:
        """The snapshot, when its keys are loaded; ``ProviderError("not_ready")`` otherwise."""
        provider = self._provider
        if provider is None or not provider.keys.ready:
            raise ProviderError("not_ready")
        return provider

    async def start(self) -> None:
        timeout = self._oidc.timeout
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": "authsidecar"},
        )
        self._task = asyncio.create_task(self._connect(self._session), name="provider-connect")
        # Give a healthy provider the chance to be ready before the first request arrives.
        await asyncio.wait({self._task}, timeout=timeout)

    async def _connect(self, session: aiohttp.ClientSession) -> None:
        oidc = self._oidc
        delay = 1.0
        while True:
            try:
                meta = await discover(session, oidc, oidc.timeout)
                break
            except ProviderError as exc:
                self._metrics.provider_errors.labels(endpoint="discovery").inc()
                self._log.warning("provider_discovery_failed", reason=exc.reason, retry_in_s=round(delay, 1))
                await asyncio.sleep(delay * (1 + random.random() / 4))  # noqa: S311 - jitter only
                delay = min(delay * 2, 60.0)
        keys = JwksCache(
            meta.jwks_uri, session, algorithms=oidc.algorithms,
            refresh_interval=oidc.jwks_refresh_interval, unknown_kid_cooldown=oidc.unknown_kid_cooldown,
            timeout=oidc.timeout, clock=self._clock, metrics=self._metrics, logger=self._log,
        )
        # The provider's exact issuer string (discovery tolerates a trailing-slash difference).
        policy = dataclasses.replace(TokenPolicy.from_settings(oidc), issuer=meta.issuer)
        validator = TokenValidator(policy, keys, self._clock, self._metrics, self._cache_size,
                                   keep_claims=self._keep_claims)
        secret = oidc.client_secret.get_secret_value() if oidc.client_secret else None
        client = OidcClient(session, meta, oidc.client_id, secret, oidc.timeout, self._metrics)
        await keys.start()
        self._provider = Provider(meta=meta, validator=validator, client=client, keys=keys)
        self.connected.set()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._provider is not None:
            await self._provider.keys.close()
        if self._session is not None:
            await self._session.close()


PROVIDER = web.AppKey("authsidecar.provider", ProviderLink)
