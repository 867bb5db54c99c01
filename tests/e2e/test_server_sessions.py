"""Server sessions in a real Chromium: the user in 150 groups behind an API Gateway-sized head limit.

The SPA on https://app.example.test calls the sidecar on https://api.example.test (conftest.py);
with ``sessions.mode: server`` on a real redis-server the browser holds one opaque session id.
What the browser sends is read from Chromium's own record of the request (raw header lines,
``Cookie`` included), not reconstructed.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import aiohttp
import pytest
import redis
from playwright.async_api import BrowserContext, Page, Request, expect

from tests.e2e.conftest import API_HOST, Certificates, Topology, call_api, jar, log_in

pytestmark = pytest.mark.asyncio(loop_scope="package")

# API Gateway (HTTP and REST APIs) refuses more than this many bytes of request line plus headers.
API_GATEWAY_HEAD_LIMIT = 10_240
SESSION_COOKIE = "authsidecar_session"


def record_api_requests(page: Page, api: str) -> list[Request]:
    """Every request the page sends to the sidecar's /api/ paths, in order."""
    seen: list[Request] = []

    def on_request(request: Request) -> None:
        if request.url.startswith(f"{api}/api/") and request.method != "OPTIONS":
            seen.append(request)

    page.on("request", on_request)
    return seen


async def head_bytes(request: Request) -> tuple[int, dict[str, str]]:
    """Bytes of the HTTP/1.1 request line and header lines as Chromium sent them, and the headers."""
    lines = await request.headers_array()
    parts = urlsplit(request.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    size = len(f"{request.method} {target} HTTP/1.1\r\n") + 2  # the blank line ending the head
    size += sum(len(h["name"]) + 2 + len(h["value"]) + 2 for h in lines)
    return size, {h["name"].lower(): h["value"] for h in lines}


def session_keys(topology: Topology) -> list[bytes]:
    store = topology.settings.store.redis
    assert store is not None
    with redis.Redis.from_url(store.url) as client:
        return list(client.scan_iter(f"{store.key_prefix}session:*"))


async def replay(topology: Topology, certificates: Certificates, session_id: str) -> aiohttp.ClientResponse:
    """An API call from somewhere else carrying nothing but a copied session cookie."""
    trust = ssl.create_default_context()
    certificates.ca.configure_trust(trust)
    port = urlsplit(topology.api).port
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as thief:
        answer = await thief.get(
            f"https://127.0.0.1:{port}/api/items", ssl=trust, server_hostname=API_HOST,
            headers={"Host": f"{API_HOST}:{port}", "Cookie": f"{SESSION_COOKIE}={session_id}",
                     "Accept": "application/json"},
        )
        await answer.read()
        return answer


async def test_the_many_groups_user_sends_small_heads_gets_their_identity_and_logout_ends_the_session(
    page: Page, context: BrowserContext, server_session_topology: Topology, certificates: Certificates,
) -> None:
    topology = server_session_topology
    sent = record_api_requests(page, topology.api)
    await log_in(page, topology, "many-groups")
    await expect(page.locator("#groups-count")).to_have_text("150")

    echo = await call_api(page, "#call-get")

    # The app behind the sidecar receives the whole identity.
    assert echo["identity"]["X-User-Name"] == "many-groups"
    assert len(echo["identity"]["X-User-Groups"].split(",")) == 150
    assert SESSION_COOKIE not in echo["headers"].get("Cookie", "")
    # What the browser sent to the API fits API Gateway's limit, session cookie and all.
    assert sent
    for request in sent:
        size, headers = await head_bytes(request)
        assert f"{SESSION_COOKIE}=" in headers["cookie"]
        assert size < API_GATEWAY_HEAD_LIMIT, f"{request.url}: {size} bytes"
    cookies = await jar(context)
    tokens = ("access_token", "id_token", "refresh_token")
    assert not [name for name in cookies if name.split(".")[0] in tokens]
    copied = cookies[SESSION_COOKIE]["value"]
    assert len(session_keys(topology)) == 1
    # A copy of the cookie works while the session lives ...
    assert (await replay(topology, certificates, copied)).status == 200

    await page.click("#logout")
    await page.wait_for_url(topology.app_url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")

    # ... and logout removed the session: from Redis, from the browser, and for the copy.
    assert session_keys(topology) == []
    assert SESSION_COOKIE not in await jar(context)
    assert (await replay(topology, certificates, copied)).status == 401


async def test_in_token_cookie_mode_the_same_user_would_exceed_the_limit(
    page: Page, topology: Topology,
) -> None:
    # Why server sessions exist: the same browser, the same API call, tokens in cookies.
    sent = record_api_requests(page, topology.api)
    await log_in(page, topology, "many-groups")
    await call_api(page, "#call-get")
    assert sent
    size, headers = await head_bytes(sent[-1])
    assert "id_token.0=" in headers["cookie"]
    assert size > API_GATEWAY_HEAD_LIMIT
