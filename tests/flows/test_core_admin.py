"""Operability: the admin listener, requests the HTTP parser refuses, and what reaches the logs."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.app import admin_app_for, create_app
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.run import dev_settings
from sidecar.dev.upstream import create_upstream_app
from sidecar.observability import make_logger
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.provider import PROVIDER, ProviderLink
from sidecar.server import Sidecar
from tests.conftest import FakeClock
from tests.flows.conftest import Stack, raw_exchange

AUTHSIDECAR_METRICS = (
    "authsidecar_requests_total",
    "authsidecar_requests_in_flight",
    "authsidecar_auth_decisions_total",
    "authsidecar_token_validation_seconds",
    "authsidecar_jwks_refreshes_total",
    "authsidecar_jwks_keys",
    "authsidecar_upstream_request_seconds",
    "authsidecar_build_info",
)


# -- the admin listener --------------------------------------------------------------------------------


async def test_healthz_and_readyz_answer_200_once_the_keys_are_loaded(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    async with client.get(stack.admin + "/healthz") as health:
        assert health.status == 200
        assert await health.json() == {"status": "ok"}
    async with client.get(stack.admin + "/readyz") as ready:
        assert ready.status == 200
        assert await ready.json() == {"status": "ready"}


async def test_metrics_serve_prometheus_text_with_the_sidecars_metrics(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    token = stack.provider.mint_access_token("alice")
    async with client.get(stack.url("/api"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200

    async with client.get(stack.admin + "/metrics") as metrics:
        assert metrics.status == 200
        assert metrics.headers["Content-Type"].startswith("text/plain")
        text = await metrics.text()

    for name in AUTHSIDECAR_METRICS:
        assert re.search(rf"^{name}(_bucket|_count|_sum)?(\{{|\s)", text, re.MULTILINE), name
    assert 'authsidecar_auth_decisions_total{outcome="ok"} 1.0' in text
    assert 'authsidecar_requests_total{code="200",route="proxy"} 1.0' in text
    assert "authsidecar_jwks_keys 1.0" in text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_admin_routes_are_not_served_on_the_proxied_port(
    stack: Stack, client: aiohttp.ClientSession, path: str
) -> None:
    async with client.get(stack.url(path)) as anonymous:
        assert anonymous.status == 401

    token = stack.provider.mint_access_token("bob")
    async with client.get(stack.url(path), headers={"Authorization": f"Bearer {token}"}) as proxied:
        assert proxied.status == 200
        assert (await proxied.json())["path"] == path  # the app's answer, not the sidecar's


async def test_the_admin_listener_serves_nothing_but_its_own_routes(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    token = stack.provider.mint_access_token("bob")
    for path in ("/api/items", "/auth/login", "/auth/me"):
        async with client.get(stack.admin + path, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 404
    assert stack.upstream_stats.total == 0


@dataclass
class ColdStart:
    """A sidecar started while the provider's JWKS endpoint fails."""

    provider: DevProvider
    link: ProviderLink
    clock: FakeClock
    base: str
    admin: str

    @property
    def jwks(self) -> JwksCache:
        provider = self.link.current
        assert provider is not None
        return provider.keys


@pytest.fixture
async def cold_start() -> AsyncIterator[ColdStart]:
    async with AsyncExitStack() as exits:
        clock = FakeClock.from_wall_clock()
        provider = DevProvider(ProviderConfig(), clock)
        provider_runner, issuer = await start_provider(provider)
        exits.push_async_callback(provider_runner.cleanup)
        provider.set_failure("jwks", "500")

        upstream = web.AppRunner(create_upstream_app(), access_log=None)
        await upstream.setup()
        exits.push_async_callback(upstream.cleanup)
        await web.TCPSite(upstream, "127.0.0.1", 0).start()

        settings = dev_settings(issuer=issuer, upstream_url=f"http://127.0.0.1:{upstream.addresses[0][1]}",
                                host="127.0.0.1", port=0, admin_port=0, public_host="127.0.0.1")
        app = create_app(settings, clock=clock, registry=CollectorRegistry(),
                         log=make_logger("debug", "json", io.StringIO()))
        link = app[PROVIDER]
        sidecar = Sidecar(app, admin_app_for(app), settings)
        await sidecar.start()
        exits.push_async_callback(sidecar.stop)
        await link.connected.wait()
        yield ColdStart(provider, link, clock, f"http://127.0.0.1:{sidecar.port}",
                        f"http://127.0.0.1:{sidecar.admin_port}")


async def test_readyz_is_503_until_the_signing_keys_load_and_200_after(
    cold_start: ColdStart, client: aiohttp.ClientSession
) -> None:
    async with client.get(cold_start.admin + "/readyz") as ready:
        assert ready.status == 503
        assert await ready.json() == {"status": "not_ready", "reason": "keys_not_loaded"}
    async with client.get(cold_start.admin + "/healthz") as health:
        assert health.status == 200

    cold_start.provider.set_failure("jwks", "ok")
    assert await cold_start.jwks.refresh() is True

    async with client.get(cold_start.admin + "/readyz") as ready:
        assert ready.status == 200


async def test_a_request_before_the_signing_keys_load_gets_503_not_a_login_loop(
    cold_start: ColdStart, client: aiohttp.ClientSession
) -> None:
    token = cold_start.provider.mint_access_token("alice")
    headers = {"Authorization": f"Bearer {token}"}

    async with client.get(cold_start.base + "/api", headers=headers) as resp:
        assert resp.status == 503
        assert await resp.json() == {"error": "provider_unavailable", "reason": "not_ready"}
    async with client.get(cold_start.base + "/page", headers={"Cookie": f"access_token={token}",
                                                               "Sec-Fetch-Mode": "navigate"},
                          allow_redirects=False) as page:
        assert page.status == 503

    cold_start.provider.set_failure("jwks", "ok")
    assert await cold_start.jwks.refresh() is True
    async with client.get(cold_start.base + "/api", headers=headers) as resp:
        assert resp.status == 200


# -- requests the HTTP parser refuses --------------------------------------------------------------------


def token_pieces(token: str) -> list[str]:
    """Substrings that would betray the token if they showed up anywhere."""
    head, payload, signature = token.split(".")
    return [head, payload[:24], payload[-24:], signature[:24], signature[-24:]]


def malformed(token: str) -> list[bytes]:
    mid = len(token) // 2
    broken = f"{token[:mid]}\x01{token[mid:]}"
    head = "GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    return [
        f"{head}Cookie: theme=dark; access_token={broken}\r\n\r\n".encode(),
        f"{head}Authorization: Bearer {token[:mid]}\x00{token[mid:]}\r\n\r\n".encode(),
        f"{head}Cookie: access_token={token}\x7f\r\n\r\n".encode(),
        f"{head}Cookie: access_token={token}{'a' * 70_000}\r\n\r\n".encode(),
        f"GET /api?t={broken} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        f"{head}X-Debug\x01{token}: 1\r\n\r\n".encode(),
    ]


MALFORMED_IDS = ["control-char-in-cookie", "nul-in-authorization", "del-after-cookie", "over-long-cookie",
                 "control-char-in-target", "control-char-in-header-name"]


@pytest.mark.parametrize("case", range(len(MALFORMED_IDS)), ids=MALFORMED_IDS)
async def test_a_request_the_parser_refuses_gets_400_without_echoing_or_logging_the_token(
    stack: Stack, caplog: pytest.LogCaptureFixture, case: int
) -> None:
    token = stack.provider.mint_access_token("alice")
    caplog.set_level(logging.DEBUG, logger="authsidecar.server")
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")

    answer = await raw_exchange(stack, malformed(token)[case])

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split(b" ")[1] == b"400", status_line
    body = rest.partition(b"\r\n\r\n")[2]
    assert body == b'{"error": "bad_request", "reason": "400 Bad Request"}\n'
    records = [r for r in caplog.records if r.name in ("authsidecar.server", "aiohttp.server")]
    assert records, "the refusal is logged"
    logged = caplog.text + stack.logs.getvalue()
    for piece in token_pieces(token):
        assert piece.encode() not in answer
        assert piece not in logged
    assert "eyJ" not in logged
    assert stack.upstream_stats.total == 0


async def test_the_sidecar_serves_normally_after_refusing_a_malformed_request(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    token = stack.provider.mint_access_token("alice")
    await raw_exchange(stack, malformed(token)[0])

    async with client.get(stack.url("/api"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200


# -- what the logs hold after a whole flow ------------------------------------------------------------------


async def test_the_logs_of_a_whole_flow_hold_no_token_code_or_xsrf_value(
    stack: Stack, client: aiohttp.ClientSession
) -> None:
    browser = await stack.browser()
    callback = await stack.login(browser, "alice", return_to="/dashboard")
    assert callback.status == 302
    code = parse_qs(callback.url.query_string)["code"][0]
    state = parse_qs(callback.url.query_string)["state"][0]
    access = stack.cookie(browser, "access_token")
    id_token = stack.cookie(browser, "id_token")
    xsrf = stack.cookie(browser, "XSRF-TOKEN")
    refresh = next((m.value for m in browser.cookie_jar if m.key == "refresh_token"), None)
    assert access
    assert id_token
    assert xsrf
    assert refresh

    async with browser.get(stack.url("/api/items")) as resp:
        assert resp.status == 200
    async with browser.get(stack.url("/auth/me")) as resp:
        assert resp.status == 200
    async with browser.post(stack.url("/api/items"), data=b"{}") as resp:  # no XSRF header
        assert resp.status == 403
    async with browser.post(stack.url("/api/items"), data=b"{}",
                            headers={"X-XSRF-TOKEN": xsrf, "Origin": stack.base}) as resp:
        assert resp.status == 200
    async with client.get(stack.url("/api/items"), headers={"Authorization": f"Bearer {access}x"}) as resp:
        assert resp.status == 401
    async with client.get(stack.url("/api/items"), headers={"Cookie": f"access_token={id_token}"}) as resp:
        assert resp.status == 401
    stack.clock.advance(3600 + 120)  # the access token expires: the next /auth/ request refreshes it
    async with browser.post(stack.url("/auth/refresh"),
                            headers={"X-XSRF-TOKEN": xsrf, "Origin": stack.base}) as resp:
        assert resp.status < 500
    async with browser.get(stack.url("/auth/logout"), allow_redirects=False) as resp:
        assert resp.status < 500

    logs = stack.logs.getvalue()
    assert stack.log_lines(), "the flow was logged"
    for secret in (access, id_token, refresh, code, state, xsrf):
        assert secret not in logs
    for token in (access, id_token):
        for piece in token_pieces(token):
            assert piece not in logs
