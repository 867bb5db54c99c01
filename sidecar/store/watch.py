"""Whether the shared store answers, for metrics, readiness and one log line per change (not per request)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sidecar.observability import Logger, Metrics
from sidecar.store.base import StoreUnavailable


class StoreWatch:
    """The store's state as last seen: ``unknown`` (not reached yet), ``up``, ``slow`` (commands
    time out: it is there but late) or ``down`` (refused, connection lost)."""

    def __init__(self, kind: str, where: str, metrics: Metrics, log: Logger, *,
                 answered_yet: bool = True) -> None:
        self.kind = kind
        self.where = where
        self.state = "up" if answered_yet else "unknown"
        # False until a store that must be reached (Redis) has answered once: readiness waits
        # for it at start, but a store lost later never takes a serving replica out.
        self.answered_once = answered_yet
        self._errors = {k: metrics.store_errors.labels(store=kind, kind=k)
                        for k in ("timeout", "unavailable")}
        self._log = log

    @property
    def available(self) -> bool:
        return self.state == "up"

    def failed(self, reason: str, kind: str = "unavailable") -> None:
        """A command failed; ``kind`` is :attr:`StoreUnavailable.kind` (``timeout`` or ``unavailable``)."""
        slow = kind == "timeout"
        self._errors["timeout" if slow else "unavailable"].inc()
        state = "slow" if slow else "down"
        if self.state != state:
            self.state = state
            # One line per change of state, not per request; the host only: never a password.
            self._log.warning("store_slow" if slow else "store_unavailable", store=self.kind,
                              host=self.where, reason=reason)

    def answered(self) -> None:
        if self.state != "up":
            if self.state in ("down", "slow"):
                self._log.info("store_recovered" if self.answered_once else "store_connected",
                               store=self.kind, host=self.where)
            self.state = "up"
        self.answered_once = True


async def keep_watching(ping: Callable[[], Awaitable[None]], watch: StoreWatch, *,
                        interval: float = 2.0, max_backoff: float = 30.0) -> None:
    """Ping the store now and then: readiness at start, and the recovery line after an outage.

    While a store that has answered before does not answer, the pings back off (interval doubling
    up to ``max_backoff``); the requests in between find out for themselves and fall back, so
    nothing waits on this loop. Until the store has answered once they keep to ``interval``:
    readiness waits on them, and a store that was late at start must not keep a replica out of
    service for the length of a backoff.
    """
    delay = interval
    while True:
        try:
            await ping()
        except StoreUnavailable as exc:
            watch.failed(exc.reason, exc.kind)
            delay = min(delay * 2, max_backoff) if watch.answered_once else interval
        else:
            watch.answered()
            delay = interval
        await asyncio.sleep(delay)
