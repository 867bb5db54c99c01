"""The memory of forged tokens: a known kid with a signature that does not verify is checked once.

A replay flood of the same forged tokens then costs a digest and a lookup. The memory is bounded
(:data:`~sidecar.oidc.tokens.FORGED_CACHE_SIZE` entries, under 2.5 MiB) and never holds a token that
would verify: only signature failures under the key the kid names *now* are remembered.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest
from jwcrypto.common import base64url_encode
from jwcrypto.jwk import JWK
from prometheus_client import CollectorRegistry

from sidecar.observability import Metrics
from sidecar.oidc.claims import TokenPolicy
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.tokens import FORGED_CACHE_SIZE, TokenValidator
from tests.conftest import FakeClock

from .conftest import NOW, FakeJwks, access_claims, id_claims, mint, reason_of


def verifications(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("authsidecar_token_validation_seconds_count") or 0.0


def known_forged(registry: CollectorRegistry) -> float:
    sample = registry.get_sample_value("authsidecar_token_validation_cache_total", {"result": "known_forged"})
    return sample or 0.0


def forged(rsa_b: JWK, jti: str = "forged") -> str:
    """Claims that would pass, signed by the wrong key under the provider's kid ``key-a``."""
    return mint(access_claims(jti=jti), key=rsa_b, kid="key-a")


def many_forged(rsa_b: JWK, count: int) -> list[str]:
    """``count`` distinct forged tokens: one signed by the wrong key, its signature varied."""
    signed, _, signature = forged(rsa_b).rpartition(".")
    return [f"{signed}.{base64url_encode(i.to_bytes(4, 'big'))}{signature[6:]}" for i in range(count)]


async def test_a_forged_token_is_verified_once_then_refused_from_memory(
    validator: TokenValidator, registry: CollectorRegistry, rsa_b: JWK
) -> None:
    token = forged(rsa_b)

    assert await reason_of(validator.access(token)) == "bad_signature"
    assert verifications(registry) == 1
    for _ in range(3):
        assert await reason_of(validator.access(token)) == "bad_signature"

    assert verifications(registry) == 1
    assert known_forged(registry) == 3


async def test_a_forged_id_token_is_remembered_too(
    validator: TokenValidator, registry: CollectorRegistry, rsa_b: JWK
) -> None:
    token = mint(id_claims(), key=rsa_b, kid="key-a")
    for _ in range(2):
        assert await reason_of(validator.id_token(token)) == "bad_signature"
    assert verifications(registry) == 1


async def test_the_memory_is_bounded_in_entries_and_under_2_5_mib(
    policy: TokenPolicy, jwks: JwksCache, clock: FakeClock, rsa_b: JWK
) -> None:
    registry = CollectorRegistry()
    validator = TokenValidator(policy, jwks, clock, Metrics(registry), cache_size=100)
    tokens = many_forged(rsa_b, FORGED_CACHE_SIZE + 1)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for token in tokens:
        await reason_of(validator.access(token))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    assert held < 2.5 * 2**20, f"{held} bytes for {FORGED_CACHE_SIZE} forged tokens"
    assert verifications(registry) == FORGED_CACHE_SIZE + 1
    # The newest are remembered; the oldest was let go to make room and is verified again.
    await reason_of(validator.access(tokens[-1]))
    assert verifications(registry) == FORGED_CACHE_SIZE + 1
    await reason_of(validator.access(tokens[0]))
    assert verifications(registry) == FORGED_CACHE_SIZE + 2


Setup = Callable[[JwksCache, FakeJwks, FakeClock, JWK, JWK], Awaitable[str]]


async def _expired_then_clock_set_back(jwks: JwksCache, server: FakeJwks, clock: FakeClock,
                                       rsa_a: JWK, rsa_b: JWK) -> str:
    clock.advance(7200)
    return mint(access_claims(), key=rsa_a)


async def _not_yet_valid_then_time_passes(jwks: JwksCache, server: FakeJwks, clock: FakeClock,
                                          rsa_a: JWK, rsa_b: JWK) -> str:
    return mint(access_claims(nbf=int(NOW) + 600, iat=int(NOW) + 600), key=rsa_a)


async def _unknown_kid_then_published(jwks: JwksCache, server: FakeJwks, clock: FakeClock,
                                      rsa_a: JWK, rsa_b: JWK) -> str:
    return mint(access_claims(), key=rsa_b)


async def _kid_reused_for_a_new_key(jwks: JwksCache, server: FakeJwks, clock: FakeClock,
                                    rsa_a: JWK, rsa_b: JWK) -> str:
    # Signed by a new key the provider has not published yet under the kid it already uses.
    return mint(access_claims(), key=rsa_b, kid="key-a")


def _reused(rsa_b: JWK) -> JWK:
    key = JWK.from_json(rsa_b.export())
    key["kid"] = "key-a"
    return key


@pytest.mark.parametrize(
    ("setup", "first_reason", "then"),
    [
        pytest.param(_expired_then_clock_set_back, "expired", "clock_back", id="expired"),
        pytest.param(_not_yet_valid_then_time_passes, "not_yet_valid", "clock_forward", id="not-yet-valid"),
        pytest.param(_unknown_kid_then_published, "unknown_kid", "publish_b", id="unknown-kid"),
        pytest.param(_kid_reused_for_a_new_key, "bad_signature", "reuse_kid", id="kid-reused-for-a-new-key"),
    ],
)
async def test_a_token_that_would_verify_is_never_remembered_as_forged(
    setup: Setup, first_reason: str, then: str, validator: TokenValidator, jwks: JwksCache,
    jwks_server: FakeJwks, clock: FakeClock, rsa_a: JWK, rsa_b: JWK, ec_key: JWK,
) -> None:
    token = await setup(jwks, jwks_server, clock, rsa_a, rsa_b)
    assert await reason_of(validator.access(token)) == first_reason

    if then == "clock_back":
        clock.advance(-7200)
    elif then == "clock_forward":
        clock.advance(600)
    elif then == "publish_b":
        jwks_server.keys = [rsa_a, ec_key, rsa_b]
        assert await jwks.refresh() is True
    else:
        jwks_server.keys = [_reused(rsa_b), ec_key]
        assert await jwks.refresh() is True

    identity = await validator.access(token)
    assert identity.sub == access_claims()["sub"]


async def test_a_forged_token_is_forgotten_when_its_kid_leaves_the_key_set(
    validator: TokenValidator, jwks: JwksCache, jwks_server: FakeJwks, registry: CollectorRegistry,
    rsa_a: JWK, rsa_b: JWK, ec_key: JWK,
) -> None:
    token = forged(rsa_b)
    await reason_of(validator.access(token))

    jwks_server.keys = [ec_key]
    assert await jwks.refresh() is True

    assert await reason_of(validator.access(token)) == "unknown_kid"
    assert known_forged(registry) == 0
