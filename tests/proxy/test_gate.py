"""The gate's cache of parsed Cookie headers, shared with the app-bound Cookie header."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sidecar.config import IdentityHeaderSettings
from sidecar.proxy.gate import CookieCache
from sidecar.proxy.headers import HeaderPolicy

from .test_headers import SAME, SIDECAR_COOKIES


def request(cookie: str) -> web.Request:
    return make_mocked_request("GET", "/", headers={"Cookie": cookie})


@pytest.mark.parametrize(("raw", "expected"), SIDECAR_COOKIES)
def test_the_app_bound_header_is_the_policys_whichever_reader_came_first(
    raw: str, expected: str | None
) -> None:
    want = raw if expected is SAME else expected
    parsed_first = CookieCache()
    parsed_first.get(request(raw))
    assert parsed_first.for_app(raw) == want
    assert CookieCache().for_app(raw) == want


@pytest.mark.parametrize("raw", [raw for raw, _ in SIDECAR_COOKIES] + ['a="quoted; value"; access_token=t'])
@pytest.mark.parametrize("first", ["for_app", "get"])
def test_the_pairs_are_aiohttps_request_cookies(raw: str, first: str) -> None:
    cache = CookieCache()
    if first == "for_app":
        cache.for_app(raw)
    assert dict(cache.get(request(raw))) == dict(request(raw).cookies)


def test_one_entry_per_header_serves_both_readers_and_the_size_is_bounded() -> None:
    cache = CookieCache(size=3)
    headers = [f"access_token=t{i}; app=a{i}" for i in range(5)]
    for raw in headers:
        pairs = cache.get(request(raw))
        assert cache.get(request(raw)) is pairs
        assert cache.for_app(raw) == raw.split("; ")[1]
    assert len(cache._cache) == 3
    assert list(cache._cache) == headers[2:]


def test_a_header_policy_uses_the_shared_cache_when_given_one() -> None:
    cache = CookieCache()
    policy = HeaderPolicy(IdentityHeaderSettings(), cookie_filter=cache.for_app)
    out = policy.upstream_headers(
        {"Cookie": "access_token=t; app=1"},
        peer="127.0.0.1", scheme="http", host="h", identity=None, access_token=None, request_id="r",
    )
    assert out.getall("Cookie") == ["app=1"]
    assert "access_token=t; app=1" in cache._cache
    assert policy._cookies == {}
