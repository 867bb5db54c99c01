"""Fixtures every test package shares: the one fake clock.

The sidecar and the dev provider take time as a ``clock`` callable; tests hand them a
:class:`FakeClock` and move it with :meth:`FakeClock.advance`, so expiry is tested without sleeping
and the minting side and the checking side always agree on "now".
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles. "ci" (the default): derandomized and bounded, so the suite stays fast and a
# failure replays identically; "long" for local hunting: AUTHSIDECAR_HYPOTHESIS_PROFILE=long.
# Request fuzzing shares one running stack across examples on purpose (the process must survive
# them all), hence the function-scoped fixture check is off.
_SHARED_STACK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("ci", max_examples=300, derandomize=True, deadline=None, database=None,
                          suppress_health_check=_SHARED_STACK, print_blob=True)
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=_SHARED_STACK)
settings.load_profile(os.environ.get("AUTHSIDECAR_HYPOTHESIS_PROFILE", "ci"))

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
