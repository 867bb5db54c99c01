import base64
import hashlib
import hmac

import pytest

from sidecar.auth.csrf import CsrfTokens, OriginPolicy, origin_allowed

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
TOKENS = CsrfTokens(SECRET)
SUB = "user-123"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_issued_token_is_random_part_dot_mac_both_base64url():
    token = TOKENS.issue(SUB)
    random_part, mac = token.split(".")
    assert len(base64.urlsafe_b64decode(random_part + "==")) == 16
    assert len(base64.urlsafe_b64decode(mac + "=")) == 32


def test_tokens_are_fresh_each_time():
    assert len({TOKENS.issue(SUB) for _ in range(100)}) == 100


def test_a_matching_header_and_cookie_with_a_valid_mac_passes():
    token = TOKENS.issue(SUB)
    assert TOKENS.verify(token, token, SUB) is None


def test_the_mac_key_is_derived_not_the_raw_secret():
    # A token keyed directly with cookies.secret (used elsewhere too) must not verify.
    nonce = b"n" * 16
    raw = f"{b64(nonce)}.{b64(hmac.new(SECRET, nonce + SUB.encode(), hashlib.sha256).digest())}"
    assert TOKENS.verify(raw, raw, SUB) == "bad_signature"


def _tampered_mac():
    random_part, mac = TOKENS.issue(SUB).split(".")
    flipped = "A" if mac[0] != "A" else "B"
    return f"{random_part}.{flipped}{mac[1:]}"


GOOD = TOKENS.issue(SUB)
SIBLING_SESSION = TOKENS.issue("attacker-sub")
FORGED = CsrfTokens(OTHER_SECRET).issue(SUB)
TAMPERED = _tampered_mac()


@pytest.mark.parametrize(
    ("header", "cookie", "reason"),
    [
        pytest.param(None, GOOD, "missing_header", id="no-header"),
        pytest.param("", GOOD, "missing_header", id="empty-header"),
        pytest.param(GOOD, None, "missing_cookie", id="no-cookie"),
        pytest.param(GOOD, "", "missing_cookie", id="empty-cookie"),
        pytest.param(None, None, "missing_header", id="neither"),
        pytest.param(GOOD, TOKENS.issue(SUB), "mismatch", id="header-differs-from-cookie"),
        pytest.param(GOOD, GOOD + "x", "mismatch", id="cookie-longer"),
        pytest.param("\u00e9" + GOOD[1:], GOOD, "mismatch", id="non-ascii-header"),
        pytest.param("\udcff", "\udcff", "bad_signature", id="lone-surrogate-both"),
        pytest.param(SIBLING_SESSION, SIBLING_SESSION, "bad_signature", id="planted-token-of-another-user"),
        pytest.param(FORGED, FORGED, "bad_signature", id="planted-token-without-the-secret"),
        pytest.param(TAMPERED, TAMPERED, "bad_signature", id="tampered-mac"),
        pytest.param("abc", "abc", "bad_signature", id="not-a-token"),
        pytest.param("a.b.c", "a.b.c", "bad_signature", id="three-parts"),
        pytest.param(GOOD + "=", GOOD + "=", "bad_signature", id="padded"),
        pytest.param(GOOD.replace(".", ":"), GOOD.replace(".", ":"), "bad_signature", id="wrong-separator"),
        pytest.param(GOOD.split(".")[0] + ".", GOOD.split(".")[0] + ".", "bad_signature", id="mac-missing"),
        pytest.param("+" * 22 + "." + "/" * 43, "+" * 22 + "." + "/" * 43, "bad_signature",
                     id="standard-base64-alphabet"),
    ],
)
def test_verify_names_the_reason_a_request_fails(header, cookie, reason):
    assert TOKENS.verify(header, cookie, SUB) == reason


def test_a_token_is_bound_to_its_session():
    token = TOKENS.issue(SUB)
    assert TOKENS.verify(token, token, "someone-else") == "bad_signature"


def test_a_token_survives_a_new_instance_with_the_same_secret():
    # Replicas share cookies.secret; any of them verifies what another issued.
    token = TOKENS.issue(SUB)
    assert CsrfTokens(SECRET).verify(token, token, SUB) is None


def test_a_non_ascii_binding_is_accepted():
    token = TOKENS.issue("\u00fcser")
    assert TOKENS.verify(token, token, "\u00fcser") is None
    assert TOKENS.verify(token, token, "user") == "bad_signature"


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        CsrfTokens(b"short")


# --- Origin ------------------------------------------------------------------------------------------

SELF = "https://api.example.test"
ALLOWED = ["https://app.example.test"]


@pytest.mark.parametrize(
    ("origin", "sec_fetch_site", "referer", "allowed"),
    [
        pytest.param(SELF, "same-origin", None, True, id="same-origin"),
        pytest.param("https://app.example.test", "same-site", None, True, id="allowed-app-origin"),
        pytest.param("https://app.example.test", "cross-site", None, True,
                     id="allowed-origin-even-cross-site"),
        pytest.param("HTTPS://APP.EXAMPLE.TEST:443", None, None, True, id="allowed-origin-normalized"),
        pytest.param("https://evil.test", "cross-site", None, False, id="foreign-origin"),
        pytest.param("https://evil.test", None, None, False, id="foreign-origin-without-fetch-metadata"),
        pytest.param("https://evil.test", "same-origin", SELF + "/x", False,
                     id="foreign-origin-wins-over-rest"),
        pytest.param("https://sibling.example.test", "same-site", None, False, id="sibling-subdomain"),
        pytest.param("http://app.example.test", None, None, False, id="scheme-downgrade"),
        pytest.param("https://app.example.test:8443", None, None, False, id="other-port"),
        pytest.param("null", None, None, False, id="null-origin"),
        pytest.param("", None, None, False, id="empty-origin"),
        pytest.param(None, "cross-site", None, False, id="cross-site-without-origin"),
        pytest.param(None, "Cross-Site", SELF + "/page", False, id="cross-site-any-case-referer-ignored"),
        pytest.param(None, "same-origin", None, True, id="same-origin-without-origin"),
        pytest.param(None, "none", None, True, id="user-initiated"),
        pytest.param(None, None, "https://app.example.test/orders", True, id="allowed-referer"),
        pytest.param(None, None, "https://evil.test/page", False, id="foreign-referer"),
        pytest.param(None, None, "not a url", False, id="garbage-referer"),
        pytest.param(None, None, None, True, id="no-signals-token-decides"),
    ],
)
def test_origin_check(origin, sec_fetch_site, referer, allowed):
    assert origin_allowed(origin, sec_fetch_site, referer, ALLOWED, SELF) is allowed
    assert OriginPolicy(ALLOWED, SELF).allows(origin, sec_fetch_site, referer) is allowed


def test_origin_policy_refuses_unusable_configuration():
    with pytest.raises(ValueError, match="origin"):
        OriginPolicy(["app.example.test"], SELF)
