"""Fixtures every test package shares: the one fake clock.

The sidecar and the dev provider take time as a ``clock`` callable; tests hand them a
:class:`FakeClock` and move it with :meth:`FakeClock.advance`, so expiry is tested without sleeping
and the minting side and the checking side always agree on "now".
"""

from __future__ import annotations

import time

import pytest

# 2023-11-14T22:13:20Z: a fixed, round instant for tests that compare timestamps exactly.
START = 1_700_000_000.0


class FakeClock:
    """Seconds since the epoch, moved only by :meth:`advance` (or by assigning ``now``)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    @classmethod
    def from_wall_clock(cls) -> FakeClock:
        """A clock starting at the real time: for stacks whose cookies a real client keeps (a
        browser or aiohttp's jar drops a cookie whose ``Expires`` lies in its own past)."""
        return cls(time.time())

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock at :data:`START`."""
    return FakeClock()


# A real redis-server for the tests that need one (session-wide).
from tests.redis_server import redis_server  # noqa: E402, F401
