"""The cookie cache behind the session store: one parse per distinct Cookie header, for every reader."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sidecar.auth.cookies import CookieNames
from sidecar.auth.session import NO_SESSION, CookieCache, Session
from sidecar.config import CookieSettings, CsrfSettings
from tests.proxy.test_headers import SAME, SIDECAR_COOKIES

NAMES = CookieNames.build(CookieSettings(), CsrfSettings())


def request(cookie: str | None) -> web.Request:
    return make_mocked_request("GET", "/", headers={"Cookie": cookie} if cookie is not None else {})


def cache(size: int = 256) -> CookieCache:
    return CookieCache(NAMES.pattern.match, size=size)


@pytest.mark.parametrize(("raw", "expected"), SIDECAR_COOKIES)
def test_the_app_bound_header_is_the_same_whichever_reader_came_first(raw: str, expected: str | None) -> None:
    want = raw if expected is SAME else expected
    parsed_first = cache()
    parsed_first.pairs(request(raw))
    assert parsed_first.for_app(raw) == want
    assert cache().for_app(raw) == want


@pytest.mark.parametrize("raw", [raw for raw, _ in SIDECAR_COOKIES] + ['a="quoted; value"; access_token=t'])
@pytest.mark.parametrize("first", ["for_app", "pairs"])
def test_the_pairs_are_aiohttps_request_cookies(raw: str, first: str) -> None:
    shared = cache()
    if first == "for_app":
        shared.for_app(raw)
    assert dict(shared.pairs(request(raw))) == dict(request(raw).cookies)


def test_one_entry_per_header_serves_every_reader_and_the_size_is_bounded() -> None:
    shared = cache(size=3)
    headers = [f"access_token=t{i}; app=a{i}" for i in range(5)]
    for raw in headers:
        pairs = shared.pairs(request(raw))
        assert shared.pairs(request(raw)) is pairs
        assert shared.for_app(raw) == raw.split("; ")[1]
    assert len(shared) == 3
    # The two oldest were dropped: their parse is a new object, the newest are still the same.
    newest = shared.pairs(request(headers[-1]))
    assert shared.pairs(request(headers[-1])) is newest


def test_a_session_is_built_once_per_distinct_header() -> None:
    shared = cache()
    built: list[str] = []

    def build(pairs: object) -> Session:
        built.append("x")
        return Session(access_token="t")

    first = shared.derived(request("access_token=t"), build, NO_SESSION)
    assert shared.derived(request("access_token=t"), build, NO_SESSION) is first
    assert built == ["x"]
    assert shared.derived(request(None), build, NO_SESSION) is NO_SESSION
