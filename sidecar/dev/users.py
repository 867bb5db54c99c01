"""The dev provider's user pool: who can sign in, and what their tokens say about them.

DEV ONLY. The passwords below are public by design; the dev provider must never face a network
anyone else can reach.

| username     | password              | groups                          |
|--------------|-----------------------|---------------------------------|
| alice        | alice-dev-password    | admins, users                   |
| bob          | bob-dev-password      | users                           |
| carol        | carol-dev-password    | (none: no cognito:groups claim) |
| many-groups  | many-groups-password  | 150 long group names            |

``many-groups`` exists so that its ID token is larger than 6 KB: big enough that a session
cookie holding it has to be split across several cookies.
"""

from __future__ import annotations

import types
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Fixed namespace, so a user's `sub` is the same on every run and in every test.
_SUB_NAMESPACE = uuid.UUID("6f1d3c2e-5a4b-4c8d-9e7f-0a1b2c3d4e5f")

_NO_CLAIMS: Mapping[str, Any] = types.MappingProxyType({})


def stable_sub(username: str) -> str:
    """Cognito's `sub` is a UUID that never changes for a user; derive one from the username."""
    return str(uuid.uuid5(_SUB_NAMESPACE, username))


@dataclass(frozen=True, slots=True)
class DevUser:
    """One user of the dev user pool.

    `extra_claims` are added to the ID token and to the userInfo answer, as Cognito does with
    custom attributes (`custom:tenant`, ...). `sub` defaults to `stable_sub(username)`.
    """

    username: str
    password: str = field(repr=False)
    email: str
    groups: tuple[str, ...] = ()
    sub: str = ""
    name: str = ""
    email_verified: bool = True
    extra_claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS)

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("DevUser.username must not be empty")
        if not self.sub:
            object.__setattr__(self, "sub", stable_sub(self.username))
        if not self.name:
            object.__setattr__(self, "name", self.username.capitalize())
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "extra_claims", types.MappingProxyType(dict(self.extra_claims)))


def _many_group_names(count: int = 150) -> tuple[str, ...]:
    return tuple(f"org-platform-engineering-team-{i:03d}-readonly-access" for i in range(count))


DEFAULT_USERS: tuple[DevUser, ...] = (
    DevUser(
        username="alice",
        password="alice-dev-password",  # noqa: S106 - dev-only user, documented above
        email="alice@example.com",
        groups=("admins", "users"),
        name="Alice Example",
    ),
    DevUser(
        username="bob",
        password="bob-dev-password",  # noqa: S106 - dev-only user, documented above
        email="bob@example.com",
        groups=("users",),
        name="Bob Example",
    ),
    DevUser(
        username="carol",
        password="carol-dev-password",  # noqa: S106 - dev-only user, documented above
        email="carol@example.com",
        name="Carol Example",
        email_verified=False,
    ),
    DevUser(
        username="many-groups",
        password="many-groups-password",  # noqa: S106 - dev-only user, documented above
        email="many-groups@example.com",
        groups=_many_group_names(),
        name="Many Groups",
    ),
)
