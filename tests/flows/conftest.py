"""The whole product on loopback: dev provider + echo upstream + sidecar, one fake clock for all.

``make_stack(**overrides)`` starts the three as real servers on 127.0.0.1 and returns a
:class:`Stack`; ``stack`` is the default one. ``Stack.browser()`` gives an aiohttp client with a
cookie jar that plays the browser; ``Stack.login(browser, user)`` runs the whole login flow.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from yarl import URL

from sidecar.admin import HEALTH, Health
from sidecar.app import admin_app_for, create_app
from sidecar.config import Settings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.run import dev_settings
from sidecar.dev.upstream import UPSTREAM_STATS, UpstreamStats, create_upstream_app
from sidecar.dev.users import DEFAULT_USERS
from sidecar.observability import make_logger
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.provider import PROVIDER, ProviderLink
from sidecar.server import Sidecar
from tests.conftest import FakeClock

# A sign-out URL the test provider knows besides the app's root (for logout.redirect_url).
SIGNED_OUT = "/signed-out"
PASSWORDS = {u.username: u.password for u in DEFAULT_USERS}


@dataclass
class Stack:
    provider: DevProvider
    settings: Settings
    link: ProviderLink
    health: Health
    registry: CollectorRegistry
    clock: FakeClock
    upstream_stats: UpstreamStats
    upstream_url: str
    base: str  # the sidecar's URL, e.g. http://127.0.0.1:PORT
    admin: str  # the admin listener's URL
    logs: io.StringIO
    _exit: AsyncExitStack = field(repr=False)
    sidecar: Sidecar | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def jwks(self) -> JwksCache:
        """The provider's key cache (the link has connected: the fixtures wait for it)."""
        provider = self.link.current
        assert provider is not None
        return provider.keys

    async def browser(self) -> aiohttp.ClientSession:
        """A client with a cookie jar (cookies for 127.0.0.1 accepted, as a browser would)."""
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self._exit.push_async_callback(session.close)
        return session

    async def login(self, browser: aiohttp.ClientSession, user: str = "alice",
                    return_to: str | None = None) -> aiohttp.ClientResponse:
        """Login through the provider's form; returns the callback's (unfollowed) response."""
        params = {"return_to": return_to} if return_to else {}
        start = await browser.get(self.url("/auth/login"), params=params, allow_redirects=False)
        assert start.status == 302, start.status
        form_page = await browser.get(start.headers["Location"])
        assert form_page.status == 200
        action, fields = read_form(await form_page.text())
        fields.update(username=user, password=PASSWORDS[user])
        posted = await browser.post(form_page.url.join(URL(action)), data=fields, allow_redirects=False)
        assert posted.status == 302, await posted.text()
        callback = posted.headers["Location"]
        assert callback.startswith(self.url("/auth/callback"))
        return await browser.get(callback, allow_redirects=False)

    def cookie(self, browser: aiohttp.ClientSession, name: str) -> str | None:
        for morsel in browser.cookie_jar:
            if morsel.key == name:
                return morsel.value
        return None

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines() if line.strip()]


def read_form(page: str) -> tuple[str, dict[str, str]]:
    action = re.search(r'<form[^>]*action="([^"]+)"', page)
    assert action is not None, page[:500]
    fields = {
        unescape(name): unescape(value)
        for name, value in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page)
    }
    return unescape(action.group(1)), fields


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    async with AsyncExitStack() as exits:

        async def start(provider_config: dict[str, Any] | None = None, **overrides: Any) -> Stack:
            clock = FakeClock.from_wall_clock()
            # Bound now and handed to the sidecar: a port merely looked up could be taken by the
            # provider's or the upstream's own bind before the sidecar gets to it.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            exits.callback(sock.close)
            port = sock.getsockname()[1]
            base = f"http://127.0.0.1:{port}"
            config = ProviderConfig(
                redirect_uris=(f"{base}/auth/callback",),
                # The app's page and a public landing page for the post-logout tests.
                logout_uris=(f"{base}/", f"{base}{SIGNED_OUT}"),
                **(provider_config or {}),
            )
            provider = DevProvider(config, clock)
            provider_runner, issuer = await start_provider(provider)
            exits.push_async_callback(provider_runner.cleanup)

            upstream_app = create_upstream_app()
            upstream_runner = web.AppRunner(upstream_app, access_log=None)
            await upstream_runner.setup()
            exits.push_async_callback(upstream_runner.cleanup)
            await web.TCPSite(upstream_runner, "127.0.0.1", 0).start()
            upstream_url = f"http://127.0.0.1:{upstream_runner.addresses[0][1]}"

            overrides.setdefault("logging", {"level": "debug", "format": "json"})
            if "logout" in overrides:
                # The sidecar's own URL is known only now: "{base}" stands for it.
                overrides["logout"] = {k: v.format(base=base) if isinstance(v, str) else v
                                       for k, v in overrides["logout"].items()}
            settings = dev_settings(issuer=issuer, upstream_url=upstream_url, host="127.0.0.1",
                                    port=port, admin_port=0, public_host="127.0.0.1",
                                    overrides=overrides)
            registry = CollectorRegistry()
            logs = io.StringIO()
            log = make_logger(settings.logging.level, settings.logging.format, logs)
            app = create_app(settings, clock=clock, registry=registry, log=log)
            link = app[PROVIDER]
            sidecar = Sidecar(app, admin_app_for(app), settings, sock=sock)
            exits.push_async_callback(sidecar.stop)
            await sidecar.start()
            await link.connected.wait()
            return Stack(
                provider=provider, settings=settings, link=link, health=app[HEALTH], registry=registry,
                clock=clock,
                upstream_stats=upstream_app[UPSTREAM_STATS], upstream_url=upstream_url, base=base,
                admin=f"http://127.0.0.1:{sidecar.admin_port}", logs=logs, _exit=exits, sidecar=sidecar,
            )

        yield start


async def raw_exchange(stack: Stack, data: bytes) -> bytes:
    """``data`` written as is on a new connection to the sidecar; everything it answers."""
    port = int(stack.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def wait_ready(admin: str) -> None:
    """Poll ``admin``/readyz (short attempts, a bounded number) until it answers 200."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        for _ in range(150):
            try:
                async with session.get(admin + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{admin} never became ready")


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps no cookies: every credential is sent explicitly by the test."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


# Sidecar replicas as real processes (tests/flows/fleet_support.py).
from tests.flows.fleet_support import make_fleet  # noqa: E402, F401
