"""Real gateways in front of the sidecar's forward-auth: Debian's nginx and Caddy, on loopback.

    client ──► gateway 127.0.0.1:G ──► /auth/*            the sidecar (no upstream of its own)
                    │  └── subrequest /auth/verify ──► the sidecar
                    └──► everything else (when verify said 200) ──► the echo app

The gateway is the browser's only origin: login, callback and the app are all under
``http://127.0.0.1:G``. Each gateway runs as a child process with a generated configuration in a
temporary folder (pid, logs and temp files inside it) and is ended by its PID. The sidecar trusts
127.0.0.1 (the gateway) for X-Original-URI and friends.

Without the binaries the tests are skipped locally and fail when ``CI`` is set (``scripts/test.sh``
installs Debian's ``nginx-light`` and ``caddy`` when they are missing).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry
from yarl import URL

from sidecar.app import admin_app_for, create_app
from sidecar.config import Settings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.run import dev_settings
from sidecar.dev.upstream import UPSTREAM_STATS, UpstreamStats, create_upstream_app
from sidecar.dev.users import DEFAULT_USERS
from sidecar.observability import make_logger
from sidecar.oidc.provider import PROVIDER
from sidecar.server import Sidecar
from tests.conftest import FakeClock
from tests.flows.conftest import read_form

PASSWORDS = {u.username: u.password for u in DEFAULT_USERS}
RULES = [{"path": "/admin/**", "groups_any": ["admins"]}]
# The identity headers the gateway copies from verify's 200 onto the request to the app.
IDENTITY_HEADERS = ("X-User-Id", "X-User-Email", "X-User-Groups", "X-User-Name", "X-Authsidecar-Assertion")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is not None:
        return path
    reason = f"no {name} binary (apt-get install {'nginx-light' if name == 'nginx' else name})"
    if in_ci():
        pytest.fail(f"{reason}: the gateway tests must run in CI", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signing_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    upstream authsidecar {{ server 127.0.0.1:{sidecar}; }}
    upstream app {{ server 127.0.0.1:{app}; }}

    server {{
        listen 127.0.0.1:{port};

        # Login, callback, logout, /auth/me: the sidecar itself.
        location /auth/ {{
            proxy_pass http://authsidecar;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}

        # The forward-auth subrequest: the browser's headers, the original method and URI.
        location = /_authsidecar {{
            internal;
            proxy_pass http://authsidecar/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}

        location / {{
            auth_request /_authsidecar;
            auth_request_set $authsidecar_login $upstream_http_x_authsidecar_login;
            auth_request_set $user_id $upstream_http_x_user_id;
            auth_request_set $user_email $upstream_http_x_user_email;
            auth_request_set $user_groups $upstream_http_x_user_groups;
            auth_request_set $user_name $upstream_http_x_user_name;
            auth_request_set $user_assertion $upstream_http_x_authsidecar_assertion;
            auth_request_set $app_cookie $upstream_http_x_authsidecar_cookie;
            # Set (or, when empty, removed): a client-sent header of the same name never passes.
            proxy_set_header X-User-Id $user_id;
            proxy_set_header X-User-Email $user_email;
            proxy_set_header X-User-Groups $user_groups;
            proxy_set_header X-User-Name $user_name;
            proxy_set_header X-Authsidecar-Assertion $user_assertion;
            # The browser's cookies without the sidecar's (its tokens never reach the app).
            proxy_set_header Cookie $app_cookie;
            proxy_set_header Host $http_host;
            error_page 401 = @authsidecar_login;
            proxy_pass http://app;
        }}

        # Not signed in: to the sidecar's login, which brings the browser back here.
        location @authsidecar_login {{
            return 302 $authsidecar_login;
        }}
    }}
}}
"""

CADDYFILE = """
{{
    admin off
    auto_https off
    storage file_system {tmp}/caddy
}}

http://127.0.0.1:{port} {{
    log {{
        output file {tmp}/access.log
    }}
    handle /auth/* {{
        reverse_proxy 127.0.0.1:{sidecar}
    }}
    # route: in the order written (Caddy would otherwise run request_header after forward_auth).
    route {{
        # Client-sent identity headers never reach the app, also when verify names no value.
        request_header -X-User-Id
        request_header -X-User-Email
        request_header -X-User-Groups
        request_header -X-User-Name
        request_header -X-Authsidecar-Assertion
        forward_auth 127.0.0.1:{sidecar} {{
            uri /auth/verify
            copy_headers {{
                X-User-Id
                X-User-Email
                X-User-Groups
                X-User-Name
                X-Authsidecar-Assertion
                # The browser's cookies without the sidecar's (its tokens never reach the app).
                X-Authsidecar-Cookie>Cookie
            }}
            @login status 401
            handle_response @login {{
                redir {{rp.header.X-Authsidecar-Login}} 302
            }}
        }}
        reverse_proxy 127.0.0.1:{app}
    }}
}}
"""


@dataclass
class Gateway:
    """A running gateway, the sidecar behind it, and the echo app."""

    kind: str
    base: str  # http://127.0.0.1:G, the browser's only origin
    sidecar: str  # the sidecar's own URL (for the JWKS)
    provider: DevProvider
    settings: Settings
    clock: FakeClock
    upstream_stats: UpstreamStats
    logs: io.StringIO
    _exit: AsyncExitStack = field(repr=False)

    def url(self, path: str) -> str:
        return self.base + path

    async def browser(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self._exit.push_async_callback(session.close)
        return session

    async def sign_in(self, browser: aiohttp.ClientSession, response: aiohttp.ClientResponse,
                      user: str) -> aiohttp.ClientResponse:
        """From the provider's form page (where a redirect chain ended) back to the gateway."""
        assert str(response.url).startswith(self.provider.issuer), response.url
        action, fields = read_form(await response.text())
        fields.update(username=user, password=PASSWORDS[user])
        return await browser.post(response.url.join(URL(action)), data=fields)


async def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Ready when the gateway accepts a connection (bounded; a dead process fails at once)."""
    for _ in range(500):
        if process.poll() is not None:
            raise AssertionError(f"gateway exited with {process.returncode}: {_tail(log)}")
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"gateway did not listen on {port}: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


def _start(exits: AsyncExitStack, argv: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    exits.callback(out.close)
    # Caddy keeps state under $HOME / XDG folders: the test's own folder instead.
    home = str(log.parent)
    env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "XDG_DATA_HOME": home}
    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                               stdin=subprocess.DEVNULL, env=env)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    exits.callback(stop)
    return process


GatewayFactory = Callable[..., Awaitable[Gateway]]


@asynccontextmanager
async def gateways(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """``start(kind, **settings overrides)`` starts one stack; everything stops on exit."""
    async with AsyncExitStack() as exits:

        async def start(kind: str, **overrides: Any) -> Gateway:
            exe = binary(kind)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            clock = FakeClock.from_wall_clock()
            provider = DevProvider(ProviderConfig(redirect_uris=(f"{base}/auth/callback",),
                                                  logout_uris=(f"{base}/",)), clock)
            provider_runner, issuer = await start_provider(provider)
            exits.push_async_callback(provider_runner.cleanup)

            upstream_app = create_upstream_app()
            upstream_runner = web.AppRunner(upstream_app, access_log=None)
            await upstream_runner.setup()
            exits.push_async_callback(upstream_runner.cleanup)
            await web.TCPSite(upstream_runner, "127.0.0.1", 0).start()
            app_port = int(upstream_runner.addresses[0][1])

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            exits.callback(sock.close)
            sidecar_port = int(sock.getsockname()[1])
            data: dict[str, Any] = {
                "upstream": None,
                "callback_url": f"{base}/auth/callback",
                "app_url": f"{base}/",
                "trusted_proxies": ["127.0.0.1/32"],
                "rules": RULES,
                "logging": {"level": "info", "format": "json"},
                "identity_headers": {"assertion": {"enabled": True, "audience": "echo-app",
                                                   "signing_key": signing_key()}},
            }
            data.update(overrides)
            settings = dev_settings(issuer=issuer, upstream_url="http://127.0.0.1:9", host="127.0.0.1",
                                    port=sidecar_port, admin_port=0, overrides=data)
            logs = io.StringIO()
            app = create_app(settings, clock=clock, registry=CollectorRegistry(),
                             log=make_logger("info", "json", logs))
            sidecar = Sidecar(app, admin_app_for(app), settings, sock=sock)
            exits.push_async_callback(sidecar.stop)
            await sidecar.start()
            await app[PROVIDER].connected.wait()

            folder = tmp_path / f"{kind}-{port}"
            folder.mkdir()
            log = folder / "output.log"
            values = {"tmp": folder, "port": port, "sidecar": sidecar_port, "app": app_port}
            if kind == "nginx":
                (folder / "nginx.conf").write_text(NGINX_CONF.format(**values))
                argv = [exe, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"]
            else:
                (folder / "Caddyfile").write_text(CADDYFILE.format(**values))
                argv = [exe, "run", "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"]
            process = _start(exits, argv, port, log)
            await _wait_for_port(port, process, log)
            return Gateway(
                kind=kind, base=base, sidecar=f"http://127.0.0.1:{sidecar_port}", provider=provider,
                settings=settings, clock=clock, upstream_stats=upstream_app[UPSTREAM_STATS], logs=logs,
                _exit=exits,
            )

        yield start
