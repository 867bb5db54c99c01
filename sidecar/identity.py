"""The validated identity of one request, and the injected clock type."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Seconds since the epoch. Injected everywhere time matters so tests drive one fake clock.
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the access token says the caller is. Built once per distinct token, then cached."""

    sub: str
    username: str | None
    email: str | None
    groups: tuple[str, ...]
    scopes: tuple[str, ...]
    expires_at: int
    # Every claim of the access token (read-only), for claim rules and extra identity headers.
    claims: Mapping[str, Any]
