from __future__ import annotations

import uuid

from sidecar.dev.provider import DEFAULT_USERS, DevUser


def test_sub_is_a_stable_uuid_derived_from_the_username() -> None:
    first = DevUser("dora", "pw", "dora@example.com")
    again = DevUser("dora", "other", "other@example.com")
    assert first.sub == again.sub
    assert uuid.UUID(first.sub).version == 5
    assert DevUser("dora", "pw", "d@example.com", sub="given").sub == "given"


def test_the_password_never_shows_in_repr() -> None:
    assert "alice-dev-password" not in repr(DEFAULT_USERS)


def test_default_users_cover_groups_no_groups_and_many_groups() -> None:
    users = {user.username: user for user in DEFAULT_USERS}
    assert users["alice"].groups == ("admins", "users")
    assert users["bob"].groups == ("users",)
    assert users["carol"].groups == ()
    assert len(users["many-groups"].groups) == 150
    assert len({user.sub for user in DEFAULT_USERS}) == len(DEFAULT_USERS)


def test_extra_claims_are_read_only() -> None:
    user = DevUser("eve", "pw", "eve@example.com", extra_claims={"custom:tenant": "t1"})
    assert dict(user.extra_claims) == {"custom:tenant": "t1"}
    try:
        user.extra_claims["custom:tenant"] = "t2"  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("extra_claims must not be mutable")
