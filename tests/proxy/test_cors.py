"""CorsPolicy as a pure function: which preflights are answered, with which headers, and the actual headers.

CORS here always carries credentials, so origins are an exact list (never ``*``, never ``null``), and
a refused preflight gets no CORS header at all (``None``).
"""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config import CorsSettings
from sidecar.proxy.cors import CorsPolicy

APP = "https://app.example.com"
OTHER = "http://localhost:5173"


def policy(**overrides: Any) -> CorsPolicy:
    return CorsPolicy(CorsSettings(**{"allowed_origins": [APP, OTHER], **overrides}))


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (APP, True),
        (OTHER, True),
        ("HTTPS://APP.EXAMPLE.COM", True),
        ("https://app.example.com:443", False),
        ("http://app.example.com", False),
        ("https://app.example.com.evil.test", False),
        ("https://evil.app.example.com", False),
        ("https://app.example.co", False),
        (APP + "/", False),
        ("null", False),
        ("", False),
        ("*", False),
    ],
    ids=["listed", "second-listed", "case-insensitive", "explicit-default-port", "other-scheme",
         "suffix-domain", "subdomain", "prefix-of-host", "trailing-slash", "null", "empty", "star"],
)
def test_an_origin_is_allowed_only_when_listed(origin: str, allowed: bool) -> None:
    assert policy().allows(origin) is allowed


def test_origins_from_the_config_are_compared_case_insensitively() -> None:
    assert policy(allowed_origins=["https://App.Example.COM/"]).allows(APP)


def test_without_origins_the_policy_is_off_and_allows_nobody() -> None:
    off = CorsPolicy(CorsSettings())
    assert not off
    assert not off.allows(APP)
    assert off.preflight(APP, "GET", "") is None
    assert policy()


PREFLIGHTS = [
    # (origin, method, request headers, answered, id)
    (APP, "GET", "", True, "simple-get"),
    (APP, "DELETE", "", True, "listed-method"),
    (APP, "delete", "", True, "method-case-insensitive"),
    (APP, "TRACE", "", False, "unlisted-method"),
    (APP, "CONNECT", "", False, "connect"),
    (APP, "POST", "Content-Type", True, "simple-header"),
    (APP, "POST", "content-type, x-xsrf-token", True, "listed-headers-lower-case"),
    (APP, "POST", "X-XSRF-TOKEN,Accept", True, "listed-headers-no-space"),
    (APP, "POST", " accept-language ,  content-language ", True, "whitespace-around-headers"),
    (APP, "POST", "x-xsrf-token,,", True, "empty-list-items"),
    (APP, "POST", "Authorization", False, "unlisted-authorization"),
    (APP, "POST", "content-type, X-Custom", False, "one-unlisted-among-listed"),
    (APP, "POST", "x-xsrf-token-extra", False, "prefix-of-a-listed-header-is-not-it"),
    ("https://evil.test", "GET", "", False, "unlisted-origin"),
    ("null", "GET", "", False, "null-origin"),
    ("HTTPS://APP.EXAMPLE.COM", "GET", "", True, "origin-case-insensitive"),
]


@pytest.mark.parametrize(
    ("origin", "method", "headers", "answered"), [p[:4] for p in PREFLIGHTS], ids=[p[4] for p in PREFLIGHTS]
)
def test_a_preflight_is_answered_only_for_a_listed_origin_method_and_headers(
    origin: str, method: str, headers: str, answered: bool
) -> None:
    answer = policy().preflight(origin, method, headers)
    assert (answer is not None) is answered


def test_an_answered_preflight_names_the_origin_as_sent_and_the_configured_lists() -> None:
    answer = policy(allow_headers=["Content-Type", "X-XSRF-TOKEN", "X-Trace"], allow_methods=["GET", "PUT"],
                    max_age=1234).preflight("HTTPS://APP.EXAMPLE.COM", "PUT", "x-trace")
    assert answer == {
        # The browser compares Access-Control-Allow-Origin with its own Origin byte for byte.
        "Access-Control-Allow-Origin": "HTTPS://APP.EXAMPLE.COM",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "GET, PUT",
        "Access-Control-Allow-Headers": "Content-Type, X-XSRF-TOKEN, X-Trace",
        "Access-Control-Max-Age": "1234",
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }


@pytest.mark.parametrize("max_age", [0, 600, 86400], ids=["zero", "default", "a-day"])
def test_the_preflight_max_age_is_the_configured_one(max_age: int) -> None:
    answer = policy(max_age=max_age).preflight(APP, "GET", "")
    assert answer is not None
    assert answer["Access-Control-Max-Age"] == str(max_age)


def test_the_simple_headers_are_always_allowed_even_when_the_list_is_empty() -> None:
    bare = policy(allow_headers=[])
    assert bare.preflight(APP, "POST", "Accept, Accept-Language, Content-Language, Content-Type") is not None
    assert bare.preflight(APP, "POST", "X-XSRF-TOKEN") is None


def test_the_actual_response_headers_name_the_origin_and_credentials_only() -> None:
    assert dict(CorsPolicy.actual(OTHER)) == {
        "Access-Control-Allow-Origin": OTHER,
        "Access-Control-Allow-Credentials": "true",
    }


@pytest.mark.parametrize(
    "origins",
    [["*"], ["null"], ["https://app.example.com/path"], ["app.example.com"]],
    ids=["star", "null", "with-a-path", "without-a-scheme"],
)
def test_an_origin_that_cannot_be_compared_exactly_is_refused_at_the_door(origins: list[str]) -> None:
    with pytest.raises(ValueError, match="allowed_origins"):
        CorsSettings(allowed_origins=origins)
