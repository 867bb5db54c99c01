"""Whether the shared store answers, for metrics, readiness and one log line per change (not per request)."""

from __future__ import annotations

from sidecar.observability import Logger, Metrics


class StoreWatch:
    def __init__(self, kind: str, where: str, metrics: Metrics, log: Logger) -> None:
        self.kind = kind
        self.where = where
        self.available = True
        self._errors = metrics.store_errors.labels(store=kind)
        self._log = log

    def failed(self, reason: str) -> None:
        self._errors.inc()
        if self.available:
            self.available = False
            # The host only: the URL may carry nothing secret, but a password never reaches a log.
            self._log.warning("store_unavailable", store=self.kind, host=self.where, reason=reason)

    def answered(self) -> None:
        if not self.available:
            self.available = True
            self._log.info("store_recovered", store=self.kind, host=self.where)
