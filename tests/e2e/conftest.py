"""Real-browser tests: Debian's Chromium driven by Playwright, against real servers on loopback.

The production shape (``app.example.com`` + ``api.example.com``) on one machine:

    https://app.example.test:P       the demo SPA, served by its own TLS server        ┐ one site:
    https://api.example.test:P       authsidecar on its own TLS listener                ┘ example.test
    https://evil.test:P              a hostile site; the same server also answers as
    https://sibling.example.test:P   a same-site attacker (a compromised sibling subdomain)
    http://127.0.0.1:P               the dev provider, playing Cognito's Hosted UI
    http://127.0.0.1:P               the echo app behind the sidecar

Chromium resolves the names to 127.0.0.1 (``--host-resolver-rules``); every TLS server presents one
certificate from a ``trustme`` CA, which the browser contexts accept (``ignore_https_errors``), and
the pages are still secure contexts, so ``Secure`` cookies behave as in production. The provider and
the sidecar share one fake clock, so a test expires the access token by moving the clock.

One Chromium per package (one event loop for the package: ``loop_scope="package"``), one fresh
browser context (cookie jar) and one fresh stack per test.

Without Chromium the tests are skipped locally, and fail when ``CI`` is set: CI never skips them.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from prometheus_client import CollectorRegistry

from sidecar.app import admin_app_for, create_app
from sidecar.config import Settings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.run import dev_settings
from sidecar.dev.spa import create_spa_app
from sidecar.dev.upstream import UPSTREAM_STATS, UpstreamStats, create_upstream_app
from sidecar.dev.users import DEFAULT_USERS
from sidecar.observability import make_logger
from sidecar.oidc.provider import PROVIDER
from sidecar.server import Sidecar
from tests.conftest import FakeClock
from tests.redis_server import RedisServer

CHROMIUM = Path(os.environ.get("AUTHSIDECAR_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORDS = {u.username: u.password for u in DEFAULT_USERS}

APP_HOST = "app.example.test"
API_HOST = "api.example.test"
EVIL_HOST = "evil.test"
SIBLING_HOST = "sibling.example.test"
COOKIE_DOMAIN = "example.test"
ACCESS_TTL = 300

CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP *.{COOKIE_DOMAIN} 127.0.0.1,MAP {EVIL_HOST} 127.0.0.1",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class Certificates:
    ca: trustme.CA
    cert_chain: Path
    key: Path
    server: trustme.LeafCert

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        return ctx


@dataclass
class Topology:
    provider: DevProvider
    clock: FakeClock
    settings: Settings
    registry: CollectorRegistry
    upstream_stats: UpstreamStats
    app: str  # https://app.example.test:P (origin)
    api: str  # https://api.example.test:P (origin)
    evil: str
    sibling: str
    logs: io.StringIO

    @property
    def app_url(self) -> str:
        return f"{self.app}/"

    def upstream_hits(self, path: str) -> int:
        return self.upstream_stats.by_path[path]


@pytest.fixture(scope="session")
def chromium() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set AUTHSIDECAR_CHROMIUM)"
    if in_ci():
        pytest.fail(f"{reason}: the browser tests must run in CI", pytrace=False)
    pytest.skip(reason)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="package")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 860})
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest_asyncio.fixture(loop_scope="package")
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture(scope="package")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    ca = trustme.CA()
    server = ca.issue_cert(APP_HOST, API_HOST, EVIL_HOST, SIBLING_HOST)
    folder = tmp_path_factory.mktemp("tls")
    chain, key = folder / "server.crt", folder / "server.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    return Certificates(ca=ca, cert_chain=chain, key=key, server=server)


def hostile_app(api: str) -> web.Application:
    """A page with a form aimed at the API (not submitted until a test says so)."""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Win a prize</title></head><body>"
        f"<form id='forge' method='post' action='{api}/api/transfer'>"
        "<input name='amount' value='1000000'><button>Claim</button></form></body></html>"
    )

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application(handler_args={"max_field_size": 65536})
    app.router.add_get("/", index)
    return app


async def serve(exits: AsyncExitStack, app: web.Application, ssl_context: ssl.SSLContext | None) -> int:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    exits.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return int(runner.addresses[0][1])


@pytest_asyncio.fixture(loop_scope="package")
async def topology(certificates: Certificates) -> AsyncIterator[Topology]:
    async with start_topology(certificates) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="package")
async def server_session_topology(
    certificates: Certificates, redis_server: RedisServer
) -> AsyncIterator[Topology]:
    """The same stack with server sessions on a real redis-server, under a key prefix of its own."""
    prefix = f"e2e-{secrets.token_hex(4)}:"
    store = {"backend": "redis", "redis": {"url": redis_server.url, "key_prefix": prefix}}
    async with start_topology(certificates, {"store": store, "sessions": {"mode": "server"}}) as started:
        yield started


@asynccontextmanager
async def start_topology(
    certificates: Certificates, extra: dict[str, Any] | None = None
) -> AsyncIterator[Topology]:
    """Every server of the picture above; ``extra``: more sidecar settings (sections replaced whole)."""
    async with AsyncExitStack() as exits:
        tls = certificates.server_context()
        # Bound now and handed to the sidecar, so no other server here can take the port first.
        api_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        api_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        api_sock.bind(("127.0.0.1", 0))
        exits.callback(api_sock.close)
        api_port = api_sock.getsockname()[1]
        api = f"https://{API_HOST}:{api_port}"
        app_port = await serve(exits, create_spa_app(sidecar_base=api), tls)
        app = f"https://{APP_HOST}:{app_port}"
        hostile_port = await serve(exits, hostile_app(api), tls)

        clock = FakeClock.from_wall_clock()
        provider = DevProvider(
            ProviderConfig(
                redirect_uris=(f"{api}/auth/callback",),
                logout_uris=(f"{app}/",),
                access_ttl=ACCESS_TTL,
                rotate_refresh_tokens=True,
            ),
            clock,
        )
        provider_runner, issuer = await start_provider(provider)
        exits.push_async_callback(provider_runner.cleanup)

        upstream_app = create_upstream_app()
        upstream_url = f"http://127.0.0.1:{await serve(exits, upstream_app, None)}"

        settings = dev_settings(
            issuer=issuer, upstream_url=upstream_url, host="127.0.0.1", port=api_port, admin_port=0,
            public_host=API_HOST,
            overrides={
                "listen": {"tls_cert": str(certificates.cert_chain), "tls_key": str(certificates.key)},
                "callback_url": f"{api}/auth/callback",
                "app_url": f"{app}/",
                "allowed_return_origins": [app],
                # Token cookies host-only on the API host; only the CSRF cookie is shared with the
                # SPA's host, whose JavaScript must read it.
                "cookies": {"secure": True, "same_site": "lax"},
                "csrf": {"cookie_domain": COOKIE_DOMAIN},
                "cors": {"allowed_origins": [app]},
                "logging": {"level": "info", "format": "json"},
                **(extra or {}),
            },
        )
        registry = CollectorRegistry()
        logs = io.StringIO()
        log = make_logger(settings.logging.level, settings.logging.format, logs)
        sidecar_app = create_app(settings, clock=clock, registry=registry, log=log)
        sidecar = Sidecar(sidecar_app, admin_app_for(sidecar_app), settings, sock=api_sock)
        exits.push_async_callback(sidecar.stop)
        await sidecar.start()
        await sidecar_app[PROVIDER].connected.wait()
        yield Topology(
            provider=provider, clock=clock, settings=settings, registry=registry,
            upstream_stats=upstream_app[UPSTREAM_STATS], app=app, api=api,
            evil=f"https://{EVIL_HOST}:{hostile_port}", sibling=f"https://{SIBLING_HOST}:{hostile_port}",
            logs=logs,
        )


# -- what the tests do in the browser -------------------------------------------------------------


async def sign_in_at_provider(page: Page, issuer: str, user: str) -> None:
    """Fill in the Hosted UI's form (the page is on its way there)."""
    await page.wait_for_url(f"{issuer}/**")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORDS[user])
    await page.click("button[value=signin]")


async def log_in(page: Page, topology: Topology, user: str = "alice") -> None:
    """Open the SPA, press its login button, sign in at the provider, land back signed in."""
    await page.goto(topology.app_url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
    await page.click("#login")
    await sign_in_at_provider(page, topology.provider.issuer, user)
    await page.wait_for_url(topology.app_url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "signed-in")


async def call_api(page: Page, button: str) -> dict[str, Any]:
    """Press one of the SPA's API buttons; the echo the page shows, as JSON."""
    await page.click(button)
    await expect(page.locator("#api-status")).to_have_attribute("data-state", "done")
    echo: dict[str, Any] = json.loads(await page.locator("#api-json").text_content() or "{}")
    return echo


async def jar(context: BrowserContext) -> dict[str, dict[str, Any]]:
    """The browser's cookies by name."""
    return {cookie["name"]: dict(cookie) for cookie in await context.cookies()}


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
