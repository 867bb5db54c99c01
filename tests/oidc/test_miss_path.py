"""What a validation-cache miss reuses, and what it must still check every time.

A miss hashes the token once (the digest of the lookup that missed is the digest the verified
token is stored under), decodes the protected header once per distinct header segment (every token
a key signs has the same one), and parses the payload with orjson. None of that may excuse a check:
the token's digest is never another token's, a remembered header does not spare the rest of the
token its shape check, and the map of remembered headers stays small whatever a client sends.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from jwcrypto.common import base64url_encode
from jwcrypto.jwk import JWK

from sidecar.oidc.tokens import TokenValidator

from .conftest import access_claims, b64json, mint, reason_of


async def test_a_verified_token_is_stored_under_its_own_digest_not_the_last_miss(
    validator: TokenValidator, rsa_a: JWK
) -> None:
    missed = mint(access_claims(sub="user-missed", jti="a"), key=rsa_a)
    verified = mint(access_claims(sub="user-verified", jti="b"), key=rsa_a)

    assert validator.cached(missed) is None
    await validator.verify_access(verified)

    assert validator.cached(missed) is None
    hit = validator.cached(verified)
    assert hit is not None
    assert hit.sub == "user-verified"


async def test_the_digest_of_a_miss_serves_the_verification_that_follows_it(
    validator: TokenValidator, rsa_a: JWK
) -> None:
    token = mint(access_claims(sub="user-1"), key=rsa_a)

    assert validator.cached(token) is None
    assert (await validator.verify_access(token)).sub == "user-1"
    hit = validator.cached(token)
    assert hit is not None
    assert hit.sub == "user-1"


def _with_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


@pytest.mark.parametrize(
    ("index", "segment"),
    [
        pytest.param(1, "A" * 401, id="payload-of-an-impossible-length"),
        pytest.param(2, "A" * 341, id="signature-of-an-impossible-length"),
        pytest.param(1, "eyJzdWIiOiJ4In0+", id="payload-outside-base64url"),
        pytest.param(2, "abc/def=", id="signature-outside-base64url"),
        pytest.param(1, "eyJzdWIiOiJ4In0\udcff", id="payload-not-utf8"),
    ],
)
async def test_a_remembered_header_does_not_excuse_the_rest_of_the_token(
    validator: TokenValidator, rsa_a: JWK, index: int, segment: str
) -> None:
    good = mint(access_claims(), key=rsa_a)
    await validator.access(good)  # its header segment is now remembered

    assert await reason_of(validator.access(_with_segment(good, index, segment))) == "malformed"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"alg": "none", "kid": "key-a"}, id="alg-none"),
        pytest.param({"alg": "HS256", "kid": "key-a"}, id="alg-hs256"),
    ],
)
async def test_a_refused_header_is_refused_every_time(
    validator: TokenValidator, rsa_a: JWK, header: dict[str, str]
) -> None:
    good = mint(access_claims(), key=rsa_a)
    refused = _with_segment(good, 0, b64json(header))

    for _ in range(3):
        assert await reason_of(validator.access(refused)) == "bad_algorithm"
    assert (await validator.access(good)).sub == access_claims()["sub"]


async def test_a_lone_surrogate_in_a_signed_payload_is_malformed(
    validator: TokenValidator, rsa_a: JWK
) -> None:
    # json.dumps writes the escape "\ud800", which the stdlib parser would turn into a string no
    # header can carry (UTF-8 refuses it); the payload parser refuses it instead.
    token = mint(access_claims(username="user\ud800"), key=rsa_a)

    assert await reason_of(validator.access(token)) == "malformed"


async def test_remembered_headers_stay_a_small_bounded_map(validator: TokenValidator, rsa_a: JWK) -> None:
    # Headers that pass (allowed alg, a string kid) but name kids nobody published: each one is
    # decoded once, and 10,000 of them must not pile up.
    good = mint(access_claims(), key=rsa_a)
    tokens = [
        _with_segment(good, 0, base64url_encode(f'{{"alg":"RS256","kid":"stray-{i:05d}"}}'.encode()))
        for i in range(10_000)
    ]
    await reason_of(validator.access(tokens[0]))

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for token in tokens:
        assert await reason_of(validator.access(token)) == "unknown_kid"
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    assert held < 64 * 1024, f"{held} bytes held after 10,000 distinct headers"
