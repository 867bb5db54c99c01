"""The reverse proxy, seen from the app behind it: what reaches it, what never does, and failures."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import unused_port
from multidict import CIMultiDict

from tests.flows.conftest import Stack, StackFactory

MIB = 1024 * 1024
DECISIONS = "authsidecar_auth_decisions_total"
FILLER = bytes(range(256)) * 256  # what the echo upstream's /stream sends, repeated


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def normal(name: str) -> str:
    return name.lower().replace("_", "-")


def identity_like(header_list: list[list[str]]) -> list[tuple[str, str]]:
    """Every header the app got that looks like an identity header, in any spelling."""
    prefixes = ("x-user-", "x-auth-request-", "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
                "x-tenant", "x-origin-jti")
    return sorted((normal(n), v) for n, v in header_list if normal(n).startswith(prefixes))


async def echo(client: aiohttp.ClientSession, url: str, headers: Any = None, **kw: Any) -> dict[str, Any]:
    async with client.get(url, headers=headers, **kw) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


SPOOFED = [
    ("X-User-Id", "mallory"),
    ("x-user-id", "mallory"),
    ("X_User_Id", "mallory"),
    ("X-User-Email", "mallory@evil.example"),
    ("X-User-Groups", "admins"),
    ("X-User-Name", "mallory"),
    ("X-User-Anything-Else", "mallory"),
    ("X-Auth-Request-Email", "mallory@evil.example"),
    ("X_Auth_Request_User", "mallory"),
    ("X-Forwarded-User", "mallory"),
    ("X-Forwarded-Email", "mallory@evil.example"),
    ("X-Tenant", "evil-corp"),  # configured under identity_headers.strip
    ("X_Tenant", "evil-corp"),
    ("X-Origin-Jti", "forged"),  # configured as a claim header
    ("x_origin_jti", "forged"),
]
EXTRA_HEADERS = {"strip": ["X-Tenant"], "claims": {"origin_jti": "X-Origin-Jti"}}


# -- identity headers ----------------------------------------------------------------------------------


async def test_spoofed_identity_headers_never_reach_the_app_only_the_sidecars_own(
    make_stack: StackFactory, client: aiohttp.ClientSession
) -> None:
    stack = await make_stack(identity_headers=EXTRA_HEADERS)
    token = stack.provider.mint_access_token("bob")
    bob = stack.provider.user("bob")
    assert bob is not None

    got = await echo(client, stack.url("/api/me"), CIMultiDict([*SPOOFED, *bearer(token).items()]))

    jti = got["headers"]["X-Origin-Jti"]
    assert jti not in ("forged", "")
    assert identity_like(got["header_list"]) == sorted([
        ("x-user-id", bob.sub),
        ("x-user-groups", "users"),
        ("x-user-name", "bob"),
        ("x-origin-jti", jti),
    ])
    assert "mallory" not in str(got["header_list"])
    assert "evil" not in str(got["header_list"])


async def test_spoofed_identity_headers_are_stripped_on_public_paths_too(
    make_stack: StackFactory, client: aiohttp.ClientSession
) -> None:
    stack = await make_stack(identity_headers=EXTRA_HEADERS, public_paths=["/public/**"])

    got = await echo(client, stack.url("/public/page"), CIMultiDict(SPOOFED))

    assert identity_like(got["header_list"]) == []


async def test_a_cookie_session_sends_the_full_identity_including_the_email_of_the_id_token(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    access = stack.provider.mint_access_token("alice")
    id_token = stack.provider.mint_id_token("alice")
    alice = stack.provider.user("alice")
    assert alice is not None

    got = await echo(client, stack.url("/api/me"), {"Cookie": f"access_token={access}; id_token={id_token}"})

    assert got["identity"] == {
        "X-User-Id": alice.sub,
        "X-User-Email": "alice@example.com",
        "X-User-Groups": "admins,users",
        "X-User-Name": "alice",
    }


async def test_an_id_token_of_another_user_does_not_lend_its_email(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    access = stack.provider.mint_access_token("bob")
    foreign = stack.provider.mint_id_token("alice")

    got = await echo(client, stack.url("/api/me"), {"Cookie": f"access_token={access}; id_token={foreign}"})

    assert "X-User-Email" not in got["identity"]
    assert got["identity"]["X-User-Name"] == "bob"


async def test_a_user_without_groups_gets_no_groups_header(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    got = await echo(client, stack.url("/x"), bearer(stack.provider.mint_access_token("carol")))

    assert "X-User-Groups" not in got["identity"]
    assert got["identity"]["X-User-Name"] == "carol"


@pytest.mark.parametrize(
    ("username", "forwarded"),
    [
        pytest.param("bob\r\nX-Injected: 1", "bobX-Injected: 1", id="crlf"),
        pytest.param("a\x00b", "ab", id="nul"),
        pytest.param("zoë", "zoë", id="non-ascii"),
    ],
)
async def test_a_claim_value_cannot_add_a_header_of_its_own(
    stack: Stack, client: aiohttp.ClientSession, username: str, forwarded: str
) -> None:
    token = stack.provider.mint_access_token("bob", username=username)

    got = await echo(client, stack.url("/x"), bearer(token))

    assert got["identity"]["X-User-Name"] == forwarded
    assert "X-Injected" not in got["headers"]


# -- cookies and credentials -------------------------------------------------------------------------


async def test_the_sidecars_cookies_are_removed_from_the_cookie_header_and_the_apps_own_pass(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    access = stack.provider.mint_access_token("alice")
    cookie = "; ".join([
        "theme=dark", f"access_token={access}", "id_token=abc", "refresh_token=def", "authsidecar_tx=ghi",
        "access_token.1=jkl", "ID_TOKEN=mno", "__Host-refresh_token=pqr", "XSRF-TOKEN=stu", "app_session=s1",
    ])

    got = await echo(client, stack.url("/api"), {"Cookie": cookie})

    assert got["headers"]["Cookie"] == "theme=dark; app_session=s1"
    assert access not in str(got)


async def test_a_request_with_only_sidecar_cookies_reaches_the_app_without_a_cookie_header(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    cookie = f"access_token={stack.provider.mint_access_token('bob')}"

    got = await echo(client, stack.url("/api"), {"Cookie": cookie})

    assert "Cookie" not in got["headers"]


@pytest.mark.parametrize("via", [pytest.param("bearer", id="bearer"), pytest.param("cookie", id="cookie")])
async def test_the_access_token_is_consumed_by_default_and_forwarded_when_configured(
    make_stack: StackFactory, client: aiohttp.ClientSession, via: str
) -> None:
    plain = await make_stack()
    forwarding = await make_stack(identity_headers={"forward_access_token": True})
    for stack, expect_forwarded in ((plain, False), (forwarding, True)):
        token = stack.provider.mint_access_token("alice")
        headers = bearer(token) if via == "bearer" else {"Cookie": f"access_token={token}"}

        got = await echo(client, stack.url("/api"), headers)

        assert got["headers"].get("Authorization") == (f"Bearer {token}" if expect_forwarded else None)
        assert [n for n, _ in got["header_list"] if n.lower() == "authorization"] == (
            ["Authorization"] if expect_forwarded else []
        )


async def test_a_non_bearer_authorization_passes_through_on_a_public_path(
    make_stack: StackFactory, client: aiohttp.ClientSession
) -> None:
    stack = await make_stack(public_paths=["/webhooks/**"])

    got = await echo(client, stack.url("/webhooks/github"), {"Authorization": "Basic Z2g6c2VjcmV0"})

    assert got["headers"]["Authorization"] == "Basic Z2g6c2VjcmV0"


async def test_forwarding_headers_from_an_untrusted_client_are_replaced_by_the_connection(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    got = await echo(client, stack.url("/api"), {
        **bearer(stack.provider.mint_access_token("bob")),
        "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "X-Real-IP": "203.0.113.9", "Forwarded": "for=203.0.113.9", "X-Original-URL": "/admin",
    })

    headers = got["headers"]
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == stack.base.removeprefix("http://")
    for dropped in ("X-Real-IP", "Forwarded", "X-Original-URL"):
        assert dropped not in headers


async def test_a_cookie_the_app_sets_goes_to_the_client_and_is_not_kept_by_the_proxy(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    headers = bearer(stack.provider.mint_access_token("bob"))
    async with client.get(stack.url("/set-cookie?value=v1"), headers=headers) as resp:
        assert resp.status == 200
        assert "upstream_cookie=v1" in resp.headers["Set-Cookie"]

    got = await echo(client, stack.url("/api"), headers)

    assert "Cookie" not in got["headers"]


async def test_headers_that_could_change_the_method_or_path_the_app_sees_are_dropped(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    got = await echo(client, stack.url("/reports"), {
        **bearer(stack.provider.mint_access_token("bob")),
        "X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE", "X-Method-Override": "DELETE",
        "X-Original-URL": "/admin", "X-Rewrite-URL": "/admin",
    })

    names = {n.lower() for n, _ in got["header_list"]}
    assert names.isdisjoint({"x-http-method-override", "x-http-method", "x-method-override",
                             "x-original-url", "x-rewrite-url"})


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("req-123.abc:9", True, id="printable"),
        pytest.param("has spaces in it", False, id="spaces"),
        pytest.param("x" * 200, False, id="too-long"),
    ],
)
async def test_the_request_id_is_kept_only_when_sane_and_reaches_the_app_and_the_client(
    stack: Stack, client: aiohttp.ClientSession, sent: str, kept: bool
) -> None:
    headers = {**bearer(stack.provider.mint_access_token("bob")), "X-Request-Id": sent}
    async with client.get(stack.url("/x"), headers=headers) as resp:
        echoed = await resp.json()
        rid = resp.headers["X-Request-Id"]

    assert (rid == sent) is kept
    assert [v for n, v in echoed["header_list"] if n.lower() == "x-request-id"] == [rid]
    assert any(line.get("request_id") == rid for line in stack.log_lines())


@pytest.mark.parametrize("code", [404, 500, 503])
async def test_an_error_status_of_the_app_passes_through_unchanged(
    stack: Stack, client: aiohttp.ClientSession, code: int
) -> None:
    async with client.get(stack.url(f"/status/{code}"),
                          headers=bearer(stack.provider.mint_access_token("bob"))) as resp:
        assert resp.status == code
        assert await resp.text() == f"status {code}\n"
    assert stack.metric("authsidecar_upstream_errors_total", kind="refused") == 0


# -- the app failing ---------------------------------------------------------------------------------


async def test_an_unreachable_app_gives_502_a_metric_and_a_log_line_and_the_sidecar_keeps_serving(
    make_stack: StackFactory, client: aiohttp.ClientSession
) -> None:
    stack = await make_stack(upstream={"url": f"http://127.0.0.1:{unused_port()}"})
    headers = bearer(stack.provider.mint_access_token("alice"))

    for attempt in (1, 2):
        async with client.get(stack.url("/api"), headers=headers) as resp:
            assert resp.status == 502
            assert await resp.json() == {"error": "upstream_unavailable", "reason": "refused"}
        assert stack.metric("authsidecar_upstream_errors_total", kind="refused") == attempt

    events = [line for line in stack.log_lines() if line["event"] == "upstream_error"]
    assert [e["kind"] for e in events] == ["refused", "refused"]
    assert stack.metric("authsidecar_requests_total", route="proxy", code="502") == 2
    async with client.get(stack.url("/auth/me"), headers=headers) as me:
        assert me.status < 500
    async with client.get(stack.admin + "/healthz") as health:
        assert health.status == 200


@dataclass
class SlowApp:
    """An app whose /slow answers only when the test says so; /fast answers at once."""

    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def slow(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await self.release.wait()
        return web.Response(text="late")

    async def fast(self, request: web.Request) -> web.Response:
        return web.Response(text="fast")


@pytest.fixture
async def slow_app() -> AsyncIterator[SlowApp]:
    app_state = SlowApp()
    app = web.Application()
    app.router.add_get("/slow", app_state.slow)
    app.router.add_get("/fast", app_state.fast)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    app_state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield app_state
    finally:
        app_state.release.set()
        await runner.cleanup()


async def test_an_app_slower_than_the_read_timeout_gives_504_and_the_sidecar_keeps_serving(
    make_stack: StackFactory, client: aiohttp.ClientSession, slow_app: SlowApp
) -> None:
    stack = await make_stack(upstream={"url": slow_app.url, "read_timeout": 0.5})
    headers = bearer(stack.provider.mint_access_token("alice"))

    async with client.get(stack.url("/slow"), headers=headers) as resp:
        assert resp.status == 504
        assert await resp.json() == {"error": "upstream_unavailable", "reason": "timeout"}
    assert slow_app.arrived.is_set()
    assert stack.metric("authsidecar_upstream_errors_total", kind="timeout") == 1

    async with client.get(stack.url("/fast"), headers=headers) as resp:
        assert resp.status == 200
        assert await resp.text() == "fast"


# -- websockets and streams --------------------------------------------------------------------------


@pytest.mark.parametrize("via", [pytest.param("bearer", id="bearer"), pytest.param("cookie", id="cookie")])
async def test_a_websocket_is_authenticated_at_the_upgrade_and_echoes_through(
    stack: Stack, client: aiohttp.ClientSession, via: str
) -> None:
    token = stack.provider.mint_access_token("alice")
    headers = bearer(token) if via == "bearer" else {"Cookie": f"access_token={token}"}

    async with client.ws_connect(stack.url("/ws"), headers=headers) as ws:
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert await ws.receive_bytes() == b"\x00\x01binary"

    assert stack.upstream_stats.websocket_messages == 2
    assert stack.metric(DECISIONS, outcome="ok") == 1


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        pytest.param(None, True, id="no-origin-non-browser-client"),
        pytest.param("same", True, id="same-origin"),
        pytest.param("https://evil.example", False, id="cross-origin"),
        pytest.param("null", False, id="opaque-origin"),
    ],
)
async def test_a_websocket_authenticated_by_cookie_must_come_from_an_allowed_origin(
    stack: Stack, client: aiohttp.ClientSession, origin: str | None, allowed: bool
) -> None:
    headers = {"Cookie": f"access_token={stack.provider.mint_access_token('alice')}"}
    if origin is not None:
        headers["Origin"] = stack.base if origin == "same" else origin

    if allowed:
        async with client.ws_connect(stack.url("/ws"), headers=headers) as ws:
            await ws.send_str("ping")
            assert await ws.receive_str() == "ping"
    else:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(stack.url("/ws"), headers=headers)
        assert refused.value.status == 403
        assert stack.upstream_stats.total == 0


async def test_a_websocket_authenticated_by_bearer_token_is_not_bound_to_an_origin(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    headers = {**bearer(stack.provider.mint_access_token("alice")), "Origin": "https://tool.example"}

    async with client.ws_connect(stack.url("/ws"), headers=headers) as ws:
        await ws.send_str("ping")
        assert await ws.receive_str() == "ping"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "missing", id="no-token"),
        pytest.param({"Authorization": "Bearer garbage"}, "malformed", id="garbage-token"),
        pytest.param({"Cookie": "access_token=garbage"}, "malformed", id="garbage-cookie"),
    ],
)
async def test_a_websocket_upgrade_without_a_valid_token_is_refused_with_401(
    stack: Stack, client: aiohttp.ClientSession, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(stack.url("/ws"), headers=headers)

    assert refused.value.status == 401
    assert stack.upstream_stats.total == 0
    assert stack.metric(DECISIONS, outcome=reason) == 1


async def test_a_20_mib_download_streams_through_intact(stack: Stack, client: aiohttp.ClientSession) -> None:
    size = 20 * MIB
    digest, received = hashlib.sha256(), 0
    async with client.get(stack.url(f"/stream?size={size}"),
                          headers=bearer(stack.provider.mint_access_token("bob"))) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(size)
        async for chunk in resp.content.iter_chunked(MIB):
            digest.update(chunk)
            received += len(chunk)

    assert received == size
    assert digest.hexdigest() == hashlib.sha256(FILLER * (size // len(FILLER))).hexdigest()


async def test_a_20_mib_chunked_upload_streams_through_intact(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    block = bytes(range(256)) * 256  # 64 KiB
    count = 20 * MIB // len(block)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield block

    async with client.post(stack.url("/upload"), data=body(),
                           headers=bearer(stack.provider.mint_access_token("bob"))) as resp:
        assert resp.status == 200
        answer = await resp.json()

    assert answer == {"bytes": 20 * MIB, "sha256": hashlib.sha256(block * count).hexdigest()}


async def test_an_upload_of_known_length_keeps_its_content_length(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    payload = b"x" * 300_000
    async with client.put(stack.url("/anything"), data=payload,
                          headers=bearer(stack.provider.mint_access_token("bob"))) as resp:
        echoed = await resp.json()

    assert echoed["body_length"] == len(payload)
    assert echoed["headers"]["Content-Length"] == str(len(payload))
    assert echoed["method"] == "PUT"


# -- TLS on the proxied port ---------------------------------------------------------------------------


async def test_the_proxied_port_serves_tls_when_given_a_certificate(
    make_stack: StackFactory, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    stack = await make_stack(listen={"tls_cert": str(cert), "tls_key": str(key)})
    url = stack.base.replace("http://", "https://") + "/api"
    headers = bearer(stack.provider.mint_access_token("bob"))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async with client.get(url, headers=headers, ssl=trusting) as resp:
        assert resp.status == 200
        assert (await resp.json())["headers"]["X-Forwarded-Proto"] == "https"

    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await client.get(url, headers=headers)  # an untrusted certificate is not accepted by default
