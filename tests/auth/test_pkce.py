import re

import pytest

from sidecar.auth.pkce import challenge_s256, new_nonce, new_state, new_verifier

UNRESERVED = re.compile(r"^[A-Za-z0-9\-._~]+$")


def test_challenge_matches_rfc7636_appendix_b():
    assert challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_verifier_is_43_to_128_unreserved_characters():
    verifier = new_verifier()
    assert 43 <= len(verifier) <= 128
    assert UNRESERVED.match(verifier)


def test_challenge_is_unpadded_base64url_of_32_bytes():
    challenge = challenge_s256(new_verifier())
    assert len(challenge) == 43
    assert "=" not in challenge
    assert re.fullmatch(r"[A-Za-z0-9_-]+", challenge)


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param("a" * 42, id="too-short"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("a" * 42 + "+", id="plus-not-unreserved"),
        pytest.param("a" * 42 + "=", id="padding-not-unreserved"),
        pytest.param("a" * 42 + " ", id="space"),
        pytest.param("a" * 42 + "é", id="non-ascii"),
        pytest.param("", id="empty"),
    ],
)
def test_challenge_refuses_a_verifier_outside_rfc7636(verifier):
    with pytest.raises(ValueError, match="43 to 128"):
        challenge_s256(verifier)


@pytest.mark.parametrize("length", [43, 128], ids=["shortest", "longest"])
def test_challenge_accepts_the_length_bounds(length):
    assert len(challenge_s256("x" * length)) == 43


@pytest.mark.parametrize("make", [new_verifier, new_state, new_nonce], ids=["verifier", "state", "nonce"])
def test_random_values_are_url_safe_distinct_and_carry_at_least_256_bits(make):
    values = {make() for _ in range(200)}
    assert len(values) == 200
    for value in values:
        assert UNRESERVED.match(value)
        # base64url carries 6 bits per character.
        assert len(value) * 6 >= 256
