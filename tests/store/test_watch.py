"""The store watch's pings: prompt until the store first answers, backing off after an outage."""

from __future__ import annotations

import asyncio
import io

from prometheus_client import CollectorRegistry

from sidecar.observability import Metrics, make_logger
from sidecar.store.base import StoreUnavailable
from sidecar.store.watch import StoreWatch, keep_watching


class Store:
    """Answers a ping only from the ``failures + 1``-th one on; counts them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.pings = 0
        self.answered = asyncio.Event()

    async def ping(self) -> None:
        self.pings += 1
        if self.pings <= self.failures:
            raise StoreUnavailable("ConnectionRefusedError")
        self.answered.set()


def watch(*, answered_yet: bool) -> StoreWatch:
    return StoreWatch("redis", "127.0.0.1", Metrics(CollectorRegistry()), make_logger(stream=io.StringIO()),
                      answered_yet=answered_yet)


async def test_a_store_late_at_start_is_pinged_at_the_interval_not_backed_off() -> None:
    store, seen = Store(failures=5), watch(answered_yet=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    pinging = asyncio.create_task(keep_watching(store.ping, seen, interval=0.05, max_backoff=10))
    try:
        await asyncio.wait_for(store.answered.wait(), 5)
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
    # Five misses at 0.05 s: ready in about 0.25 s (with backoff it would be 0.1+0.2+0.4+0.8+1.6 s).
    assert loop.time() - started < 1.0
    assert seen.available


async def test_a_store_lost_after_answering_is_pinged_with_backoff() -> None:
    store, seen = Store(failures=4), watch(answered_yet=True)
    pinging = asyncio.create_task(keep_watching(store.ping, seen, interval=0.05, max_backoff=10))
    try:
        await asyncio.sleep(0.5)
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
    # 0.05 doubling: pings at 0, 0.1, 0.3 (the next at 0.7): not one every 0.05 s.
    assert store.pings <= 3
    assert not seen.available
