"""The contract every shared store keeps: memory (one process), host (the workers of one host, over
the supervisor's Unix socket) and Redis (a real redis-server), one suite for all."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sidecar.config import RedisSettings
from sidecar.store.base import SharedStore, StoreUnavailable, new_fence
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


async def test_a_lease_already_holding_the_callers_own_fence_is_the_callers(store: SharedStore) -> None:
    # An attempt whose answer was lost (a timeout) may have set the lease with this fence.
    mine, theirs = new_fence(), new_fence()
    assert await store.add("job", mine, ttl=0.4) is True

    assert await store.lease("job", ttl=5, fence=theirs) is None
    assert await store.lease("job", ttl=5) is None
    lease = await store.lease("job", ttl=5, fence=mine)
    assert lease is not None
    await asyncio.sleep(0.6)  # past the first TTL: taking it back renewed it for 5 s
    assert await store.lease("job", ttl=5) is None
    await lease.release()
    assert await store.get("job") is None


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
            lambda: store.delete("k"), lambda: store.lease("k", 1),
            lambda: store.append("c", "m", time.time() + 5), lambda: store.members("c"),
            lambda: store.publish("ch", "m")]


async def test_a_collection_keeps_each_member_until_its_time(store: SharedStore) -> None:
    assert await store.members("revoked") == []
    now = time.time()
    await store.append("revoked", "short", now + 0.3)
    await store.append("revoked", "long", now + 30)
    await store.append("revoked", "long", now + 20)  # an earlier time never shortens a member's life
    assert sorted(await store.members("revoked")) == ["long", "short"]
    await asyncio.sleep(0.5)
    assert await store.members("revoked") == ["long"]


async def test_a_collection_member_already_past_its_time_is_not_kept(store: SharedStore) -> None:
    await store.append("revoked", "stale", time.time() - 1)
    assert await store.members("revoked") == []


async def test_a_message_published_reaches_every_listener_of_its_channel_only(store: SharedStore) -> None:
    got: dict[str, list[str]] = {"a": [], "b": [], "other": []}
    arrived = asyncio.Event()
    subscribed = {name: asyncio.Event() for name in got}

    def receiver(name: str) -> Callable[[str], None]:
        def on_message(message: str) -> None:
            got[name].append(message)
            if got["a"] and got["b"]:
                arrived.set()
        return on_message

    tasks = [asyncio.create_task(store.listen(
        "other-channel" if name == "other" else "revoked", receiver(name),
        on_failure=lambda reason, kind: None, on_answer=subscribed[name].set)) for name in got]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in subscribed.values())), 5)
        await store.publish("revoked", "entry-1")
        await asyncio.wait_for(arrived.wait(), 1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert got == {"a": ["entry-1"], "b": ["entry-1"], "other": []}


async def test_a_listener_that_lost_its_host_store_says_so_and_comes_back(tmp_path: Path) -> None:
    path = str(tmp_path / "store.sock")
    server = HostStoreServer(path)
    server.start()
    client = HostStoreClient(path)
    answers, failures = asyncio.Queue[str](), asyncio.Queue[str]()
    task = asyncio.create_task(client.listen("revoked", lambda m: None,
                                             on_failure=lambda reason, kind: failures.put_nowait(kind),
                                             on_answer=lambda: answers.put_nowait("up")))
    try:
        assert await asyncio.wait_for(answers.get(), 5) == "up"
        server.stop()
        assert await asyncio.wait_for(failures.get(), 5) == "unavailable"
        server = HostStoreServer(path)
        server.start()
        assert await asyncio.wait_for(answers.get(), 10) == "up"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        server.stop()
