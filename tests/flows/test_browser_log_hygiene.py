"""The whole browser flow at debug level, then a search of every log line for secret bytes."""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import pytest

from tests.flows.browser_support import (
    csrf_headers,
    finish,
    login_as,
    new_browser,
    plant_cookie,
    query_of,
    revoke_at_provider,
    set_cookies,
    sign_in,
    start_login,
    transaction,
)
from tests.flows.conftest import Stack, StackFactory
from tests.flows.hostile import request_bytes, send, server_errors


class Secrets:
    """Every secret value the flow hands out, collected as the browser sees (or could decrypt) them."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, label: str, value: str | None) -> None:
        if value and len(value) >= 16:
            self.values[f"{label}#{len(self.values)}"] = value

    def from_response(self, answer: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
        for cookie in set_cookies(answer):
            self.add(f"cookie {cookie.name}", cookie.value)
        return answer


async def _whole_flow(stack: Stack, found: Secrets) -> None:
    browser = await new_browser(stack)
    provider_pages = await stack.browser()

    # Login: state, nonce, verifier (inside the encrypted transaction), code, every cookie.
    begun = found.from_response(await browser.get(stack.url("/auth/login"), params={"return_to": "/a"},
                                                  allow_redirects=False))
    authorize = begun.headers["Location"]
    for name in ("state", "nonce", "code_challenge"):
        found.add(name, query_of(authorize)[name])
    tx_cookie = stack.cookie(browser, "authsidecar_tx")
    assert tx_cookie is not None
    for entry in transaction(stack, tx_cookie)["tx"].values():
        found.add("verifier", entry["verifier"])
    callback = await sign_in(stack, provider_pages, authorize)
    found.add("code", query_of(callback)["code"])
    assert found.from_response(await finish(browser, callback)).status == 302

    # Replays and forgeries, which log rejections.
    assert (await finish(browser, callback)).status == 400
    assert (await browser.post(stack.url("/api/items"), headers={"Origin": stack.base})).status == 403
    forged = f"{stack.cookie(browser, 'XSRF-TOKEN')}x"
    assert (await browser.post(stack.url("/api/items"), headers={"X-XSRF-TOKEN": forged})).status == 403

    # Using the session: /auth/me, proxied requests, an unsafe one with CSRF, an explicit refresh.
    assert (await browser.get(stack.url("/auth/me"))).status == 200
    assert (await browser.get(stack.url("/api/items"))).status == 200
    assert (await browser.post(stack.url("/api/items"), headers=csrf_headers(stack, browser))).status == 200
    refreshed = await browser.post(stack.url("/auth/refresh"), headers=csrf_headers(stack, browser))
    assert found.from_response(refreshed).status == 200

    # A chunked session; a transparent refresh once the access tokens expired, one the provider refuses.
    big = await new_browser(stack)
    big_login = await login_as(stack, big, "many-groups", at_provider=provider_pages)
    assert found.from_response(big_login).status == 302
    big_refresh_token = stack.cookie(big, "refresh_token")
    assert big_refresh_token is not None
    await revoke_at_provider(stack, big_refresh_token)
    stack.clock.advance(3720)
    assert found.from_response(await browser.get(stack.url("/api/items"))).status == 200
    assert (await big.get(stack.url("/api/items"))).status == 401

    # A code exchange the provider fails.
    failing = await new_browser(stack)
    failing_callback = await sign_in(stack, provider_pages, await start_login(stack, failing, prompt="login"))
    found.add("code", query_of(failing_callback)["code"])
    stack.provider.set_failure("token", "500")
    assert (await finish(failing, failing_callback)).status == 502
    stack.provider.set_failure("token", "ok")

    # A tampered transaction cookie.
    plant_cookie(stack, failing, "authsidecar_tx", tx_cookie[:-3] + "abc")
    assert (await finish(failing, callback)).status == 400

    # Logout, with the revocation failing, and a refused refresh afterwards.
    stack.provider.set_failure("revoke", "500")
    logout = await browser.get(stack.url("/auth/logout"), allow_redirects=False)
    assert found.from_response(logout).status == 302
    stack.provider.set_failure("revoke", "ok")
    assert (await big.get(stack.url("/auth/logout"), allow_redirects=False)).status == 302


async def test_no_token_code_verifier_or_cookie_value_ever_reaches_a_log_line(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_stack(cookies={"refresh_token_path": "/"},
                             provider_config={"rotate_refresh_tokens": True})
    assert stack.settings.logging.level == "debug"
    found = Secrets()
    caplog.set_level(logging.DEBUG)

    await _whole_flow(stack, found)

    logs = stack.logs.getvalue()
    events = {line["event"] for line in stack.log_lines()}
    # The flow was logged, at length: the search below looks at something.
    assert {"login_started", "login", "code_exchange_failed", "refresh_refused", "revoke_failed", "logout",
            "request"} <= events
    assert len(found.values) > 20
    # Standard-library logging too (aiohttp, aiohttp-session, aiocache), except the dev provider's
    # own access log: the provider is another party, and its authorize URL carries state and nonce.
    # The sidecar keeps no aiohttp access log (it would print the callback's code).
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert not [line for line in access if re.search(r'"[A-Z]+ /(auth|api)/', line)]
    library = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    leaked = [label for label, value in found.values.items() if value in logs or value in library]
    assert leaked == []
    assert "eyJ" not in logs


async def test_a_cookie_header_the_http_parser_refuses_is_not_echoed_or_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = stack.provider.mint_access_token("alice")
    host, port = stack.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /api/items HTTP/1.1\r\nHost: {host}\r\nCookie: access_token={token}\x01x\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()

    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    assert token.encode() not in answer
    assert token not in caplog.text
    assert token not in stack.logs.getvalue()


async def test_session_tokens_spliced_with_bytes_that_are_not_utf8_reach_no_log_line(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = await new_browser(stack)
    assert (await login_as(stack, browser, "alice")).status == 302
    tokens = {name: stack.cookie(browser, name) for name in ("access_token", "id_token", "refresh_token")}
    values = [v.encode() for v in tokens.values() if v]
    assert len(values) == 3
    access, id_token, refresh = values

    for junk in (b"\xff\xfe", b"\xe9", b"\xed\xa0\x80", b"\xc0\xaf"):
        cookie = (b"access_token=" + access + junk + b"; id_token=" + junk + id_token
                  + b"; refresh_token=" + refresh[:10] + junk + refresh[10:])
        for method, target, extra in (
            (b"GET", b"/api/items", []), (b"GET", b"/auth/me", []),
            (b"GET", b"/api/items", [(b"Authorization", b"Bearer " + access + junk)]),
            (b"POST", b"/auth/refresh", [(b"X-XSRF-TOKEN", junk + access)]),
            (b"POST", b"/auth/logout", [(b"Origin", stack.base.encode() + junk)]),
        ):
            answer = await send(stack, request_bytes(method, target, [(b"Cookie", cookie), *extra]))
            assert 0 < answer.status < 500, (target, answer.body[:200])

    logs = stack.logs.getvalue()
    library = "\n".join(r.getMessage() for r in caplog.records)
    # The tail of each (a signature: unique to it); the shared JWT header prefix is the "eyJ" below.
    tails = [v[-24:].decode() for v in values]
    leaked = [tail for tail in tails if tail in logs or tail in library]
    assert leaked == []
    assert "eyJ" not in logs
    assert server_errors(stack) == []
