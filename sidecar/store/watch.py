"""Whether the shared store answers, for metrics, readiness and one log line per change (not per request)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sidecar.observability import Logger, Metrics
from sidecar.store.base import StoreUnavailable


class StoreWatch:
    """The store's state as last seen: ``unknown`` (not reached yet), ``up`` or ``down``."""

    def __init__(self, kind: str, where: str, metrics: Metrics, log: Logger, *,
                 answered_yet: bool = True) -> None:
        self.kind = kind
        self.where = where
        self.state = "up" if answered_yet else "unknown"
        # False until a store that must be reached (Redis) has answered once: readiness waits
        # for it at start, but a store lost later never takes a serving replica out.
        self.answered_once = answered_yet
        self._errors = metrics.store_errors.labels(store=kind)
        self._log = log

    @property
    def available(self) -> bool:
        return self.state == "up"

    def failed(self, reason: str) -> None:
        self._errors.inc()
        if self.state != "down":
            self.state = "down"
            # The host only: a password never reaches a log line.
            self._log.warning("store_unavailable", store=self.kind, host=self.where, reason=reason)

    def answered(self) -> None:
        if self.state != "up":
            if self.state == "down":
                self._log.info("store_recovered" if self.answered_once else "store_connected",
                               store=self.kind, host=self.where)
            self.state = "up"
        self.answered_once = True


async def keep_watching(ping: Callable[[], Awaitable[None]], watch: StoreWatch, *,
                        interval: float = 2.0, max_backoff: float = 30.0) -> None:
    """Ping the store now and then: readiness at start, and the recovery line after an outage.

    While it does not answer the pings back off (interval doubling up to ``max_backoff``); the
    requests in between find out for themselves and fall back, so nothing waits on this loop.
    """
    delay = interval
    while True:
        try:
            await ping()
        except StoreUnavailable as exc:
            watch.failed(exc.reason)
            delay = min(delay * 2, max_backoff)
        else:
            watch.answered()
            delay = interval
        await asyncio.sleep(delay)
