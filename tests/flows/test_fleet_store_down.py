"""The shared store down: not ready until it answers at start; later, a clean fallback and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.flows.conftest import wait_ready
from tests.flows.fleet_support import FleetFactory
from tests.flows.test_fleet import assert_one_refresh_nobody_logged_out, refresh_storm
from tests.redis_server import free_port, start_redis

ROTATING = {"rotate_refresh_tokens": True}


async def readiness_once(client: aiohttp.ClientSession, admin: str,
                         until: Callable[[dict[str, Any]], bool]) -> tuple[int, dict[str, Any]]:
    """/readyz until ``until(body)`` holds (the listener may not be up at the first attempts)."""
    for _ in range(200):
        try:
            async with client.get(admin + "/readyz") as resp:
                body = await resp.json()
                if until(body):
                    return resp.status, body
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{admin}/readyz never answered as expected")


def redis_store(port: int, prefix: str) -> dict[str, object]:
    return {"backend": "redis", "redis": {"url": f"redis://127.0.0.1:{port}/0", "key_prefix": prefix,
                                          "connect_timeout": 0.3, "command_timeout": 0.3}}


async def test_a_replica_is_not_ready_until_redis_answers_and_says_which_host_once(
    make_fleet: FleetFactory, tmp_path: Path,
) -> None:
    port = free_port()
    fleet = await make_fleet(workers=1, store=redis_store(port, "down-at-start:"), wait_ready=False,
                             log_level="info")
    (replica,) = fleet.replicas
    async with aiohttp.ClientSession() as client:
        # Keys load first (the provider answers), then readiness is held by the store alone.
        status, body = await readiness_once(client, replica.admin,
                                            until=lambda b: b.get("reason") == "store_unavailable")
        assert status == 503
        assert body == {"status": "not_ready", "reason": "store_unavailable"}
        redis = start_redis(tmp_path, port)
        try:
            await wait_ready(replica.admin)
        finally:
            redis.stop()
    events = [e for e in replica.log_events() if e["event"].startswith("store_")]
    assert [e["event"] for e in events][:2] == ["store_unavailable", "store_connected"]
    assert events[0]["host"] == "127.0.0.1"


async def test_redis_lost_at_run_time_refreshes_still_work_and_recovery_is_logged_once(
    make_fleet: FleetFactory, tmp_path: Path,
) -> None:
    port = free_port()
    redis = start_redis(tmp_path, port)
    try:
        fleet = await make_fleet(workers=1, provider=ROTATING, store=redis_store(port, "lost:"),
                                 log_level="info")
        (replica,) = fleet.replicas
        redis.stop()
        # No 500, nobody logged out: one process refreshes alone, its own single-flight holds.
        assert_one_refresh_nobody_logged_out(fleet, await refresh_storm(fleet))
        async with aiohttp.ClientSession() as client, client.get(replica.admin + "/readyz") as resp:
            assert resp.status == 200  # a serving replica is not taken out for a lost store
        redis = start_redis(tmp_path, port)
        # The next refresh storm coordinates through Redis again.
        fleet.provider.calls.clear()
        assert_one_refresh_nobody_logged_out(fleet, await refresh_storm(fleet))
    finally:
        redis.stop()
    events = [e["event"] for e in replica.log_events() if e["event"].startswith("store_")]
    assert events.count("store_unavailable") == 1
    assert "store_recovered" in events
