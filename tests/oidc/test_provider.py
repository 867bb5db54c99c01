"""The provider link: nothing half there — either the whole snapshot with loaded keys, or "not ready"."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from sidecar.config import OidcSettings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.errors import ProviderError
from sidecar.observability import Metrics, make_logger
from sidecar.oidc.provider import ProviderLink
from tests.conftest import FakeClock


@pytest.fixture
async def dev_provider() -> AsyncIterator[tuple[DevProvider, str]]:
    provider = DevProvider(ProviderConfig(), FakeClock.from_wall_clock())
    runner, issuer = await start_provider(provider)
    yield provider, issuer
    await runner.cleanup()


def link_to(issuer: str, clock: FakeClock) -> ProviderLink:
    oidc = OidcSettings(issuer=issuer, client_id="authsidecar-dev", provider="cognito", cognito_domain=issuer,
                        timeout=2)
    return ProviderLink(oidc, metrics=Metrics(CollectorRegistry()), clock=clock,
                        log=make_logger("debug", "json", io.StringIO()), cache_size=10, keep_claims=())


async def test_before_connecting_every_caller_gets_not_ready(dev_provider: tuple[DevProvider, str]) -> None:
    link = link_to(dev_provider[1], FakeClock.from_wall_clock())
    assert link.current is None
    assert not link.ready
    with pytest.raises(ProviderError) as refused:
        link.get()
    assert refused.value.reason == "not_ready"


async def test_a_healthy_provider_is_published_whole_once_its_keys_load(
    dev_provider: tuple[DevProvider, str],
) -> None:
    provider, issuer = dev_provider
    link = link_to(issuer, FakeClock.from_wall_clock())
    await link.start()
    try:
        await link.connected.wait()
        snapshot = link.get()
        assert link.ready
        assert snapshot.meta.issuer == issuer
        assert snapshot.keys.ready
        token = provider.mint_access_token("alice")
        assert (await snapshot.validator.access(token)).username == "alice"
        assert link.get() is snapshot
    finally:
        await link.close()


async def test_keys_that_fail_to_load_keep_it_not_ready_until_they_do(
    dev_provider: tuple[DevProvider, str],
) -> None:
    provider, issuer = dev_provider
    provider.set_failure("jwks", "500")
    link = link_to(issuer, FakeClock.from_wall_clock())
    await link.start()
    try:
        await link.connected.wait()
        assert link.current is not None
        assert not link.ready
        with pytest.raises(ProviderError):
            link.get()
        provider.set_failure("jwks", "ok")
        assert await link.current.keys.refresh() is True
        assert link.get() is link.current
    finally:
        await link.close()


async def test_a_provider_down_at_boot_delays_readiness_and_start_never_raises() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    link = link_to(f"http://127.0.0.1:{closed_port}", FakeClock.from_wall_clock())
    await link.start()
    try:
        assert not link.ready
        with pytest.raises(ProviderError) as refused:
            link.get()
        assert refused.value.reason == "not_ready"
    finally:
        await link.close()
