"""One refresh per refresh token at a time, per process.

Twenty tabs (or parallel XHRs) noticing an expired access token at once must not send twenty
refresh requests: with rotation the provider accepts only the first and would end the session for
the rest. Callers with the same refresh token share one in-flight request, and callers arriving
shortly after it finished (their cookie still holds the old refresh token) get the same result.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sidecar.identity import Clock

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Deduplicates concurrent calls by key and remembers each result for ``linger`` seconds.

    At most ``max_entries`` results are remembered (the oldest go first): a renewal holds a session's
    new tokens (about 3.5 KB), so the bound keeps a refresh storm at 1,024 x 3.5 KB = 3.5 MiB. Only
    above ~100 refreshes per second per worker does an entry leave before ``linger``, and then after
    ``max_entries / rate`` seconds (5 s at 200/s, 1 s at 1,000/s), still longer than a browser's
    parallel requests take to arrive.
    """

    def __init__(self, clock: Clock, linger: float = 10.0, max_entries: int = 1024) -> None:
        self._clock = clock
        self._linger = linger
        self._max = max_entries
        self._inflight: dict[bytes, asyncio.Future[T]] = {}
        self._recent: dict[bytes, tuple[float, T]] = {}

    @staticmethod
    def key(secret: str) -> bytes:
        return hashlib.sha256(secret.encode()).digest()

    async def run(self, secret: str, call: Callable[[], Awaitable[T]]) -> T:
        key = self.key(secret)
        now = self._clock()
        recent = self._recent.get(key)
        if recent is not None and recent[0] > now:
            return recent[1]
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(call())
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._settle(key, f))
        # shield: one impatient caller being cancelled must not cancel the others' refresh.
        return await asyncio.shield(future)

    def _settle(self, key: bytes, future: asyncio.Future[T]) -> None:
        self._inflight.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return
        now = self._clock()
        # Every entry lingers equally long, so insertion order is expiry order: drop expired ones
        # from the front (they hold tokens; nothing should keep them past the window).
        recent = self._recent
        while recent:
            oldest = next(iter(recent))
            if recent[oldest][0] > now and len(recent) < self._max:
                break
            del recent[oldest]
        recent.pop(key, None)
        recent[key] = (now + self._linger, future.result())

    async def close(self) -> None:
        for future in list(self._inflight.values()):
            future.cancel()
        self._inflight.clear()
        self._recent.clear()
