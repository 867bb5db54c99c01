"""SingleFlight: one refresh per refresh token at a time, its result shared and briefly remembered."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from sidecar.auth.refresh import SingleFlight
from tests.conftest import FakeClock


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
    flight: SingleFlight[str] = SingleFlight(FakeClock())
    provider = Provider()
    waiters = [asyncio.ensure_future(flight.run("rt", provider.refresh)) for _ in range(20)]
    await asyncio.sleep(0)  # let every caller reach the shared future
    provider.release.set()
    assert await asyncio.gather(*waiters) == ["tokens-1"] * 20
    assert provider.calls == 1


async def test_different_tokens_do_not_share() -> None:
    flight: SingleFlight[str] = SingleFlight(FakeClock())
    provider = Provider()
    provider.release.set()
    assert await flight.run("a", provider.refresh) == "tokens-1"
    assert await flight.run("b", provider.refresh) == "tokens-2"


async def test_a_late_caller_within_the_window_gets_the_same_result_and_after_it_a_new_call() -> None:
    clock = FakeClock()
    flight: SingleFlight[str] = SingleFlight(clock, linger=10)
    provider = Provider()
    provider.release.set()
    assert await flight.run("rt", provider.refresh) == "tokens-1"
    clock.advance(9)
    assert await flight.run("rt", provider.refresh) == "tokens-1"
    clock.advance(2)
    assert await flight.run("rt", provider.refresh) == "tokens-2"


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flight: SingleFlight[str] = SingleFlight(FakeClock())
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
    flight: SingleFlight[str] = SingleFlight(FakeClock())
    provider = Provider()
    first = asyncio.ensure_future(flight.run("rt", provider.refresh))
    second = asyncio.ensure_future(flight.run("rt", provider.refresh))
    await asyncio.sleep(0)
    first.cancel()
    provider.release.set()
    assert await second == "tokens-1"
    assert first.cancelled()


async def test_only_the_newest_results_are_remembered_when_more_arrive_than_the_bound() -> None:
    flight: SingleFlight[str] = SingleFlight(FakeClock(), linger=1000, max_entries=5)
    provider = Provider()
    provider.release.set()
    for i in range(20):
        await flight.run(f"rt-{i}", provider.refresh)
    assert provider.calls == 20
    # The five newest are answered from memory, within their window...
    for i in range(15, 20):
        assert await flight.run(f"rt-{i}", provider.refresh) == f"tokens-{i + 1}"
    assert provider.calls == 20
    # ...the oldest were dropped to keep the bound: a new call.
    assert await flight.run("rt-0", provider.refresh) == "tokens-21"
    assert provider.calls == 21


class Renewal:
    """A result object a test can hold weakly: it is gone once nothing keeps it."""


async def test_results_past_their_window_are_let_go_rather_than_kept() -> None:
    # Results hold a session's new tokens: once their window is over, nothing may keep them alive.
    clock = FakeClock()
    flight: SingleFlight[Renewal] = SingleFlight(clock, linger=10)
    held: list[weakref.ref[Renewal]] = []

    async def renew() -> Renewal:
        result = Renewal()
        held.append(weakref.ref(result))
        return result

    for i in range(50):
        await flight.run(f"rt-{i}", renew)
        clock.advance(1)
    gc.collect()
    alive = [i for i, ref in enumerate(held) if ref() is not None]
    assert alive == list(range(40, 50))  # only the results of the last 10 seconds
