"""``authsidecar dev``: the dev provider, the demo app and the sidecar, wired together on loopback.

The demo app is the echo upstream with the demo SPA in front of it (:mod:`sidecar.dev.spa`): the
sidecar serves ``/`` and ``/static/*`` as public paths, so the SPA loads without a session, shows a
login button, and calls ``/api/...`` through the sidecar, where the echo app answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sidecar.app import admin_app_for, create_app
from sidecar.config import Settings
from sidecar.config_load import parse_settings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.spa import SPA_PUBLIC_PATHS, spa_middleware
from sidecar.dev.upstream import UPSTREAM_STATS, UpstreamStats, create_upstream_app
from sidecar.dev.users import DEFAULT_USERS
from sidecar.server import Sidecar

BANNER = """
  authsidecar dev — FOR DEVELOPMENT ONLY: the provider below has public test users and keys.

  Open            {app}   (the demo SPA: log in, call the API, log out)
  Who am I        {app}auth/me
  Log out         {app}auth/logout
  Provider        {issuer}   (Cognito-shaped dev OpenID provider, loopback only)
  Demo app        {upstream}  (the SPA on / and /static/*; echoes every other request)
  Admin           http://127.0.0.1:{admin_port}/healthz  /readyz  /metrics

  Users:{users}

  Ctrl-C stops all three.
"""


@dataclass
class DevStack:
    provider: DevProvider
    sidecar: Sidecar
    settings: Settings
    issuer: str
    upstream_url: str
    upstream_stats: UpstreamStats | None = None


def dev_settings(*, issuer: str, upstream_url: str, host: str, port: int, admin_port: int,
                 public_host: str = "localhost", overrides: dict[str, Any] | None = None) -> Settings:
    """Settings for a sidecar in front of the dev provider (embedded defaults of the demo)."""
    base = f"http://{public_host}:{port}"
    data: dict[str, Any] = {
        "dev_mode": True,
        "listen": {"host": host, "port": port, "shutdown_grace": 2},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstream": {"url": upstream_url},
        "oidc": {
            "issuer": issuer,
            "provider": "cognito",
            "cognito_domain": issuer,
            "client_id": "authsidecar-dev",
            "jwks_refresh_interval": 300,
        },
        "callback_url": f"{base}/auth/callback",
        "app_url": f"{base}/",
        "cookies": {"secure": False, "secret": secrets.token_urlsafe(48)},
        "logging": {"format": "console"},
        "me_alias": "/me",
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_settings(data)


def _reachable(host: str) -> str:
    """An address a local client reaches a listener on ``host`` at (loopback for the wildcard)."""
    try:
        return "127.0.0.1" if not host or ipaddress.ip_address(host).is_unspecified else host
    except ValueError:  # a host name
        return host


@asynccontextmanager
async def dev_stack(*, host: str = "127.0.0.1", port: int = 8080, admin_port: int = 9464,
                    public_host: str = "localhost", provider_config: ProviderConfig | None = None,
                    overrides: dict[str, Any] | None = None, spa: bool = True) -> AsyncIterator[DevStack]:
    """Start provider, demo app and sidecar; stop all three on exit.

    ``spa``: the demo SPA on ``/`` and ``/static/*`` of the demo app, public at the sidecar.
    """
    hosts = sorted({public_host, "localhost", "127.0.0.1"})
    # Server to server: the provider reaches the sidecar on loopback whatever address it listens on.
    reach = _reachable(host)
    config = provider_config or ProviderConfig(
        redirect_uris=tuple(f"http://{h}:{port}/auth/callback" for h in hosts),
        logout_uris=tuple(f"http://{h}:{port}/" for h in hosts),
        backchannel_logout_uris=(f"http://{reach}:{port}/auth/backchannel-logout",),
    )
    upstream_app = create_upstream_app()
    overrides = dict(overrides or {})
    # The provider posts a logout token to the sidecar when its sign-in session ends (registered
    # above): the demo shows back-channel logout, as Keycloak or Okta would send it.
    overrides["logout"] = {"backchannel": True, **overrides.get("logout", {})}
    if spa:
        # Runs before the echo app's catch-all route; requests for other paths fall through to it.
        upstream_app.middlewares.append(spa_middleware())
        overrides["public_paths"] = (*SPA_PUBLIC_PATHS, *overrides.get("public_paths", ()))
    provider = DevProvider(config, time.time)
    provider_runner, issuer = await start_provider(provider)
    upstream_runner = web.AppRunner(upstream_app, access_log=None)
    sidecar: Sidecar | None = None
    try:
        await upstream_runner.setup()
        await web.TCPSite(upstream_runner, "127.0.0.1", 0).start()
        upstream_url = f"http://127.0.0.1:{upstream_runner.addresses[0][1]}"
        settings = dev_settings(issuer=issuer, upstream_url=upstream_url, host=host, port=port,
                                admin_port=admin_port, public_host=public_host, overrides=overrides)
        app = create_app(settings)
        sidecar = Sidecar(app, admin_app_for(app), settings)
        await sidecar.start()
        yield DevStack(provider, sidecar, settings, issuer, upstream_url, upstream_app[UPSTREAM_STATS])
    finally:
        if sidecar is not None:
            await sidecar.stop()
        await upstream_runner.cleanup()
        await provider_runner.cleanup()


async def run_dev(*, host: str, port: int, admin_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with dev_stack(host=host, port=port, admin_port=admin_port) as stack:
        users = "".join(
            f"\n    {u.username:<12} {u.password:<22} groups: {', '.join(u.groups[:3]) or '-'}"
            + (f" (+{len(u.groups) - 3} more)" if len(u.groups) > 3 else "")
            for u in DEFAULT_USERS
        )
        print(BANNER.format(app=f"http://localhost:{stack.sidecar.port}/", issuer=stack.issuer,
                            upstream=stack.upstream_url, admin_port=stack.sidecar.admin_port,
                            users=users), file=sys.stderr, flush=True)
        await stop.wait()
