"""One digest per refresh token, and its three consumers agree on it: the deny-list refuses what
logout listed, the store's lease is one per token across processes, the single flight one per token
within a process. (The flow tests check the order: a listed token makes no token request.)"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import pytest
from prometheus_client import CollectorRegistry

from sidecar.auth.refresh import RefreshFlight
from sidecar.auth.token_digest import refresh_digest
from sidecar.observability import Metrics, make_logger
from sidecar.oidc.client import TokenSet
from sidecar.store.base import Lease
from sidecar.store.memory import MemoryStore
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch
from tests.auth.test_revocation import revocation
from tests.conftest import FakeClock


class LeaseLog(MemoryStore):
    """The memory store, noting every key a lease is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.leased: list[str] = []
        self.asked_twice = asyncio.Event()

    async def lease(self, key: str, ttl: float, fence: bytes | None = None) -> Lease | None:
        self.leased.append(key)
        if len(self.leased) >= 2:
            self.asked_twice.set()
        return await super().lease(key, ttl, fence)


class Provider:
    """Counts token requests per refresh token; each waits until released, so callers overlap."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.release = asyncio.Event()

    async def refresh(self, refresh_token: str) -> TokenSet:
        self.calls[refresh_token] = self.calls.get(refresh_token, 0) + 1
        await self.release.wait()
        return TokenSet(access_token=f"at-{refresh_token}", id_token=None, refresh_token=None,
                        expires_in=3600, token_type="Bearer")


def process(store: MemoryStore) -> RefreshFlight:
    """The refresh coordination of one process of a fleet sharing ``store``."""
    metrics = Metrics(CollectorRegistry())
    watch = StoreWatch("redis", "here", metrics, make_logger("warning", "json"))
    return RefreshFlight(FakeClock(), store, Sealer(b"s" * 32), watch=watch,
                         coordination=metrics.refresh_coordination, wait=5.0)


TOKENS = [
    pytest.param("rt-" + "a" * 40, id="opaque-ascii"),
    pytest.param("eyJjdHkiOiJKV1QiLCJlbmMiOiJBMjU2R0NNIn0." + "x" * 400, id="cognito-shaped-jwe"),
    pytest.param("r\udcff\u00e9", id="lone-surrogate-and-non-ascii-no-crash"),
]


@pytest.mark.parametrize("token", TOKENS)
def test_the_digest_is_a_sha256_that_never_holds_the_token_and_the_deny_list_entry_is_its_prefix(
    token: str,
) -> None:
    digest = refresh_digest(token)
    assert digest == refresh_digest(token)
    assert len(digest.sha256) == 32
    assert len(digest.hex) == 64
    assert digest.hex.startswith(digest.listed)
    assert len(digest.listed) == 32
    assert token not in digest.hex


def test_an_ascii_token_keeps_the_digest_earlier_releases_wrote() -> None:
    # A fleet upgraded one replica at a time: both versions name the same lease, and a refresh
    # token revoked by the earlier release stays refused.
    earlier = hashlib.sha256(b"rt-1").hexdigest()
    assert refresh_digest("rt-1").hex == earlier
    assert refresh_digest("rt-1").listed == earlier[:32]


def test_tokens_differing_only_in_non_ascii_have_different_digests() -> None:
    assert refresh_digest("r\u00e9").hex != refresh_digest("r\u00fc").hex
    assert refresh_digest("r\udcff").hex != refresh_digest("r?").hex


async def test_a_refresh_token_listed_at_logout_is_refused_by_the_digest_a_refresh_computes() -> None:
    token, other = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    here = revocation(MemoryStore())
    entries = await here.of_session(None, None, token)
    await here.revoke(entries, "logout")
    assert [e.kind for e in entries] == ["refresh"]
    assert here.refuses_refresh(refresh_digest(token))
    assert not here.refuses_refresh(refresh_digest(other))


async def test_two_processes_refreshing_one_token_at_once_ask_for_one_lease_and_make_one_request() -> None:
    store, provider = LeaseLog(), Provider()
    token = secrets.token_urlsafe(48)
    digest = refresh_digest(token)
    first, second = process(store), process(store)
    try:
        runs = [asyncio.ensure_future(flight.run(digest, lambda: provider.refresh(token)))
                for flight in (first, second)]
        await store.asked_twice.wait()  # both have asked for the lease; one holds it
        provider.release.set()
        results = await asyncio.gather(*runs)
    finally:
        await first.close()
        await second.close()
    assert [r.access_token for r in results] == [f"at-{token}"] * 2
    assert provider.calls == {token: 1}
    assert set(store.leased) == {f"refresh:{digest.hex}:lease"}
    assert all(token not in key for key in store.leased)


async def test_different_tokens_take_different_leases_and_make_their_own_requests() -> None:
    store, provider = LeaseLog(), Provider()
    tokens = [secrets.token_urlsafe(48) for _ in range(2)]
    flight = process(store)
    provider.release.set()
    try:
        for token in tokens:
            await flight.run(refresh_digest(token), lambda token=token: provider.refresh(token))
    finally:
        await flight.close()
    assert provider.calls == dict.fromkeys(tokens, 1)
    assert store.leased == [f"refresh:{refresh_digest(token).hex}:lease" for token in tokens]
