"""The proxies under test, each started on loopback in front of the same upstream.

* ``authsidecar``  ``authsidecar serve --config <generated yaml>`` against the harness's dev provider
* ``bare``         bench/bare_proxy.py: aiohttp with no auth (the floor of this design)
* ``haproxy-jwt``  HAProxy with ``jwt_verify`` (RS256, the provider's key as PEM): the C reference
* ``nginx``        nginx ``proxy_pass``, no auth: the C floor
* ``apache-oidc``  Apache httpd with mod_auth_openidc in its OAuth 2.0 resource-server mode
                   (``AuthType oauth20``): every Bearer token verified in C with the provider's key
* ``nginx-verify``, ``nginx-sidecar``  nginx with authsidecar behind it (bench/gateways.py)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from procs import ALL_CORES, TARGET_CORE, Proc, free_port, output, spawn, tree

BENCH = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# authsidecar's validation cache in the harness: smaller than the rotating token set of the
# cache-cold scenario, so that rotation misses every time (an LRU smaller than a cyclic working set).
CACHE_SIZE = 1000


@dataclass
class Target:
    name: str
    url: str  # http://127.0.0.1:PORT
    proc: Proc
    auth: bool  # validates tokens (authsidecar, haproxy-jwt)
    version: str = ""
    on_target_core: bool = True  # False for the upstream itself ("direct")
    admin: str = ""  # authsidecar's admin listener (metrics)
    # A gateway's authsidecar (nginx-verify, nginx-sidecar): its CPU and memory count as the target's.
    behind: Proc | None = None
    refusal: int = 401  # the answer to a forged or expired token (nginx-verify: its login redirect)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """Every process of the target: its process tree and that of the authsidecar behind it."""
        return tree(self.pid) + (tree(self.behind.pid) if self.behind is not None else [])


async def wait_http(url: str, want: set[int], proc: Proc, within: float = 30.0, times: int = 1) -> None:
    """Poll ``url`` until it answers one of ``want`` ``times`` times in a row (for at most ``within``
    seconds), each on a new connection: with several workers on one port, each connection may
    reach another worker, so a run of answers makes it likely that all of them are up."""
    deadline = time.monotonic() + within
    last, streak = "no answer", 0
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.tail()}")
            try:
                timeout = aiohttp.ClientTimeout(total=2)
                async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
                    if resp.status in want:
                        streak += 1
                        if streak >= times:
                            return
                        continue
                    streak, last = 0, f"status {resp.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                streak, last = 0, type(exc).__name__
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {within:.0f}s ({last}):\n{proc.tail()}")


def sidecar_config(
    workdir: Path,
    *,
    port: int,
    admin_port: int,
    upstream: str | None,
    issuer: str,
    client_id: str,
    name: str = "authsidecar",
    level: str = "info",
    cache_size: int = CACHE_SIZE,
    trust_loopback: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    base = f"http://127.0.0.1:{port}"
    config = {
        "dev_mode": True,  # http:// issuer and non-Secure cookies on loopback
        "listen": {"host": "127.0.0.1", "port": port, "shutdown_grace": 2},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        # None: no app behind it (forward-auth only: /auth/*, /auth/verify and the admin port).
        "upstream": {"url": upstream} if upstream is not None else None,
        "oidc": {
            "issuer": issuer,
            "provider": "cognito",
            "cognito_domain": issuer,
            "client_id": client_id,
            "jwks_refresh_interval": 300,
        },
        "callback_url": f"{base}/auth/callback",
        "app_url": f"{base}/",
        # refresh_token_path "/": the refresh token rides with every request, so an expired access
        # token is refreshed transparently on any path (the refresh scenario).
        "cookies": {"secure": False, "secret": secrets.token_urlsafe(48), "refresh_token_path": "/"},
        "tokens": {"validation_cache_size": cache_size},
        "logging": {"level": level, "format": "json"},
    }
    if trust_loopback:
        # Behind nginx on loopback: its X-Original-URI / X-Forwarded-* are believed.
        config["trusted_proxies"] = ["127.0.0.1/32"]
    for section, values in (extra or {}).items():  # fleet mode: the store, sessions, a known secret
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _placement(workers: int) -> tuple[int | str, str]:
    """Cores and name suffix: one worker on the target core; more on every core (shared with load)."""
    return (TARGET_CORE, "") if workers == 1 else (ALL_CORES, f"-{workers}w")


async def start_sidecar(
    workdir: Path,
    upstream: str | None,
    issuer: str,
    client_id: str,
    name: str = "authsidecar",
    level: str = "info",
    workers: int = 1,
    cache_size: int = CACHE_SIZE,
    trust_loopback: bool = False,
    extra: dict[str, Any] | None = None,
    floor: str | None = None,
) -> Target:
    """``floor``: run it through bench/floor.py with the cache miss cut down to that part."""
    cores, suffix = _placement(workers)
    name += suffix
    port, admin_port = free_port(), free_port()
    config = sidecar_config(
        workdir,
        port=port,
        admin_port=admin_port,
        upstream=upstream,
        issuer=issuer,
        client_id=client_id,
        name=name,
        level=level,
        cache_size=cache_size,
        trust_loopback=trust_loopback,
        extra=extra,
    )
    cmd = [str(VENV_BIN / "authsidecar"), "serve", "--config", str(config)]
    if floor is not None:
        cmd = [sys.executable, str(BENCH / "floor.py"), floor, *cmd[1:]]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = spawn(name, cmd, cores, workdir)
    await wait_http(f"http://127.0.0.1:{admin_port}/readyz", {200}, proc, times=4 * workers)
    from sidecar import __version__

    return Target(
        name,
        f"http://127.0.0.1:{port}",
        proc,
        auth=True,
        version=f"authsidecar {__version__}",
        admin=f"http://127.0.0.1:{admin_port}",
        on_target_core=workers == 1,
    )


async def start_bare(workdir: Path, upstream: str, workers: int = 1) -> Target:
    cores, suffix = _placement(workers)
    port = free_port()
    cmd = [sys.executable, str(BENCH / "bare_proxy.py"), "--port", str(port), "--upstream", upstream]
    cmd += ["--workers", str(workers)]
    proc = spawn("bare" + suffix, cmd, cores, workdir)
    await wait_http(f"http://127.0.0.1:{port}/", {200}, proc, times=4 * workers)
    return Target(
        "bare" + suffix,
        f"http://127.0.0.1:{port}",
        proc,
        auth=False,
        version=f"aiohttp {aiohttp.__version__}",
        on_target_core=workers == 1,
    )


HAPROXY_CFG = """\
global
    nbthread {workers}
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    # Client-sent identity headers never reach the app.
    http-request del-header X-User-Id
    http-request del-header X-User-Name
    http-request del-header X-User-Email
    http-request del-header X-User-Groups
    # The token: Authorization: Bearer, else the access_token cookie.
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.bearer) req.cook(access_token) unless {{ var(txn.bearer) -m found }}
    http-request deny deny_status 401 unless {{ var(txn.bearer) -m found }}
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless {{ var(txn.alg) -m str RS256 }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{pem}") -m int 1 }}
    # Claims, as authsidecar checks them for a Cognito access token (minus leeway and nbf/iat).
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
    http-request deny deny_status 401 unless {{ var(txn.iss) -m str {issuer} }}
    http-request set-var(txn.use) var(txn.bearer),jwt_payload_query('$.token_use')
    http-request deny deny_status 401 unless {{ var(txn.use) -m str access }}
    http-request set-var(txn.client) var(txn.bearer),jwt_payload_query('$.client_id')
    http-request deny deny_status 401 unless {{ var(txn.client) -m str {client_id} }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
    http-request set-header X-User-Id %[var(txn.bearer),jwt_payload_query('$.sub')]
    http-request set-header X-User-Name %[var(txn.bearer),jwt_payload_query('$.username')]
    default_backend app

backend app
    server app {upstream_host}:{upstream_port} maxconn 512
"""


async def start_haproxy(
    workdir: Path, upstream: str, issuer: str, client_id: str, pem: Path, workers: int = 1
) -> Target | None:
    exe = shutil.which("haproxy")
    if exe is None:
        return None
    cores, suffix = _placement(workers)
    port = free_port()
    host, _, up_port = upstream.removeprefix("http://").partition(":")
    cfg = workdir / f"haproxy{suffix}.cfg"
    cfg.write_text(
        HAPROXY_CFG.format(
            port=port,
            pem=pem,
            issuer=issuer,
            client_id=client_id,
            upstream_host=host,
            upstream_port=up_port,
            workers=workers,
        )
    )
    code, text = await output([exe, "-c", "-q", "-f", str(cfg)])
    if code != 0:
        raise RuntimeError(f"haproxy config refused:\n{text}")
    proc = spawn("haproxy-jwt" + suffix, [exe, "-db", "-f", str(cfg)], cores, workdir)
    await wait_http(f"http://127.0.0.1:{port}/", {401}, proc)
    version = (await output([exe, "-v"]))[1].split("\n")[0]
    return Target(
        "haproxy-jwt" + suffix,
        f"http://127.0.0.1:{port}",
        proc,
        auth=True,
        version=" ".join(version.split()[:3]) + (f", nbthread {workers}" if workers > 1 else ""),
        on_target_core=workers == 1,
    )


# Every nginx target's process and http{} set-up: files in its own directory, the app upstream.
NGINX_HEAD = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    large_client_header_buffers 4 64k;
    upstream app {{ server {upstream}; keepalive 128; }}
"""

NGINX_CFG = NGINX_HEAD + """\
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Stream both ways, as the aiohttp proxies do.
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 128k;
        }}
        location /ws {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
    }}
}}
"""


async def start_nginx(workdir: Path, upstream: str, workers: int = 1) -> Target | None:
    exe = shutil.which("nginx")
    if exe is None:
        return None
    cores, suffix = _placement(workers)
    port = free_port()
    ndir = workdir / f"nginx{suffix}"
    ndir.mkdir(exist_ok=True)
    ndir.chmod(0o777)  # the workers run as an unprivileged user when started as root
    cfg = ndir / "nginx.conf"
    upstream_hostport = upstream.removeprefix("http://")
    cfg.write_text(NGINX_CFG.format(dir=ndir, port=port, upstream=upstream_hostport, workers=workers))
    cmd = [exe, "-c", str(cfg), "-p", str(ndir), "-e", str(ndir / "nginx-error.log")]
    proc = spawn("nginx" + suffix, cmd, cores, workdir)
    await wait_http(f"http://127.0.0.1:{port}/", {200}, proc, times=4 * workers)
    version = (await output([exe, "-v"]))[1].strip()
    return Target(
        "nginx" + suffix,
        f"http://127.0.0.1:{port}",
        proc,
        auth=False,
        version=version.split(": ")[-1] + (f", {workers} workers" if workers > 1 else ""),
        on_target_core=workers == 1,
    )


APACHE_MODULES = Path("/usr/lib/apache2/modules")
APACHE_CFG = """\
ServerRoot {dir}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}
Mutex file:{dir} default
ErrorLog {dir}/error.log
LogLevel warn
User {user}
Group {group}
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authn_core_module {mods}/mod_authn_core.so
LoadModule headers_module {mods}/mod_headers.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_http_module {mods}/mod_proxy_http.so
LoadModule auth_openidc_module {mods}/mod_auth_openidc.so
# One process with a pool of threads: one worker, like the other single-worker targets.
StartServers 1
ServerLimit 1
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers 64
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
LimitRequestFieldSize 16384

OIDCCryptoPassphrase {passphrase}
# The provider's signing key under its kid, as HAProxy gets it: mod_auth_openidc fetches a JWKS
# over https only, and the dev provider speaks http.
OIDCOAuthVerifyCertFiles {kid}#{pem}
OIDCOAuthAcceptTokenAs header
OIDCOAuthRemoteUserClaim sub
OIDCOAuthTokenExpiryClaim exp absolute mandatory
OIDCPassClaimsAs environment

<Location />
    AuthType oauth20
    # Claims, as authsidecar checks them for a Cognito access token.
    <RequireAll>
        Require claim iss:{issuer}
        Require claim token_use:access
        Require claim client_id:{client_id}
    </RequireAll>
    # Client-sent identity headers never reach the app.
    RequestHeader unset X-User-Email
    RequestHeader unset X-User-Groups
    RequestHeader set X-User-Id "%{{OIDC_CLAIM_sub}}e"
    RequestHeader set X-User-Name "%{{OIDC_CLAIM_username}}e"
</Location>
ProxyPass / {upstream}/ keepalive=On
ProxyPassReverse / {upstream}/
"""


async def start_apache(
    workdir: Path, upstream: str, issuer: str, client_id: str, pem: Path, kid: str
) -> Target | None:
    exe = shutil.which("apache2") or shutil.which("httpd")
    if exe is None or not (APACHE_MODULES / "mod_auth_openidc.so").exists():
        return None
    port = free_port()
    adir = workdir / "apache"
    adir.mkdir(exist_ok=True)
    adir.chmod(0o777)  # the threads run as an unprivileged user when started as root
    user = "www-data" if os.geteuid() == 0 else "#" + str(os.geteuid())
    group = "www-data" if os.geteuid() == 0 else "#" + str(os.getegid())
    cfg = adir / "httpd.conf"
    cfg.write_text(APACHE_CFG.format(
        dir=adir, port=port, mods=APACHE_MODULES, issuer=issuer, client_id=client_id, upstream=upstream,
        pem=pem, kid=kid,
        passphrase=secrets.token_urlsafe(32), user=user, group=group,
    ))
    code, text = await output([exe, "-t", "-f", str(cfg)])
    if code != 0:
        raise RuntimeError(f"apache config refused:\n{text}")
    proc = spawn("apache-oidc", [exe, "-f", str(cfg), "-DFOREGROUND"], TARGET_CORE, workdir)
    await wait_http(f"http://127.0.0.1:{port}/", {401}, proc)
    version = (await output([exe, "-v"]))[1].split("\n")[0].split(": ")[-1]
    module = (await output(["dpkg-query", "-W", "-f", "${Version}", "libapache2-mod-auth-openidc"]))[1]
    return Target(
        "apache-oidc",
        f"http://127.0.0.1:{port}",
        proc,
        auth=True,
        version=f"{version}, mod_auth_openidc {module.strip()}",
    )
