"""CSRF on proxied unsafe requests made with cookies, and CORS for the configured app origin."""

from __future__ import annotations

import secrets

import aiohttp
import pytest

from tests.flows.browser_support import (
    APP_ORIGIN,
    EVIL_ORIGIN,
    csrf_headers,
    new_browser,
    plant_cookie,
)
from tests.flows.conftest import Stack, StackFactory

UNSAFE = ["POST", "PUT", "PATCH", "DELETE"]


async def _logged_in(stack: Stack, user: str = "alice") -> aiohttp.ClientSession:
    browser = await new_browser(stack)
    assert (await stack.login(browser, user)).status == 302
    return browser


def _reached(stack: Stack, path: str) -> int:
    return stack.upstream_stats.by_path[path]


# -- CSRF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", UNSAFE)
async def test_an_unsafe_request_with_the_csrf_token_reaches_the_app(stack: Stack, method: str) -> None:
    browser = await _logged_in(stack)
    answer = await browser.request(method, stack.url("/api/items"), headers=csrf_headers(stack, browser),
                                   json={"a": 1})
    assert answer.status == 200
    echo = await answer.json()
    assert echo["method"] == method
    assert "X-XSRF-TOKEN" in echo["headers"]  # the app may check it again; it is not a secret
    assert _reached(stack, "/api/items") == 1


@pytest.mark.parametrize("method", UNSAFE)
async def test_an_unsafe_request_without_the_csrf_token_is_403_json_and_never_reaches_the_app(
    stack: Stack, method: str
) -> None:
    browser = await _logged_in(stack)
    answer = await browser.request(method, stack.url("/api/items"), headers={"Origin": stack.base})
    assert answer.status == 403
    assert answer.content_type == "application/json"
    assert await answer.json() == {"error": "csrf_failed", "reason": "missing_header"}
    assert _reached(stack, "/api/items") == 0


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_safe_request_needs_no_csrf_token(stack: Stack, method: str) -> None:
    browser = await _logged_in(stack)
    answer = await browser.request(method, stack.url("/api/items"))
    assert answer.status == 200


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("header-differs", "mismatch", id="header-differs-from-cookie"),
        pytest.param("another-users-token", "bad_signature", id="planted-token-of-another-user"),
        pytest.param("random-token", "bad_signature", id="planted-random-token"),
        pytest.param("foreign-origin", "origin", id="valid-token-foreign-origin"),
        pytest.param("foreign-referer", "origin", id="valid-token-foreign-referer"),
        pytest.param("null-origin", "origin", id="valid-token-null-origin"),
    ],
)
async def test_a_forged_or_foreign_unsafe_request_is_refused(stack: Stack, case: str, reason: str) -> None:
    browser = await _logged_in(stack)
    headers = csrf_headers(stack, browser)
    if case == "header-differs":
        headers["X-XSRF-TOKEN"] = f"{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}"
    elif case in ("another-users-token", "random-token"):
        if case == "another-users-token":
            token = stack.cookie(await _logged_in(stack, "bob"), "XSRF-TOKEN")
        else:
            token = f"{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}"
        assert token is not None
        plant_cookie(stack, browser, "XSRF-TOKEN", token)
        headers["X-XSRF-TOKEN"] = token
    elif case == "foreign-origin":
        headers["Origin"] = EVIL_ORIGIN
    elif case == "foreign-referer":
        del headers["Origin"]
        headers["Referer"] = EVIL_ORIGIN + "/form"
    elif case == "null-origin":
        headers["Origin"] = "null"

    answer = await browser.post(stack.url("/api/items"), headers=headers)

    assert answer.status == 403
    assert await answer.json() == {"error": "csrf_failed", "reason": reason}
    assert _reached(stack, "/api/items") == 0
    assert stack.metric("authsidecar_csrf_rejections_total", reason=reason) == 1


async def test_exempt_paths_skip_the_csrf_check(make_stack: StackFactory) -> None:
    stack = await make_stack(csrf={"exempt_paths": ["/webhooks/in", "/hooks/**"]})
    browser = await _logged_in(stack)

    for path in ("/webhooks/in", "/hooks/github/push"):
        answer = await browser.post(stack.url(path), json={})
        assert answer.status == 200, path
    other = await browser.post(stack.url("/webhooks/other"), json={})
    assert other.status == 403


async def test_a_bearer_request_is_exempt_from_csrf(stack: Stack) -> None:
    browser = await _logged_in(stack)
    access_token = stack.cookie(browser, "access_token")
    async with aiohttp.ClientSession() as client:
        answer = await client.post(stack.url("/api/items"), json={},
                                   headers={"Authorization": f"Bearer {access_token}", "Origin": EVIL_ORIGIN})
        assert answer.status == 200
    assert _reached(stack, "/api/items") == 1


# -- CORS ------------------------------------------------------------------------------------------


@pytest.fixture
async def cors_stack(make_stack: StackFactory) -> Stack:
    return await make_stack(cors={"allowed_origins": [APP_ORIGIN]})


def _cors_headers(answer: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.lower().startswith("access-control-")}


def _preflight(origin: str, method: str = "POST",
               headers: str = "content-type, x-xsrf-token") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize("path", ["/api/items", "/auth/refresh", "/auth/logout", "/auth/me"])
async def test_a_preflight_from_the_allowed_origin_is_answered_with_credentials(
    cors_stack: Stack, path: str
) -> None:
    async with aiohttp.ClientSession() as client:
        answer = await client.options(cors_stack.url(path), headers=_preflight(APP_ORIGIN))

    assert answer.status == 204
    headers = answer.headers
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert headers["Access-Control-Allow-Credentials"] == "true"
    allowed_headers = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"x-xsrf-token", "content-type"} <= allowed_headers
    allowed_methods = {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= allowed_methods
    assert headers["Access-Control-Max-Age"] == "600"
    vary = {v.strip() for value in headers.getall("Vary") for v in value.split(",")}
    assert "Origin" in vary
    assert cors_stack.upstream_stats.total == 0


@pytest.mark.parametrize(
    "preflight",
    [
        pytest.param(_preflight(EVIL_ORIGIN), id="foreign-origin"),
        pytest.param(_preflight("null"), id="null-origin"),
        pytest.param(_preflight("http://app.example.test.evil.test"), id="allowed-origin-as-prefix"),
        pytest.param(_preflight("https://app.example.test"), id="allowed-host-other-scheme"),
    ],
)
async def test_a_preflight_from_an_origin_not_allowed_gets_no_cors_headers_at_all(
    cors_stack: Stack, preflight: dict[str, str]
) -> None:
    async with aiohttp.ClientSession() as client:
        answer = await client.options(cors_stack.url("/api/items"), headers=preflight)

    assert answer.status == 403
    assert _cors_headers(answer) == {}
    assert cors_stack.metric("authsidecar_cors_rejections_total") == 1
    assert cors_stack.upstream_stats.total == 0


@pytest.mark.parametrize(
    "preflight",
    [
        pytest.param(_preflight(APP_ORIGIN, method="TRACE"), id="method-not-allowed"),
        pytest.param(_preflight(APP_ORIGIN, headers="x-evil"), id="header-not-allowed"),
        pytest.param(_preflight(APP_ORIGIN, headers="x-xsrf-token, authorization"),
                     id="one-header-not-allowed"),
    ],
)
async def test_a_preflight_asking_for_more_than_allowed_is_refused(
    cors_stack: Stack, preflight: dict[str, str]
) -> None:
    async with aiohttp.ClientSession() as client:
        answer = await client.options(cors_stack.url("/api/items"), headers=preflight)

    # A preflight fails unless its status is 2xx (Fetch §4.8); nothing is granted either.
    assert answer.status == 403
    assert "Access-Control-Allow-Methods" not in answer.headers
    assert "Access-Control-Allow-Headers" not in answer.headers
    assert cors_stack.upstream_stats.total == 0


async def test_an_actual_request_from_the_allowed_origin_gets_the_cors_headers(cors_stack: Stack) -> None:
    browser = await _logged_in(cors_stack)

    for path in ("/api/items", "/auth/me"):
        answer = await browser.get(cors_stack.url(path), headers={"Origin": APP_ORIGIN})
        assert answer.status == 200, path
        assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN, path
        assert answer.headers["Access-Control-Allow-Credentials"] == "true", path
        assert "Origin" in answer.headers.getall("Vary"), path


async def test_an_unsafe_request_from_the_allowed_origin_passes_csrf_and_gets_cors_headers(
    cors_stack: Stack,
) -> None:
    browser = await _logged_in(cors_stack)
    answer = await browser.put(cors_stack.url("/api/items/1"), json={},
                               headers=csrf_headers(cors_stack, browser, origin=APP_ORIGIN))
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


async def test_a_refusal_carries_the_cors_headers_so_the_spa_can_read_it(cors_stack: Stack) -> None:
    async with aiohttp.ClientSession() as client:
        answer = await client.get(cors_stack.url("/api/items"), headers={"Origin": APP_ORIGIN})
    assert answer.status == 401
    assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


async def test_a_streamed_proxied_answer_gets_the_cors_headers(cors_stack: Stack) -> None:
    browser = await _logged_in(cors_stack)
    answer = await browser.get(cors_stack.url("/stream"), params={"size": "200000", "chunk": "4096"},
                               headers={"Origin": APP_ORIGIN})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert len(await answer.read()) == 200_000


async def test_an_actual_request_from_a_foreign_origin_gets_no_cors_headers(cors_stack: Stack) -> None:
    browser = await _logged_in(cors_stack)
    answer = await browser.get(cors_stack.url("/api/items"), headers={"Origin": EVIL_ORIGIN})
    assert _cors_headers(answer) == {}
    assert cors_stack.metric("authsidecar_cors_rejections_total") == 1
