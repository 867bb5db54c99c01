"""The edge of both listeners: every error in the JSON shape, a Server header without versions, and
log lines that are all JSON, aiohttp's and aiohttp-session's included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from sidecar.server import SERVER
from tests.flows.conftest import Stack, StackFactory, raw_exchange


def json_lines(stack: Stack) -> list[dict[str, Any]]:
    """Every line of the sidecar's log stream, each parsed as JSON (a plain-text line fails here)."""
    return [json.loads(line) for line in stack.logs.getvalue().splitlines()]


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "body", "allow"),
    [
        pytest.param("GET", "/auth/nothing-here", 404, {"error": "not_found", "reason": "not_found"}, None,
                     id="unknown-auth-path"),
        pytest.param("POST", "/auth/login/extra", 404, {"error": "not_found", "reason": "not_found"}, None,
                     id="below-an-auth-route"),
        pytest.param("GET", "/auth/refresh", 405,
                     {"error": "method_not_allowed", "reason": "method_not_allowed"}, {"POST"},
                     id="refresh-is-post-only"),
        pytest.param("DELETE", "/auth/logout", 405,
                     {"error": "method_not_allowed", "reason": "method_not_allowed"}, {"GET", "POST"},
                     id="logout-get-or-post"),
    ],
)
async def test_auth_namespace_errors_answer_in_the_json_shape(
    stack: Stack, method: str, path: str, status: int, body: dict[str, str], allow: set[str] | None
) -> None:
    browser = await stack.browser()
    answer = await browser.request(method, stack.url(path), allow_redirects=False)
    assert answer.status == status
    assert answer.content_type == "application/json"
    assert await answer.json() == body
    assert answer.headers["Cache-Control"] == "no-store"
    if allow is None:
        assert "Allow" not in answer.headers
    else:
        assert {m.strip() for m in answer.headers["Allow"].split(",")} == allow


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
                     id="no-key"),
        pytest.param({"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                      "Sec-WebSocket-Key": "not base64 <script>"}, id="bad-key"),
        pytest.param({"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "12",
                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, id="unknown-version"),
    ],
)
async def test_a_bad_websocket_handshake_is_a_json_400_that_never_reaches_the_app(
    stack: Stack, headers: dict[str, str]
) -> None:
    token = stack.provider.mint_access_token("alice")
    async with aiohttp.ClientSession() as client:
        answer = await client.get(stack.url("/ws"), headers={**headers, "Authorization": f"Bearer {token}"})
        assert answer.status == 400
        assert await answer.json() == {"error": "bad_request", "reason": "websocket_handshake"}
        assert answer.headers["Cache-Control"] == "no-store"
        assert "script" not in await answer.text()
    assert stack.upstream_stats.total == 0


async def test_a_redirect_raised_by_aiohttp_stays_a_redirect(stack: Stack) -> None:
    # Not an error: the mapper leaves HTTPExceptions below 400 alone.
    browser = await stack.browser()
    answer = await browser.get(stack.url("/auth/login"), allow_redirects=False)
    assert answer.status == 302
    assert "Location" in answer.headers


# -- the Server header ------------------------------------------------------------------------------


@pytest.fixture
async def app_with_its_own_server() -> AsyncIterator[str]:
    """An upstream app that names itself in `Server` on one path, and leaves aiohttp's on others."""

    async def named(_request: web.Request) -> web.Response:
        return web.Response(text="named", headers={"Server": "my-app/1.0"})

    async def named_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Server": "my-app/1.0", "Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"x" * 200_000)
        await response.write_eof()
        return response

    async def plain(_request: web.Request) -> web.Response:
        return web.Response(text="plain")

    app = web.Application()
    app.router.add_get("/named", named)
    app.router.add_get("/named-stream", named_stream)
    app.router.add_get("/{tail:.*}", plain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("listener", "path", "server"),
    [
        pytest.param("proxy", "/named", "my-app/1.0", id="app-names-itself"),
        pytest.param("proxy", "/named-stream", "my-app/1.0", id="app-names-itself-streamed"),
        pytest.param("proxy", "/plain", SERVER, id="app-leaves-aiohttps-default"),
        pytest.param("proxy", "/auth/me", SERVER, id="sidecar-json-401"),
        pytest.param("proxy", "/auth/nothing-here", SERVER, id="sidecar-404"),
        pytest.param("proxy", "/auth/login", SERVER, id="sidecar-redirect"),
        pytest.param("admin", "/healthz", SERVER, id="admin-route"),
        pytest.param("admin", "/metrics", SERVER, id="admin-metrics"),
        pytest.param("admin", "/nothing-here", SERVER, id="admin-404"),
    ],
)
async def test_every_response_names_the_server_without_versions_unless_the_app_named_itself(
    make_stack: StackFactory, app_with_its_own_server: str, listener: str, path: str, server: str
) -> None:
    stack = await make_stack(upstream={"url": app_with_its_own_server},
                             public_paths=["/named", "/named-stream", "/plain"])
    base = stack.base if listener == "proxy" else stack.admin
    async with aiohttp.ClientSession() as client:
        answer = await client.get(base + path, allow_redirects=False)
        await answer.read()
    assert answer.headers.getall("Server") == [server]
    assert "aiohttp" not in answer.headers["Server"]


async def test_an_app_behind_aiohttp_defaults_is_named_as_the_sidecar(stack: Stack) -> None:
    # The echo app runs on aiohttp too: its default Server header is indistinguishable from the
    # sidecar's own and is replaced like it.
    token = stack.provider.mint_access_token("alice")
    async with aiohttp.ClientSession() as client:
        answer = await client.get(stack.url("/api/items"), headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200
    assert answer.headers["Server"] == SERVER != SERVER_SOFTWARE


async def test_a_websocket_upgrade_names_the_server(stack: Stack) -> None:
    token = stack.provider.mint_access_token("alice")
    handshake = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as client:
        answer = await client.get(stack.url("/ws"), headers=handshake)
        assert answer.status == 101
        assert answer.headers["Server"] == SERVER
        answer.close()


async def test_the_parser_refusal_names_the_server_and_is_json(stack: Stack) -> None:
    answer = await raw_exchange(stack, b"GET /api HTTP/1.1\r\nHost: x\r\nCookie: a=b\x01c\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].split(b" ")[1] == b"400"
    assert b"Server: " + SERVER.encode() in lines
    assert b"Content-Type: application/json; charset=utf-8" in lines
    assert json.loads(body) == {"error": "bad_request", "reason": "400 Bad Request"}


# -- every log line JSON ----------------------------------------------------------------------------

GARBAGE = "gAAAAABgarbage-transaction-cookie-0123456789abcdef"


async def test_a_garbage_login_transaction_cookie_logs_only_json_lines_without_the_cookie(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        answer = await client.get(stack.url("/auth/callback"), params={"state": "s" * 43, "code": "c" * 20},
                                  headers={"Cookie": f"authsidecar_tx={GARBAGE}"}, allow_redirects=False)
        assert answer.status == 400
    lines = json_lines(stack)
    decrypt = [line for line in lines if line.get("logger") == "aiohttp_session"]
    assert decrypt, "aiohttp-session's line joined the JSON stream"
    assert decrypt[0]["level"] == "warning"
    assert decrypt[0]["event"].startswith("Cannot decrypt cookie value")
    assert "ts" in decrypt[0]
    assert GARBAGE not in stack.logs.getvalue()
    assert "garbage" not in stack.logs.getvalue()
    # Nothing left for logging's plain-text fallback on stderr.
    assert capsys.readouterr().err == ""


async def test_a_request_the_parser_refuses_logs_only_json_lines_without_the_cookie(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "cookie-bytes-that-must-not-show"
    answer = await raw_exchange(
        stack, f"GET /api HTTP/1.1\r\nHost: x\r\nCookie: session={secret}\x01tail\r\n\r\n".encode()
    )
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400"
    lines = json_lines(stack)
    refused = [line for line in lines if line.get("logger") == "authsidecar.server"]
    assert refused == [{"event": "http_parser_rejected", "status": 400, "error": "BadHttpMessage",
                        "logger": "authsidecar.server", "level": "warning", "ts": refused[0]["ts"]}]
    assert secret not in stack.logs.getvalue()
    assert "tail" not in stack.logs.getvalue()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        pytest.param("GET", "/nothing-here", 404, "not_found", id="unknown-path"),
        pytest.param("POST", "/metrics", 405, "method_not_allowed", id="metrics-is-get-only"),
    ],
)
async def test_the_admin_listener_answers_errors_in_the_json_shape_too(
    stack: Stack, client: aiohttp.ClientSession, method: str, path: str, status: int, error: str
) -> None:
    async with client.request(method, stack.admin + path) as answer:
        assert answer.status == status
        assert await answer.json() == {"error": error, "reason": error}
