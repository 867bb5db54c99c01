"""The auth_rejected line under a flood: once a second per reason, standing for the ones it skipped."""

from __future__ import annotations

from typing import Any

from sidecar.errors import TokenRejected
from sidecar.proxy.middleware import RejectionLog


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, /, **fields: Any) -> None:
        self.lines.append((event, fields))

    debug = warning = error = exception = info
    _logger = None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_one_reason_writes_one_line_a_second_that_counts_the_rest() -> None:
    lines, clock = Lines(), Clock()
    log = RejectionLog(lines, monotonic=clock)  # type: ignore[arg-type]
    for _ in range(1000):
        log(TokenRejected("bad_signature"), "rid")
    assert [(e, f["reason"], f["suppressed"]) for e, f in lines.lines] == [
        ("auth_rejected", "bad_signature", 0)]
    clock.now += 1.0
    log(TokenRejected("bad_signature"), "rid-2")
    assert lines.lines[-1][1]["suppressed"] == 999
    assert lines.lines[-1][1]["request_id"] == "rid-2"


def test_each_reason_has_its_own_line() -> None:
    lines, clock = Lines(), Clock()
    log = RejectionLog(lines, monotonic=clock)  # type: ignore[arg-type]
    for reason in ("bad_signature", "malformed", "expired", "bad_signature", "malformed"):
        log(TokenRejected(reason), "rid")
    assert [f["reason"] for _e, f in lines.lines] == ["bad_signature", "malformed", "expired"]


def test_rejections_spaced_out_are_each_logged() -> None:
    lines, clock = Lines(), Clock()
    log = RejectionLog(lines, monotonic=clock)  # type: ignore[arg-type]
    for _ in range(3):
        log(TokenRejected("expired"), "rid")
        clock.now += 1.5
    assert [f["suppressed"] for _e, f in lines.lines] == [0, 0, 0]
