"""KeySet building and the JwksCache refresh loop, against a real fake JWKS server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from jwcrypto.common import base64url_encode
from jwcrypto.jwk import JWK
from prometheus_client import CollectorRegistry

from sidecar.oidc.jwks import EMPTY_KEYS, JwksCache, KeySet, accepts
from tests.conftest import FakeClock

from .conftest import COOLDOWN, NOW, FakeJwks, FakeSleep, RecordingLogger

ALGS = ("RS256", "ES256")


def refreshes(registry: CollectorRegistry, reason: str, result: str) -> float:
    labels = {"reason": reason, "result": result}
    return registry.get_sample_value("authsidecar_jwks_refreshes_total", labels) or 0.0


def public(key: JWK, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = key.export_public(as_dict=True)
    for name, value in extra.items():
        if value is None:
            entry.pop(name, None)
        else:
            entry[name] = value
    return entry


@pytest.fixture(scope="module")
def odd_keys() -> dict[str, JWK]:
    return {
        "rsa1024": JWK.generate(kty="RSA", size=1024, kid="small"),
        "p384": JWK.generate(kty="EC", crv="P-384", kid="p384"),
        "oct": JWK.generate(kty="oct", size=256, kid="hmac"),
    }


# ---------------------------------------------------------------------------------------------- KeySet

ENTRIES: dict[str, tuple[Callable[[JWK, JWK, dict[str, JWK]], Any], bool]] = {
    "rsa public key": (lambda r, e, o: public(r), True),
    "ec p-256 key": (lambda r, e, o: public(e), True),
    "rsa key without use": (lambda r, e, o: public(r, use=None), True),
    "rsa key with matching alg": (lambda r, e, o: public(r, alg="RS256"), True),
    "key_ops verify": (lambda r, e, o: public(r, key_ops=["verify"], use=None), True),
    "encryption key": (lambda r, e, o: public(r, use="enc"), False),
    "alg outside allowlist": (lambda r, e, o: public(r, alg="RS512"), False),
    "rsa key claiming HS256": (lambda r, e, o: public(r, alg="HS256"), False),
    "rsa key claiming ES256": (lambda r, e, o: public(r, alg="ES256"), False),
    "alg not a string": (lambda r, e, o: public(r, alg=["RS256"]), False),
    "symmetric key": (lambda r, e, o: o["oct"].export(as_dict=True), False),
    "ec p-384 when only ES256 allowed": (lambda r, e, o: public(o["p384"]), False),
    "rsa 1024-bit": (lambda r, e, o: public(o["rsa1024"]), False),
    "no kid": (lambda r, e, o: public(r, kid=None), False),
    "empty kid": (lambda r, e, o: public(r, kid=""), False),
    "key_ops without verify": (lambda r, e, o: public(r, key_ops=["encrypt"], use=None), False),
    "modulus not base64url": (lambda r, e, o: public(r, n="!!!not base64!!!"), False),
    "modulus a number": (lambda r, e, o: public(r, n=12345), False),
    "ec point not on curve": (lambda r, e, o: public(e, x=base64url_encode(b"\x01" * 32)), False),
    "unknown kty": (lambda r, e, o: {"kty": "XYZ", "kid": "key-a", "n": "AQAB"}, False),
    "not an object": (lambda r, e, o: ["kty", "RSA"], False),
}


@pytest.mark.parametrize(("build", "kept"), list(ENTRIES.values()), ids=list(ENTRIES))
def test_from_jwks_keeps_only_usable_signing_keys(
    build: Callable[[JWK, JWK, dict[str, JWK]], Any],
    kept: bool,
    rsa_a: JWK,
    ec_key: JWK,
    odd_keys: dict[str, JWK],
) -> None:
    entry = build(rsa_a, ec_key, odd_keys)
    keys = KeySet.from_jwks({"keys": [entry]}, ALGS)
    assert len(keys) == (1 if kept else 0)
    if kept:
        (kid,) = keys.kids
        assert keys.get(kid) is not None


def test_private_key_material_is_never_kept(rsa_a: JWK) -> None:
    keys = KeySet.from_jwks({"keys": [rsa_a.export_private(as_dict=True)]}, ALGS)
    key = keys.get("key-a")
    assert key is not None
    assert not key.has_private
    assert "d" not in key
    assert "p" not in key


def test_first_of_duplicate_kids_wins(rsa_a: JWK, rsa_b: JWK) -> None:
    keys = KeySet.from_jwks({"keys": [public(rsa_a), public(rsa_b, kid="key-a")]}, ALGS)
    key = keys.get("key-a")
    assert key is not None
    assert key["n"] == rsa_a["n"]


@pytest.mark.parametrize("doc", [{}, {"keys": "nope"}, {"keys": None}, {"keys": []}], ids=repr)
def test_from_jwks_without_a_key_list_is_empty(doc: dict[str, Any]) -> None:
    assert KeySet.from_jwks(doc, ALGS) is EMPTY_KEYS


def test_empty_keyset() -> None:
    assert len(EMPTY_KEYS) == 0
    assert EMPTY_KEYS.kids == frozenset()
    assert EMPTY_KEYS.get("anything") is None


def test_repr_names_kids_only(rsa_a: JWK) -> None:
    keys = KeySet.from_jwks({"keys": [public(rsa_a)]}, ALGS)
    assert repr(keys) == "KeySet(kids=['key-a'])"
    assert rsa_a["n"][:20] not in repr(keys)


ACCEPTS = [
    ("rsa", "RS256", True),
    ("rsa", "PS256", True),
    ("rsa", "ES256", False),
    ("rsa", "HS256", False),
    ("rsa", "none", False),
    ("ec", "ES256", True),
    ("ec", "ES384", False),
    ("ec", "RS256", False),
    ("rsa-pinned-rs256", "PS256", False),
]


@pytest.mark.parametrize(("which", "alg", "ok"), ACCEPTS, ids=[f"{w}-{a}" for w, a, _ in ACCEPTS])
def test_accepts_matches_alg_to_key_type(which: str, alg: str, ok: bool, rsa_a: JWK, ec_key: JWK) -> None:
    entries = {"rsa": public(rsa_a), "ec": public(ec_key), "rsa-pinned-rs256": public(rsa_a, alg="RS256")}
    entry = entries[which]
    key = KeySet.from_jwks({"keys": [entry]}, {"RS256", "PS256", "ES256", "ES384"}).get(entry["kid"])
    assert accepts(key, alg) is ok


# ---------------------------------------------------------------------------------------------- JwksCache


async def test_start_loads_keys_and_reports_success(
    jwks: JwksCache, jwks_server: FakeJwks, registry: CollectorRegistry
) -> None:
    assert jwks.ready
    assert jwks.keys.kids == {"key-a", "key-ec"}
    assert jwks_server.requests == 1
    assert refreshes(registry, "startup", "ok") == 1
    assert registry.get_sample_value("authsidecar_jwks_keys") == 2
    assert registry.get_sample_value("authsidecar_jwks_last_success_timestamp_seconds") == NOW


async def test_not_ready_until_first_success_and_startup_retries_back_off(
    make_jwks: Callable[..., JwksCache], jwks_server: FakeJwks, registry: CollectorRegistry
) -> None:
    sleeper = FakeSleep()
    jwks_server.mode = "error"
    cache = make_jwks(sleep=sleeper)
    await cache.start()  # does not raise
    assert not cache.ready
    assert len(cache.keys) == 0

    first = await sleeper.next_delay()
    assert 1.0 <= first <= 1.25
    sleeper.release()
    second = await sleeper.next_delay()
    assert 2.0 <= second <= 2.5
    assert not cache.ready
    assert jwks_server.requests == 2

    jwks_server.mode = "ok"
    sleeper.release()
    assert await sleeper.next_delay() == 3600.0  # back to the normal schedule
    assert cache.ready
    assert cache.keys.kids == {"key-a", "key-ec"}
    assert refreshes(registry, "startup", "error") == 2
    assert refreshes(registry, "startup", "ok") == 1


async def test_backoff_is_capped(make_jwks: Callable[..., JwksCache], jwks_server: FakeJwks) -> None:
    sleeper = FakeSleep()
    jwks_server.mode = "error"
    cache = make_jwks(sleep=sleeper, max_backoff=4.0)
    await cache.start()
    delays = []
    for _ in range(5):
        delays.append(await sleeper.next_delay())
        sleeper.release()
    assert [int(d) for d in delays] == [1, 2, 4, 4, 4]
    assert all(d <= 5.0 for d in delays)
    assert not cache.ready


async def test_scheduled_refresh_rotates_keys_and_reports_removed_kids(
    make_jwks: Callable[..., JwksCache], jwks_server: FakeJwks, rsa_b: JWK, registry: CollectorRegistry
) -> None:
    sleeper = FakeSleep()
    cache = make_jwks(sleep=sleeper)
    removed: list[frozenset[str]] = []
    cache.on_keys_removed(removed.append)
    await cache.start()
    assert await sleeper.next_delay() == 3600.0

    jwks_server.keys = [rsa_b]
    sleeper.release()
    assert await sleeper.next_delay() == 3600.0
    assert cache.keys.kids == {"key-b"}
    assert removed == [frozenset({"key-a", "key-ec"})]
    assert refreshes(registry, "scheduled", "ok") == 1


async def test_failed_scheduled_refresh_keeps_keys_and_retries_soon(
    make_jwks: Callable[..., JwksCache],
    jwks_server: FakeJwks,
    logger: RecordingLogger,
    registry: CollectorRegistry,
) -> None:
    sleeper = FakeSleep()
    cache = make_jwks(sleep=sleeper)
    await cache.start()
    before = cache.keys
    assert await sleeper.next_delay() == 3600.0

    jwks_server.mode = "error"
    sleeper.release()
    assert 1.0 <= await sleeper.next_delay() <= 1.25
    assert cache.keys is before
    assert cache.ready
    assert refreshes(registry, "scheduled", "error") == 1
    assert [event for event, _ in logger.warnings()] == ["jwks_refresh_failed"]


def _big_doc() -> dict[str, Any]:
    return {"keys": [{"kty": "RSA", "kid": f"k{i}", "n": "A" * 1000, "e": "AQAB"} for i in range(1100)]}


BAD_ANSWERS: dict[str, tuple[str, Any, str]] = {
    "500": ("error", None, "HTTP 500"),
    "garbage body": ("garbage", None, "not JSON"),
    "json array": ("not_object", None, "not a JWK Set"),
    "keys not a list": ("custom", {"keys": "nope"}, "not a JWK Set"),
    "no keys member": ("custom", {"kids": []}, "not a JWK Set"),
    "empty key list": ("custom", {"keys": []}, "no usable signing key"),
    "only unusable keys": (
        "custom",
        {"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}, {"kty": "RSA", "kid": "x", "use": "enc"}]},
        "no usable signing key",
    ),
    "too large": ("custom", _big_doc(), "document too large"),
    "hangs past the timeout": ("hang", None, "timeout"),
}


@pytest.mark.parametrize(("mode", "custom", "error"), list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
async def test_bad_answer_keeps_last_good_keys(
    mode: str,
    custom: Any,
    error: str,
    make_jwks: Callable[..., JwksCache],
    jwks_server: FakeJwks,
    logger: RecordingLogger,
    registry: CollectorRegistry,
    rsa_a: JWK,
) -> None:
    cache = make_jwks(timeout=0.2)
    await cache.start()
    before = cache.keys
    jwks_server.mode, jwks_server.custom = mode, custom

    assert await cache.refresh() is False

    assert cache.keys is before
    assert cache.ready
    assert refreshes(registry, "manual", "error") == 1
    ((event, fields),) = logger.warnings()
    assert event == "jwks_refresh_failed"
    assert fields["reason"] == "manual"
    assert fields["error"].startswith(error)
    assert fields["keys_kept"] == 2
    assert rsa_a["n"][:16] not in repr(logger.lines)


async def test_unreachable_provider_is_a_failure_not_a_crash(
    make_jwks: Callable[..., JwksCache], logger: RecordingLogger
) -> None:
    cache = make_jwks(uri="http://127.0.0.1:1/jwks")  # nothing listens on port 1
    await cache.start()
    assert not cache.ready
    ((_, fields),) = logger.warnings()
    assert fields["error"] == "ClientConnectorError"


async def test_refresh_logs_changed_kids_without_key_material(
    jwks: JwksCache, jwks_server: FakeJwks, logger: RecordingLogger, rsa_a: JWK, rsa_b: JWK
) -> None:
    jwks_server.keys = [rsa_a, rsa_b]
    assert await jwks.refresh() is True
    changes = [kw for level, event, kw in logger.lines if event == "jwks_keys_changed"]
    assert changes[-1]["added"] == ["key-b"]
    assert changes[-1]["removed"] == ["key-ec"]
    assert rsa_b["n"][:16] not in repr(logger.lines)


async def test_a_failing_removed_callback_does_not_fail_the_refresh(
    jwks: JwksCache, jwks_server: FakeJwks, logger: RecordingLogger, rsa_b: JWK
) -> None:
    seen: list[frozenset[str]] = []

    def broken(kids: frozenset[str]) -> None:
        raise RuntimeError("boom")

    jwks.on_keys_removed(broken)
    jwks.on_keys_removed(seen.append)
    jwks_server.keys = [rsa_b]
    assert await jwks.refresh() is True
    assert jwks.keys.kids == {"key-b"}
    assert seen == [frozenset({"key-a", "key-ec"})]
    assert [event for event, _ in logger.warnings()] == ["jwks_removed_callback_failed"]


async def test_known_kid_needs_no_network(jwks: JwksCache, jwks_server: FakeJwks) -> None:
    jwks_server.gate.clear()  # any request would now block
    async with asyncio.timeout(5):
        key = await jwks.key_for("key-a")
    assert key is jwks.keys.get("key-a")
    assert jwks_server.requests == 1


@pytest.mark.parametrize("callers", [100, 1000])
async def test_unknown_kid_is_fetched_once_for_all_concurrent_callers(
    callers: int, jwks: JwksCache, jwks_server: FakeJwks, rsa_b: JWK, registry: CollectorRegistry
) -> None:
    jwks_server.keys = [rsa_b]
    jwks_server.gate.clear()
    jwks_server.requested.clear()
    tasks = [asyncio.create_task(jwks.key_for("key-b")) for _ in range(callers)]
    await jwks_server.requested.wait()
    jwks_server.gate.set()
    keys = await asyncio.gather(*tasks)

    assert jwks_server.requests == 2  # startup + one
    assert all(k is not None and k["kid"] == "key-b" for k in keys)
    assert refreshes(registry, "unknown_kid", "ok") == 1


async def test_unknown_kid_cooldown_answers_none_at_once_then_allows_one_more_fetch(
    jwks: JwksCache, jwks_server: FakeJwks, clock: FakeClock, rsa_a: JWK, rsa_b: JWK
) -> None:
    results = await asyncio.gather(*(jwks.key_for("nope") for _ in range(1000)))
    assert results == [None] * 1000
    assert jwks_server.requests == 2

    jwks_server.keys = [rsa_a, rsa_b]  # rotation lands inside the cooldown
    jwks_server.gate.clear()  # a fetch now would block the test
    clock.advance(COOLDOWN - 0.001)
    async with asyncio.timeout(5):
        assert await jwks.key_for("key-b") is None
        assert await jwks.key_for("other") is None
    assert jwks_server.requests == 2

    jwks_server.gate.set()
    clock.advance(0.001)
    key = await jwks.key_for("key-b")
    assert key is not None
    assert key["kid"] == "key-b"
    assert jwks_server.requests == 3


async def test_clock_stepping_back_does_not_extend_the_cooldown(
    jwks: JwksCache, jwks_server: FakeJwks, clock: FakeClock
) -> None:
    assert await jwks.key_for("nope") is None
    clock.advance(-3600)
    assert await jwks.key_for("nope") is None
    assert jwks_server.requests == 3


async def test_failed_unknown_kid_fetch_also_starts_the_cooldown(
    jwks: JwksCache, jwks_server: FakeJwks, clock: FakeClock
) -> None:
    jwks_server.mode = "error"
    assert await jwks.key_for("nope") is None
    assert await jwks.key_for("nope") is None
    assert jwks_server.requests == 2
    assert jwks.keys.kids == {"key-a", "key-ec"}


async def test_unknown_kid_joins_a_fetch_already_in_flight(
    jwks: JwksCache, jwks_server: FakeJwks, rsa_b: JWK
) -> None:
    jwks_server.keys = [rsa_b]
    jwks_server.gate.clear()
    jwks_server.requested.clear()
    manual = asyncio.create_task(jwks.refresh())
    await jwks_server.requested.wait()
    lookup = asyncio.create_task(jwks.key_for("key-b"))
    jwks_server.gate.set()
    assert await manual is True
    assert (await lookup) is not None
    assert jwks_server.requests == 2


async def test_close_stops_the_background_task(make_jwks: Callable[..., JwksCache]) -> None:
    sleeper = FakeSleep()
    cache = make_jwks(sleep=sleeper)
    await cache.start()
    await sleeper.next_delay()
    task = cache._task
    assert task is not None
    await cache.close()
    assert task.cancelled()
    await cache.close()  # idempotent


async def test_close_cancels_a_fetch_in_flight(
    make_jwks: Callable[..., JwksCache], jwks_server: FakeJwks
) -> None:
    cache = make_jwks()
    jwks_server.gate.clear()
    starting = asyncio.create_task(cache.start())
    await jwks_server.requested.wait()
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not cache.ready
