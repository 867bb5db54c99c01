"""Properties of the pure parsers every request goes through, over any text (lone surrogates included:
aiohttp hands undecodable bytes over as such).

Cookie chunks round-trip and never raise on what a browser sends back; ``return_to`` is the fallback
or a URL on an allowed origin; path normalisation is idempotent; the JWT header and payload parsers
refuse with ``TokenRejected`` and nothing else. Example counts come from the Hypothesis profile
(``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import json
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from jwcrypto.common import base64url_encode

from sidecar.auth import cookies as ck
from sidecar.auth.return_to import ReturnToPolicy, origin_of
from sidecar.errors import AmbiguousPath, TokenRejected
from sidecar.oidc import shape
from sidecar.oidc.claims import TokenPolicy
from sidecar.oidc.tokens import _check_segments, _header, _payload
from sidecar.proxy.rules import check_path, rule_path

# Any text, with lone surrogates (what surrogateescape makes of bytes that are not UTF-8).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
# What tokens are made of: cookie-octets without the quote, comma, semicolon and backslash.
TOKEN_CHARS = string.ascii_letters + string.digits + "-._~+/="
NAMES = st.sampled_from(["access_token", "id_token", "refresh_token", "__Host-id_token"])


@given(name=NAMES, value=st.text(TOKEN_CHARS, min_size=1, max_size=30000))
def test_cookie_chunks_join_back_to_the_value_and_each_fits_the_limit(name: str, value: str) -> None:
    try:
        parts = ck.split(name, value)
    except ck.CookieTooLarge:
        return
    assert ck.join(dict(parts), name) == value
    # Values with "/" travel quoted: two more bytes per cookie, within the limit as rendered.
    assert all(len(part_name) + 1 + len(part) + 2 <= ck.CHUNK_LIMIT for part_name, part in parts)


@given(name=NAMES, cookies=st.dictionaries(
    st.one_of(NAMES, NAMES.flatmap(lambda n: st.builds(lambda i: f"{n}.{i}", st.integers(-2, 12))),
              st.text(max_size=20)),
    ANY_TEXT, max_size=8))
def test_joining_whatever_cookies_came_back_never_raises(name: str, cookies: dict[str, str]) -> None:
    joined = ck.join(cookies, name)
    assert joined is None or isinstance(joined, str)
    if joined is not None and name not in cookies:
        assert all(part in joined for key, part in cookies.items() if key.startswith(name + "."))


POLICY = ReturnToPolicy("https://app.example.test/home", ["https://other.example.test"])


@given(candidate=st.one_of(ANY_TEXT, st.builds(lambda p: "/" + p, ANY_TEXT),
                           st.builds(lambda p: "https://app.example.test/" + p, ANY_TEXT)))
def test_return_to_is_the_fallback_or_a_url_on_an_allowed_origin(candidate: str) -> None:
    resolved = POLICY.resolve(candidate)
    assert resolved.isascii()
    assert resolved == POLICY.app_url or origin_of(resolved) in POLICY.origins
    assert not resolved.startswith("//")


@given(path=st.one_of(ANY_TEXT, st.text("/.;\\a%2e", max_size=30)))
@example(path="/;x/admin")  # was "//admin": parameters dropped after the slashes were collapsed
def test_path_checks_refuse_only_with_ambiguous_path_and_normalisation_is_idempotent(path: str) -> None:
    with contextlib.suppress(AmbiguousPath):
        check_path(path)
    normal = rule_path(path)
    assert rule_path(normal) == normal
    assert "//" not in normal
    assert ";" not in normal


TOKENS = TokenPolicy(issuer="https://issuer.test", client_id="c", cognito=False, access_audience=None,
                     algorithms=frozenset({"RS256", "ES256"}), leeway=0)
B64URL = st.text(string.ascii_letters + string.digits + "-_", max_size=60)


def header_of(token: str) -> tuple[str, str | None]:
    """What a cache miss reads first: the token's segments checked, then its protected header."""
    return _header(_check_segments(token)[0], TOKENS)


@given(token=st.one_of(ANY_TEXT, st.builds(lambda a, b, c: f"{a}.{b}.{c}", B64URL, B64URL, B64URL),
                       st.builds(lambda h, rest: f"{h}.{rest}", B64URL, ANY_TEXT)))
def test_a_token_header_parses_or_is_refused_with_a_reason(token: str) -> None:
    reason = None
    try:
        alg, kid = header_of(token)
    except TokenRejected as exc:
        reason = exc.reason
    if reason is not None:
        assert reason in ("malformed", "bad_algorithm")
        return
    assert shape.jws_segments(token)
    assert alg in TOKENS.algorithms
    assert kid is None or isinstance(kid, str)


HEADER_FIELDS = st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8)),
                                max_size=4)


@given(header=HEADER_FIELDS, alg=st.sampled_from(["RS256", "ES256", "HS256", "none"]),
       kid=st.one_of(st.none(), st.text(max_size=20)))
def test_a_well_formed_header_yields_its_alg_and_kid(
    header: dict[str, object], alg: str, kid: str | None
) -> None:
    header = {k: v for k, v in header.items() if k not in ("crit", "b64")} | {"alg": alg, "kid": kid}
    token = f"{base64url_encode(json.dumps(header).encode())}.e30.c2ln"
    if alg not in TOKENS.algorithms:
        with pytest.raises(TokenRejected, match="bad_algorithm"):
            header_of(token)
    else:
        assert header_of(token) == (alg, kid)


JSON = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(segment=st.one_of(B64URL, st.builds(lambda v: base64url_encode(json.dumps(v).encode()), JSON)))
def test_a_payload_is_a_json_object_or_malformed(segment: str) -> None:
    reason = None
    try:
        claims = _payload(segment)
    except TokenRejected as exc:
        reason = exc.reason
    if reason is not None:
        assert reason == "malformed"
        return
    assert isinstance(claims, dict)


@given(token=ANY_TEXT)
def test_the_cheap_shape_check_admits_nothing_that_cannot_be_hashed(token: str) -> None:
    if shape.jws_compact(token):
        token.encode("ascii")
        assert len(token) <= shape.MAX_TOKEN
        assert token.count(".") == 2
    if shape.jws_segments(token):
        assert shape.jws_compact(token)
