"""RedisStore tells a slow Redis (a timeout: alive, outcome unknown) from a lost one (refused)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar.config import RedisSettings
from sidecar.store.base import StoreTimeout, StoreUnavailable
from sidecar.store.redis import RedisStore
from tests.redis_server import free_port, start_redis


def _settings(url: str) -> RedisSettings:
    return RedisSettings(url=url, key_prefix="slow:", pool_size=1, connect_timeout=0.1, command_timeout=0.1)


async def test_every_command_on_a_paused_redis_is_a_timeout_waiting_for_the_pool_included(
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path, free_port())
    store = RedisStore(_settings(redis.url))
    try:
        await store.put("k", b"v", 5)  # connected
        with redis.paused():
            # One pooled connection: the others wait for it, then run out of time too.
            failures = await asyncio.gather(store.get("k"), store.add("lease", b"f", 5), store.get("k"),
                                            return_exceptions=True)
        assert [type(f) for f in failures] == [StoreTimeout] * 3
        assert await store.get("k") == b"v"
    finally:
        await store.close()
        redis.stop()


async def test_a_refused_connection_is_unavailable_not_a_timeout() -> None:
    store = RedisStore(_settings(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(StoreUnavailable) as refused:
        await store.get("k")
    await store.close()
    assert not isinstance(refused.value, StoreTimeout)
    assert refused.value.kind == "unavailable"


async def test_a_listener_that_cannot_subscribe_to_a_paused_redis_reports_a_timeout(tmp_path: Path) -> None:
    redis = start_redis(tmp_path, free_port())
    store = RedisStore(_settings(redis.url))
    failures: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    answered = asyncio.Event()
    try:
        with redis.paused():
            listener = asyncio.create_task(store.listen(
                "revoked", lambda m: None,
                on_failure=lambda reason, kind: failures.put_nowait((reason, kind)),
                on_answer=answered.set, retry=0.05))
            reason, kind = await asyncio.wait_for(failures.get(), 5)
        assert kind == "timeout"
        assert reason  # the exception's type name, never a value
        await asyncio.wait_for(answered.wait(), 5)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await store.close()
        redis.stop()


async def test_a_listener_whose_redis_refuses_reports_unavailable() -> None:
    store = RedisStore(_settings(f"redis://127.0.0.1:{free_port()}/0"))
    failures: asyncio.Queue[str] = asyncio.Queue()
    listener = asyncio.create_task(store.listen(
        "revoked", lambda m: None, on_failure=lambda reason, kind: failures.put_nowait(kind),
        on_answer=lambda: None, retry=0.05))
    try:
        assert await asyncio.wait_for(failures.get(), 5) == "unavailable"
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await store.close()
