"""The contract every shared store keeps: memory (one process), host (the workers of one host, over
the supervisor's Unix socket) and Redis (a real redis-server), one suite for all."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sidecar.config import RedisSettings
from sidecar.store.base import SharedStore, StoreUnavailable
from sidecar.store.host import HostStoreClient, HostStoreServer
from sidecar.store.memory import MemoryStore
from sidecar.store.redis import RedisStore
from tests.redis_server import RedisServer

_prefixes = itertools.count()


@pytest.fixture(params=["memory", "host", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SharedStore]:
    kind = request.param
    server: HostStoreServer | None = None
    made: SharedStore
    if kind == "memory":
        made = MemoryStore()
    elif kind == "host":
        server = HostStoreServer(str(tmp_path / "store.sock"))
        server.start()
        made = HostStoreClient(server.path)
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        # A prefix per test: tests never see each other's keys in the one server.
        made = RedisStore(RedisSettings(url=redis.url, key_prefix=f"t{os.getpid()}-{next(_prefixes)}:"))
    try:
        yield made
    finally:
        await made.close()
        if server is not None:
            server.stop()


async def test_a_value_put_is_got_back_until_its_ttl(store: SharedStore) -> None:
    assert await store.get("k") is None
    await store.put("k", b"\x00value\xff", ttl=0.3)
    assert await store.get("k") == b"\x00value\xff"
    await asyncio.sleep(0.5)
    assert await store.get("k") is None


async def test_add_sets_only_when_absent(store: SharedStore) -> None:
    assert await store.add("once", b"1", ttl=5) is True
    assert await store.add("once", b"2", ttl=5) is False
    assert await store.get("once") == b"1"
    await store.delete("once")
    assert await store.add("once", b"3", ttl=5) is True


async def test_a_lease_is_exclusive_until_released(store: SharedStore) -> None:
    first = await store.lease("job", ttl=5)
    assert first is not None
    assert await store.lease("job", ttl=5) is None
    await first.release()
    second = await store.lease("job", ttl=5)
    assert second is not None
    await second.release()


async def test_a_renewed_lease_outlives_its_first_ttl(store: SharedStore) -> None:
    lease = await store.lease("long-job", ttl=0.4)
    assert lease is not None
    for _ in range(4):
        await asyncio.sleep(0.2)
        assert await lease.renew() is True
    assert await store.lease("long-job", ttl=0.4) is None
    await lease.release()


async def test_a_lapsed_lease_taken_by_another_is_neither_renewed_nor_released_by_the_first(
    store: SharedStore,
) -> None:
    first = await store.lease("job", ttl=0.2)
    assert first is not None
    await asyncio.sleep(0.4)
    second = await store.lease("job", ttl=5)
    assert second is not None
    assert await first.renew() is False
    await first.release()
    # The fence kept the second holder's lease in place.
    assert await store.lease("job", ttl=5) is None
    await second.release()


async def test_many_concurrent_leases_for_one_key_have_one_winner(store: SharedStore) -> None:
    leases = await asyncio.gather(*(store.lease("contended", ttl=5) for _ in range(20)))
    assert sum(lease is not None for lease in leases) == 1


async def test_an_unreachable_store_raises_store_unavailable_not_a_library_error(tmp_path: Path) -> None:
    unreachable: list[SharedStore] = [
        HostStoreClient(str(tmp_path / "nobody.sock"), timeout=0.5),
        RedisStore(RedisSettings(url="redis://127.0.0.1:9/0", connect_timeout=0.5, command_timeout=0.5)),
    ]
    for gone in unreachable:
        for call in _operations(gone):
            with pytest.raises(StoreUnavailable):
                await call()
        await gone.close()


def _operations(store: SharedStore) -> list[Callable[[], object]]:
    return [lambda: store.get("k"), lambda: store.put("k", b"v", 1), lambda: store.add("k", b"v", 1),
            lambda: store.delete("k"), lambda: store.lease("k", 1)]
