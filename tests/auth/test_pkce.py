import re

import pytest

from sidecar.auth.pkce import challenge_s256, new_nonce, new_state, new_verifier

UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]+")


def test_challenge_matches_rfc7636_appendix_b():
    assert challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_verifier_is_43_to_128_unreserved_characters():
    verifier = new_verifier()
    assert 43 <= len(verifier) <= 128
    assert UNRESERVED.fullmatch(verifier)


def test_challenge_is_unpadded_base64url_of_32_bytes():
    challenge = challenge_s256(new_verifier())
    assert len(challenge) == 43
    assert "=" not in challenge
    assert re.fullmatch(r"[A-Za-z0-9_-]+", challenge)


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param("a" * 42, id="42-chars-too-short"),
        pytest.param("a" * 129, id="129-chars-too-long"),
        pytest.param("a" * 42 + "+", id="plus-not-unreserved"),
        pytest.param("a" * 42 + "=", id="padding-not-unreserved"),
        pytest.param("a" * 42 + " ", id="trailing-space"),
        pytest.param("a" * 21 + " " + "a" * 21, id="inner-space"),
        pytest.param("a" * 43 + "\n", id="trailing-newline"),
        pytest.param("a" * 128 + "\n", id="longest-plus-trailing-newline"),
        pytest.param("\n" + "a" * 43, id="leading-newline"),
        pytest.param("a" * 43 + "\r\n", id="trailing-crlf"),
        pytest.param("a" * 42 + "é", id="non-ascii-latin"),
        pytest.param("a" * 42 + "\u0661", id="non-ascii-digit"),
        pytest.param("a" * 42 + "\x00", id="nul"),
        pytest.param("", id="empty"),
    ],
)
def test_challenge_refuses_a_verifier_outside_rfc7636(verifier):
    with pytest.raises(ValueError, match="43 to 128"):
        challenge_s256(verifier)


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param("x" * 43, id="43-chars-shortest"),
        pytest.param("x" * 128, id="128-chars-longest"),
        pytest.param("A-._~" * 9, id="every-punctuation-of-the-alphabet"),
        pytest.param("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", id="rfc7636-appendix-b"),
    ],
)
def test_challenge_accepts_a_verifier_of_rfc7636s_alphabet_and_length(verifier):
    assert len(challenge_s256(verifier)) == 43


@pytest.mark.parametrize("make", [new_verifier, new_state, new_nonce], ids=["verifier", "state", "nonce"])
def test_random_values_are_url_safe_distinct_and_carry_at_least_256_bits(make):
    values = {make() for _ in range(200)}
    assert len(values) == 200
    for value in values:
        assert UNRESERVED.fullmatch(value)
        # base64url carries 6 bits per character.
        assert len(value) * 6 >= 256
