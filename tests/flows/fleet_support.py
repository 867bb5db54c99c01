"""Sidecar replicas as real processes (``serve --workers N``) against one dev provider and one app.

Each :class:`Replica` is its own ``authsidecar serve`` process tree on its own ports, configured from
one shared file, so a test can spread a browser session's requests over workers and replicas.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from sidecar.auth.csrf import CsrfTokens
from sidecar.auth.transaction import derive_key
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.upstream import create_upstream_app
from tests.conftest import FakeClock
from tests.flows.conftest import wait_ready as until_ready

SECRET = "fleet-cookie-secret-0123456789-abcdefghij"
HOST = "127.0.0.1"


@dataclass
class Replica:
    port: int
    admin_port: int
    process: asyncio.subprocess.Process
    # Where its log lines (stdout, JSON) go.
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


@dataclass
class Fleet:
    provider: DevProvider
    upstream: str
    config: Path
    replicas: list[Replica]

    def csrf_token(self, sub: str) -> str:
        """The CSRF token a replica would issue to ``sub`` (every replica shares the secret)."""
        return CsrfTokens(derive_key(SECRET.encode(), b"authsidecar/csrf-key/v1")).issue(sub)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSIDECAR_", "PROMETHEUS_"))}
    env.update(extra)
    return env


FleetFactory = Callable[..., Awaitable[Fleet]]


@pytest.fixture
async def make_fleet(tmp_path: Path) -> AsyncIterator[FleetFactory]:
    async with AsyncExitStack() as exits:

        async def start(*, replicas: int = 1, workers: int = 2, store: dict[str, Any] | None = None,
                        provider: dict[str, Any] | None = None, wait_ready: bool = True,
                        log_level: str = "warning", settings: dict[str, Any] | None = None) -> Fleet:
            ports = [(unused_port(), unused_port()) for _ in range(replicas)]
            public = f"http://{HOST}:{ports[0][0]}"
            dev = DevProvider(ProviderConfig(redirect_uris=(f"{public}/auth/callback",),
                                             logout_uris=(f"{public}/",), **(provider or {})),
                              FakeClock.from_wall_clock())
            runner, issuer = await start_provider(dev)
            exits.push_async_callback(runner.cleanup)
            app = web.AppRunner(create_upstream_app(), access_log=None)
            await app.setup()
            exits.push_async_callback(app.cleanup)
            await web.TCPSite(app, HOST, 0).start()
            upstream = f"http://{HOST}:{app.addresses[0][1]}"
            config = tmp_path / "authsidecar.yaml"
            config.write_text(json.dumps({
                "dev_mode": True,
                "oidc": {"issuer": issuer, "provider": "cognito", "cognito_domain": issuer,
                         "client_id": dev.config.client_id},
                "callback_url": f"{public}/auth/callback",
                "app_url": f"{public}/",
                "allowed_return_origins": [f"http://{HOST}:{p}" for p, _ in ports],
                "cors": {"allowed_origins": [f"http://{HOST}:{p}" for p, _ in ports[1:]]},
                "cookies": {"secure": False, "secret": SECRET},
                "upstream": {"url": upstream},
                "store": store or {"backend": "memory"},
                "logging": {"level": log_level},
                "workers": workers,
                **(settings or {}),
            }))
            started = []
            for index, (port, admin) in enumerate(ports):
                log_path = tmp_path / f"replica-{index}.log"
                log_file = exits.enter_context(log_path.open("wb"))
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "sidecar", "serve", "--config", str(config),
                    stdout=log_file, stderr=asyncio.subprocess.PIPE,
                    env=_env(AUTHSIDECAR_LISTEN__HOST=HOST, AUTHSIDECAR_LISTEN__PORT=str(port),
                             AUTHSIDECAR_ADMIN__HOST=HOST, AUTHSIDECAR_ADMIN__PORT=str(admin),
                             AUTHSIDECAR_LISTEN__SHUTDOWN_GRACE="1"),
                )
                replica = Replica(port, admin, proc, log_path)
                exits.push_async_callback(_stop, replica)
                started.append(replica)
            for replica in started if wait_ready else ():
                await until_ready(replica.admin)
            return Fleet(dev, upstream, config, started)

        yield start


async def _stop(replica: Replica) -> None:
    proc = replica.process
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert "Traceback" not in err, err
