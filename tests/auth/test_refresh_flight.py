"""RefreshFlight across processes on a real Redis: a slow store is not a lost one.

Two flights on one redis-server stand for two replicas. A store that times out may hold a lease
(ours or another's): refreshing alone then is the second use of a rotating refresh token that ends
the sign-in, so the flight waits a bounded time and gives up with ``StoreTimeout`` (a 503) instead.
A store that refuses the connection is down: the flight refreshes alone, as it always did.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.auth.refresh import RefreshFlight
from sidecar.auth.token_digest import refresh_digest
from sidecar.config import RedisSettings
from sidecar.observability import Metrics, make_logger
from sidecar.oidc.client import TokenSet
from sidecar.store.base import FencedLease, StoreTimeout, take_lease
from sidecar.store.redis import RedisStore
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch
from tests.conftest import FakeClock
from tests.redis_server import RedisServer, free_port, start_redis

TIMEOUT = 0.1  # store.redis.command_timeout of these tests
RT0 = refresh_digest("rt-0")
_prefixes = itertools.count()


class Provider:
    """Counts token requests; the first waits until released, so a leader can be held mid-refresh
    (any later one answers at once: a second refresh shows up as a count, never as a hang)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.called = asyncio.Event()

    async def refresh(self) -> TokenSet:
        self.calls += 1
        self.called.set()
        if self.calls == 1:
            await self.release.wait()
        return TokenSet(access_token=f"at-{self.calls}", id_token=None, refresh_token=f"rt-{self.calls}",
                        expires_in=3600, token_type="Bearer")


class Replica:
    """One process's flight, watch and metrics on the shared Redis."""

    def __init__(self, url: str, prefix: str, wrap: Callable[[RedisStore], Any] | None = None) -> None:
        """``wrap``: what the flight sees instead of the store itself (a fault on top of it)."""
        self.registry = CollectorRegistry()
        metrics = Metrics(self.registry)
        self.log = io.StringIO()
        self.store = RedisStore(RedisSettings(url=url, key_prefix=prefix, connect_timeout=TIMEOUT,
                                              command_timeout=TIMEOUT))
        self.shared = wrap(self.store) if wrap is not None else self.store
        self.watch = StoreWatch("redis", "127.0.0.1", metrics, make_logger(stream=self.log))
        self.flight = RefreshFlight(FakeClock(), self.shared, Sealer(b"s" * 32), watch=self.watch,
                                    coordination=metrics.refresh_coordination, wait=5.0,
                                    patience=3 * TIMEOUT)

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"authsidecar_{name}_total", labels) or 0.0

    async def close(self) -> None:
        await self.flight.close()
        await self.store.close()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server these tests alone pause (the session-wide one is shared by others)."""
    server = start_redis(tmp_path_factory.mktemp("paused-redis"), free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def two(own_redis: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:
    prefix = f"flight{next(_prefixes)}:"
    a, b = Replica(own_redis.url, prefix), Replica(own_redis.url, prefix)
    yield a, b
    await a.close()
    await b.close()


async def test_a_slow_store_makes_no_token_request_and_answers_store_timeout_then_one_refresh(
    two: tuple[Replica, Replica], own_redis: RedisServer,
) -> None:
    a, b = two
    provider = Provider()
    provider.release.set()
    with own_redis.paused():
        outcomes = await asyncio.gather(a.flight.run(RT0, provider.refresh),
                                        b.flight.run(RT0, provider.refresh), return_exceptions=True)
        assert [type(o) for o in outcomes] == [StoreTimeout, StoreTimeout]
        assert provider.calls == 0  # nobody refreshed alone
    assert a.count("refresh_coordination", role="timeout") == 1
    assert a.count("refresh_coordination", role="alone") == 0
    # Fast again: one token request, both processes get its tokens.
    first, second = await asyncio.gather(a.flight.run(RT0, provider.refresh),
                                         b.flight.run(RT0, provider.refresh))
    assert provider.calls == 1
    assert first.refresh_token == second.refresh_token == "rt-1"


async def test_a_store_slow_while_another_process_leads_waits_for_its_result_not_a_second_refresh(
    two: tuple[Replica, Replica], own_redis: RedisServer,
) -> None:
    a, b = two
    provider = Provider()
    leading = asyncio.create_task(a.flight.run(RT0, provider.refresh))
    await provider.called.wait()  # a holds the lease and its token request is under way
    with own_redis.paused():
        with pytest.raises(StoreTimeout):
            await b.flight.run(RT0, provider.refresh)
        assert provider.calls == 1
    provider.release.set()
    led = await leading
    # b's retry (Retry-After) takes a's result rather than using the same refresh token again.
    joined = await b.flight.run(RT0, provider.refresh)
    assert provider.calls == 1
    assert joined == led
    assert b.count("refresh_coordination", role="joined") == 1


async def test_a_slow_store_is_counted_and_logged_apart_from_a_lost_one_once_per_change(
    two: tuple[Replica, Replica], own_redis: RedisServer,
) -> None:
    a, _ = two
    provider = Provider()
    provider.release.set()
    with own_redis.paused():
        for _ in range(2):
            with pytest.raises(StoreTimeout):
                await a.flight.run(RT0, provider.refresh)
    await a.flight.run(RT0, provider.refresh)
    assert a.count("store_errors", store="redis", kind="timeout") >= 2
    assert a.count("store_errors", store="redis", kind="unavailable") == 0
    events = [json.loads(line)["event"] for line in a.log.getvalue().splitlines()]
    assert [e for e in events if e.startswith("store_")] == ["store_slow", "store_recovered"]
    assert "rt-0" not in a.log.getvalue()


async def test_a_store_that_refuses_connections_is_down_and_the_process_refreshes_alone(
    tmp_path: Path,
) -> None:
    gone = Replica(f"redis://127.0.0.1:{free_port()}/0", "down:")
    provider = Provider()
    provider.release.set()
    tokens = await gone.flight.run(RT0, provider.refresh)
    await gone.close()
    assert tokens.refresh_token == "rt-1"
    assert gone.count("refresh_coordination", role="alone") == 1
    assert gone.count("store_errors", store="redis", kind="unavailable") >= 1
    assert gone.count("store_errors", store="redis", kind="timeout") == 0


class LostLeaseAnswer:
    """The real store, except that the first SET of a lease is applied and its answer lost: the
    process hears a timeout although the lease is now its own."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        applied = await self._store.add(key, value, ttl)
        if key.endswith(":lease") and not self.lost:
            self.lost += 1
            raise StoreTimeout("redis_timeout")
        return applied

    async def lease(self, key: str, ttl: float, fence: bytes | None = None) -> FencedLease | None:
        return await take_lease(self, key, ttl, fence)


async def test_a_lease_whose_answer_was_lost_is_taken_back_not_waited_out(own_redis: RedisServer) -> None:
    replica = Replica(own_redis.url, f"flight{next(_prefixes)}:", wrap=LostLeaseAnswer)
    provider = Provider()
    provider.release.set()
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        tokens = await replica.flight.run(RT0, provider.refresh)
        took = loop.time() - started
    finally:
        await replica.close()

    assert replica.shared.lost == 1
    assert tokens.access_token == "at-1"
    assert provider.calls == 1
    # Recognised by its fence on the next attempt, not waited out for the lease's 3 s.
    assert took < 1.0
