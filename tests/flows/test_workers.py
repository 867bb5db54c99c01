"""``serve --workers N``: N processes share the ports, one scrape counts them all, SIGTERM ends all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp.test_utils import unused_port

from sidecar.dev.provider import DevProvider
from tests.flows.serving import children, serving
from tests.flows.test_core_config_cli import (
    COOKIE_SECRET,
    clean_env,
    dev_provider,  # noqa: F401 - fixture
    echo_upstream,  # noqa: F401 - fixture
    serve_config,
    write,
)

REQUESTS = 40


def proxied_200s(metrics: str) -> float:
    match = re.search(r'^authsidecar_requests_total\{code="200",route="proxy"\} (\S+)$', metrics, re.M)
    if match is None:
        match = re.search(r'^authsidecar_requests_total\{route="proxy",code="200"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


async def test_two_workers_share_the_port_and_one_scrape_sums_them(
    tmp_path: Path, dev_provider: DevProvider, echo_upstream: str  # noqa: F811
) -> None:
    port, admin_port = unused_port(), unused_port()
    path = write(tmp_path, serve_config(
        dev_provider, port, cookies={"secure": False, "secret": COOKIE_SECRET}, logging={"level": "warning"},
    ))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = clean_env(
        AUTHSIDECAR_LISTEN__HOST="127.0.0.1", AUTHSIDECAR_LISTEN__PORT=str(port),
        AUTHSIDECAR_LISTEN__SHUTDOWN_GRACE="2",
        AUTHSIDECAR_ADMIN__HOST="127.0.0.1", AUTHSIDECAR_ADMIN__PORT=str(admin_port),
        AUTHSIDECAR_UPSTREAM__URL=echo_upstream, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        AUTHSIDECAR_LOGGING__LEVEL="info",
    )
    async with serving(path, env, workers=2, admin_port=admin_port) as (proc, _seen):
        workers = children(proc.pid)
        assert len(workers) == 2

        token = dev_provider.mint_access_token("alice")
        # A new connection each time, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(REQUESTS):
                async with s.get(f"http://127.0.0.1:{port}/api",
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == 200
        # Whichever worker answers the scrape, it reports the sum over both.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(6):
                async with s.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
                    assert proxied_200s(await resp.text()) == REQUESTS
        served = {p for p in workers if any(f"_{p}.db" in f for f in os.listdir(metrics_dir))}
        assert served == set(workers)

        os.kill(proc.pid, signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()


async def test_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    path = write(tmp_path, {
        "dev_mode": True,
        "oidc": {"issuer": "http://127.0.0.1:9", "provider": "cognito", "cognito_domain": "http://127.0.0.1:9",
                 "client_id": "c", "timeout": 0.2},
        "callback_url": f"http://127.0.0.1:{port}/auth/callback",
        "app_url": f"http://127.0.0.1:{port}/",
        "cookies": {"secure": False, "secret": COOKIE_SECRET},
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": 0},
    })
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", "serve", "--config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env(),
        )
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        blocker.close()
        await blocker.wait_closed()
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("authsidecar: cannot listen:")
