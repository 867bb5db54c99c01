"""``serve`` with ``dev_mode: true``: one loud warning line, and without ``cookies.secret`` a random
secret for the run (never an empty one), shared by every worker of ``serve --workers N``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import unused_port
from yarl import URL

from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from tests.conftest import FakeClock
from tests.flows.conftest import PASSWORDS, read_form
from tests.flows.serving import serving
from tests.flows.test_core_config_cli import (
    clean_env,
    echo_upstream,  # noqa: F401 - fixture
    serve_config,
    write,
)

LOGINS = 8


@pytest.fixture
def ports() -> tuple[int, int]:
    return unused_port(), unused_port()


@pytest.fixture
async def provider(ports: tuple[int, int]) -> AsyncIterator[DevProvider]:
    base = f"http://127.0.0.1:{ports[0]}"
    dev = DevProvider(ProviderConfig(redirect_uris=(f"{base}/auth/callback",), logout_uris=(f"{base}/",)),
                      FakeClock.from_wall_clock())
    runner, _issuer = await start_provider(dev)
    try:
        yield dev
    finally:
        await runner.cleanup()


def start_env(ports: tuple[int, int], upstream: str, **extra: str) -> dict[str, str]:
    port, admin_port = ports
    return clean_env(
        AUTHSIDECAR_LISTEN__HOST="127.0.0.1", AUTHSIDECAR_LISTEN__PORT=str(port),
        AUTHSIDECAR_LISTEN__SHUTDOWN_GRACE="2",
        AUTHSIDECAR_ADMIN__HOST="127.0.0.1", AUTHSIDECAR_ADMIN__PORT=str(admin_port),
        AUTHSIDECAR_UPSTREAM__URL=upstream, **extra,
    )


async def login_and_post(base: str, user: str = "alice") -> None:
    """A whole browser login on fresh connections, then a CSRF-checked POST with the session."""
    jar = aiohttp.CookieJar(unsafe=True)
    connector = aiohttp.TCPConnector(force_close=True)  # each request may land on another worker
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as browser:
        async with browser.get(f"{base}/auth/login", allow_redirects=False) as start:
            assert start.status == 302, start.status
            authorize = start.headers["Location"]
        async with browser.get(authorize) as form_page:
            assert form_page.status == 200
            action, fields = read_form(await form_page.text())
            form_url = form_page.url
        fields.update(username=user, password=PASSWORDS[user])
        async with browser.post(form_url.join(URL(action)), data=fields, allow_redirects=False) as posted:
            assert posted.status == 302, await posted.text()
            callback = posted.headers["Location"]
        async with browser.get(callback, allow_redirects=False) as done:
            # The login transaction sealed by whichever process began it opens here.
            assert done.status == 302, await done.text()
        xsrf = next(m.value for m in jar if m.key == "XSRF-TOKEN")
        async with browser.post(f"{base}/api", headers={"X-XSRF-TOKEN": xsrf}, data=b"x") as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["identity"]["X-User-Name"] == user


def events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.strip()]


async def stop(proc: asyncio.subprocess.Process) -> tuple[list[str], str]:
    os.kill(proc.pid, signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return out.decode().splitlines(), err.decode()


async def test_serve_in_dev_mode_warns_once_and_runs_logins_on_a_generated_secret(
    tmp_path: Path, ports: tuple[int, int], provider: DevProvider, echo_upstream: str  # noqa: F811
) -> None:
    port, admin_port = ports
    path = write(tmp_path, serve_config(provider, port, cookies={"secure": False}, public_paths=["/static/"]))
    env = start_env(ports, echo_upstream)
    async with serving(path, env, admin_port=admin_port, timeout=20) as (proc, seen):
        await login_and_post(f"http://127.0.0.1:{port}")
        rest, err = await stop(proc)

    assert proc.returncode == 0, err
    logged = events([*seen, *rest])
    before = [e["event"] for e in logged[: [e["event"] for e in logged].index("listening")]]
    assert before.count("dev_mode_enabled") == 1
    assert before.count("cookie_secret_generated") == 1
    warning = next(e for e in logged if e["event"] == "dev_mode_enabled")
    assert warning["level"] == "warning"
    assert "production" in warning["detail"]
    assert "http://" in warning["detail"]
    assert "Secure" in warning["detail"]
    assert [e["detail"] for e in logged if e["event"] == "config_warning"] == [
        "public_paths.0: '/static/' matches only that exact path; write '/static/**' for everything under it"
    ]
    generated = next(e for e in logged if e["event"] == "cookie_secret_generated")
    assert set(generated) == {"event", "level", "ts", "detail"}  # the secret itself is in no field


async def test_a_configured_secret_is_used_as_is_and_nothing_is_generated(
    tmp_path: Path, ports: tuple[int, int], provider: DevProvider, echo_upstream: str  # noqa: F811
) -> None:
    port, _admin_port = ports
    secret = "configured-secret-0123456789-abcdefghijklmnop"
    path = write(tmp_path, serve_config(provider, port, cookies={"secure": False, "secret": secret}))
    async with serving(path, start_env(ports, echo_upstream), timeout=20) as (proc, seen):
        rest, err = await stop(proc)

    names = [e["event"] for e in events([*seen, *rest])]
    assert names.count("dev_mode_enabled") == 1
    assert "cookie_secret_generated" not in names
    assert secret not in "".join([*seen, *rest]) + err


async def test_workers_share_the_one_generated_secret_so_logins_and_csrf_work_across_them(
    tmp_path: Path, ports: tuple[int, int], provider: DevProvider, echo_upstream: str  # noqa: F811
) -> None:
    port, admin_port = ports
    path = write(tmp_path, serve_config(provider, port, cookies={"secure": False}))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = start_env(ports, echo_upstream, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    async with serving(path, env, workers=2, admin_port=admin_port) as (proc, seen):
        # Every request on a new connection: the kernel spreads them over both workers, so most
        # logins begin on one worker and end on the other (with a secret per worker, about half
        # the callbacks and CSRF checks would fail).
        for _ in range(LOGINS):
            await login_and_post(f"http://127.0.0.1:{port}")
        rest, err = await stop(proc)

    assert proc.returncode == 0, err
    names = [e["event"] for e in events([*seen, *rest])]
    assert names.count("cookie_secret_generated") == 1  # by the supervisor, once for all
    assert names.count("dev_mode_enabled") == 2  # by each worker
    assert len([f for f in os.listdir(metrics_dir) if f.startswith("counter_")]) >= 2
