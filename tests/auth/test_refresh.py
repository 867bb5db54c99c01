"""SingleFlight: one refresh per refresh token at a time, its result shared and briefly remembered."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.auth.refresh import SingleFlight


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Provider:
    """Counts calls; each call waits until released, so concurrent callers really overlap."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def refresh(self) -> str:
        self.calls += 1
        await self.release.wait()
        return f"tokens-{self.calls}"


async def test_concurrent_callers_with_one_token_share_one_call() -> None:
    flight: SingleFlight[str] = SingleFlight(Clock())
    provider = Provider()
    waiters = [asyncio.ensure_future(flight.run("rt", provider.refresh)) for _ in range(20)]
    await asyncio.sleep(0)  # let every caller reach the shared future
    provider.release.set()
    assert await asyncio.gather(*waiters) == ["tokens-1"] * 20
    assert provider.calls == 1


async def test_different_tokens_do_not_share() -> None:
    flight: SingleFlight[str] = SingleFlight(Clock())
    provider = Provider()
    provider.release.set()
    assert await flight.run("a", provider.refresh) == "tokens-1"
    assert await flight.run("b", provider.refresh) == "tokens-2"


async def test_a_late_caller_within_the_window_gets_the_same_result_and_after_it_a_new_call() -> None:
    clock = Clock()
    flight: SingleFlight[str] = SingleFlight(clock, linger=10)
    provider = Provider()
    provider.release.set()
    assert await flight.run("rt", provider.refresh) == "tokens-1"
    clock.now += 9
    assert await flight.run("rt", provider.refresh) == "tokens-1"
    clock.now += 2
    assert await flight.run("rt", provider.refresh) == "tokens-2"


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flight: SingleFlight[str] = SingleFlight(Clock())
    calls = 0
    gate = asyncio.Event()

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise RuntimeError("invalid_grant")

    waiters = [asyncio.ensure_future(flight.run("rt", failing)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert calls == 1
    with pytest.raises(RuntimeError):
        await flight.run("rt", failing)
    assert calls == 2


async def test_one_cancelled_caller_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight(Clock())
    provider = Provider()
    first = asyncio.ensure_future(flight.run("rt", provider.refresh))
    second = asyncio.ensure_future(flight.run("rt", provider.refresh))
    await asyncio.sleep(0)
    first.cancel()
    provider.release.set()
    assert await second == "tokens-1"
    assert first.cancelled()


async def test_results_past_their_window_are_dropped_rather_than_kept() -> None:
    clock = Clock()
    flight: SingleFlight[str] = SingleFlight(clock, linger=10)
    provider = Provider()
    provider.release.set()
    for i in range(50):
        await flight.run(f"rt-{i}", provider.refresh)
        clock.now += 1
    # Only the results of the last 10 seconds are still held (they hold tokens).
    assert len(flight._recent) <= 11


async def test_the_remembered_results_are_bounded() -> None:
    flight: SingleFlight[str] = SingleFlight(Clock(), linger=1000, max_entries=5)
    provider = Provider()
    provider.release.set()
    for i in range(20):
        await flight.run(f"rt-{i}", provider.refresh)
    assert len(flight._recent) <= 5
