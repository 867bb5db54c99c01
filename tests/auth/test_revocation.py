"""The deny-list: what each kind of entry refuses, when entries leave, what 100,000 revoked sessions
cost, and a process that starts after a revocation (real Redis) refusing it too."""

from __future__ import annotations

import secrets
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.auth.revocation import DenyList, Revocation, Revoked
from sidecar.auth.token_digest import refresh_digest
from sidecar.config import OidcSettings, RedisSettings
from sidecar.observability import Metrics, make_logger
from sidecar.oidc.provider import ProviderLink
from sidecar.store.base import SharedStore
from sidecar.store.memory import MemoryStore
from sidecar.store.redis import RedisStore
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch
from tests.redis_server import RedisServer

NOW = 1_800_000_000.0
LATER = NOW + 3600
# 100,000 revoked Cognito sessions (access-token jti, origin_jti, refresh-token digest each) fit in
# this much memory (measured about 43 MB; the README states the budget).
BUDGET_100K_SESSIONS = 64 * 1024 * 1024


def deny(*entries: Revoked) -> DenyList:
    listed = DenyList()
    for entry in entries:
        listed.add(entry, NOW)
    return listed


TOKEN = {"sub": "u-1", "jti": "j-1", "origin_jti": "o-1", "sid": "s-1", "iat": NOW - 10}

CASES: list[tuple[str, Revoked, Mapping[str, Any], bool]] = [
    ("jti-refuses-that-token", Revoked("jti", "j-1", LATER), TOKEN, True),
    ("jti-spares-another-token", Revoked("jti", "j-2", LATER), TOKEN, False),
    ("origin-jti-refuses-every-token-of-the-sign-in", Revoked("origin_jti", "o-1", LATER), TOKEN, True),
    ("sid-refuses-every-token-of-the-session", Revoked("sid", "s-1", LATER), TOKEN, True),
    ("sid-spares-another-session", Revoked("sid", "s-2", LATER), TOKEN, False),
    ("sub-refuses-a-token-issued-before", Revoked("sub", "u-1", LATER, at=NOW), TOKEN, True),
    ("sub-refuses-a-token-issued-that-second", Revoked("sub", "u-1", LATER, at=NOW),
     {**TOKEN, "iat": NOW}, True),
    ("sub-spares-a-login-after-it", Revoked("sub", "u-1", LATER, at=NOW), {**TOKEN, "iat": NOW + 1}, False),
    ("sub-refuses-a-token-without-iat", Revoked("sub", "u-1", LATER, at=NOW),
     {k: v for k, v in TOKEN.items() if k != "iat"}, True),
    ("sub-refuses-a-token-with-a-non-numeric-iat", Revoked("sub", "u-1", LATER, at=NOW),
     {**TOKEN, "iat": "0"}, True),
    ("sub-spares-another-user", Revoked("sub", "u-2", LATER, at=NOW), TOKEN, False),
    ("a-list-valued-claim-is-no-crash", Revoked("jti", "j-1", LATER), {**TOKEN, "jti": ["j-1"]}, False),
    ("a-refresh-digest-refuses-no-access-token", Revoked("refresh", refresh_digest("j-1").listed, LATER),
     TOKEN, False),
]


@pytest.mark.parametrize(("entry", "claims", "refused"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_each_kind_of_entry_refuses(entry: Revoked, claims: Mapping[str, Any], refused: bool) -> None:
    assert deny(entry).refuses_claims(claims) is refused


def test_a_refresh_token_is_refused_by_its_digest_and_never_held_as_itself() -> None:
    token = secrets.token_urlsafe(48)
    listed = deny(Revoked("refresh", refresh_digest(token).listed, LATER))
    assert listed.refuses_refresh(refresh_digest(token))
    assert not listed.refuses_refresh(refresh_digest(secrets.token_urlsafe(48)))
    assert token not in refresh_digest(token).listed


def test_an_empty_deny_list_refuses_nothing() -> None:
    assert not DenyList().refuses_claims(TOKEN)
    assert not DenyList().refuses_refresh(refresh_digest("anything"))


def test_entries_leave_at_their_time_and_one_already_past_is_not_added() -> None:
    listed = deny(Revoked("jti", "j-1", NOW + 10), Revoked("sub", "u-1", NOW + 20, at=NOW),
                  Revoked("jti", "old", NOW - 1))
    assert len(listed) == 2
    listed.sweep(NOW + 15)
    assert len(listed) == 1
    assert not listed.refuses_claims(TOKEN | {"sub": "u-2"})
    assert listed.refuses_claims(TOKEN)
    listed.sweep(NOW + 25)
    assert len(listed) == 0
    assert not listed.refuses_claims(TOKEN)


def test_the_deny_list_sweeps_itself_as_it_grows() -> None:
    listed = DenyList()
    for i in range(5000):
        # Every entry lives 1 s; the clock moves 1 s per 100 entries.
        listed.add(Revoked("jti", f"j-{i}", NOW + i / 100 + 1), NOW + i / 100)
    assert len(listed) < 2500


def test_a_later_sub_revocation_moves_the_cutoff_forward() -> None:
    listed = deny(Revoked("sub", "u-1", LATER, at=NOW - 100))
    assert not listed.refuses_claims(TOKEN)
    listed.add(Revoked("sub", "u-1", LATER, at=NOW), NOW)
    assert listed.refuses_claims(TOKEN)


def test_a_hundred_thousand_revoked_sessions_fit_the_memory_budget() -> None:
    tracemalloc.start()
    try:
        listed = DenyList()
        for _ in range(100_000):
            listed.add(Revoked("jti", secrets.token_hex(16), NOW + 3600), NOW)
            listed.add(Revoked("origin_jti", secrets.token_hex(16), NOW + 86400), NOW)
            refresh = refresh_digest(secrets.token_urlsafe(48)).listed
            listed.add(Revoked("refresh", refresh, NOW + 30 * 86400), NOW)
        used, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(listed) == 300_000
    assert used < BUDGET_100K_SESSIONS, f"{used / 2**20:.1f} MiB"


# -- through a shared store ------------------------------------------------------------------------------


def revocation(store: SharedStore, secret: bytes = b"s" * 32) -> Revocation:
    metrics = Metrics(CollectorRegistry())
    log = make_logger("warning", "json")
    oidc = OidcSettings(issuer="https://idp.example.com", client_id="app")
    link = ProviderLink(oidc, metrics=metrics, clock=lambda: NOW, log=log, cache_size=0, keep_claims=())
    return Revocation(store, Sealer(secret, b"authsidecar/revoked/v1"), clock=lambda: NOW, provider=link,
                      metrics=metrics, log=log, watch=StoreWatch(store.kind, "here", metrics, log),
                      max_lifetime=3600, refresh_lifetime=86400, leeway=0)


async def test_a_process_that_starts_after_a_revocation_loads_it_from_redis(
    redis_server: RedisServer,
) -> None:
    settings = RedisSettings(url=redis_server.url, key_prefix="revocation-load:")
    first, later = RedisStore(settings), RedisStore(settings)
    try:
        await revocation(first).revoke([Revoked("sub", "u-1", NOW + 3600, at=NOW)], "admin")
        starting = revocation(later)
        await starting.load()
        assert starting.refuses_claims(TOKEN)
    finally:
        await first.close()
        await later.close()


async def test_entries_in_the_store_are_sealed_and_a_foreign_secret_loads_none(
    redis_server: RedisServer,
) -> None:
    settings = RedisSettings(url=redis_server.url, key_prefix="revocation-sealed:")
    store = RedisStore(settings)
    try:
        await revocation(store).revoke([Revoked("sub", "alice@example.com", NOW + 3600, at=NOW)], "admin")
        (member,) = await store.members("revoked")
        assert "alice" not in member
        stranger = revocation(store, secret=b"x" * 32)
        await stranger.load()
        assert len(stranger.deny) == 0
    finally:
        await store.close()


async def test_a_garbled_message_is_ignored() -> None:
    rev = revocation(MemoryStore())
    for garbage in ("", "not-base64!", "AAAA", "a" * 100):
        rev.receive(garbage)
    assert len(rev.deny) == 0
