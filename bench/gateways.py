"""nginx in front, authsidecar behind it: the two ways a team that already runs nginx can add it.

* ``nginx-verify``   nginx ``auth_request`` asks authsidecar's ``/auth/verify`` about every request,
                     then proxies it to the app itself with the identity headers verify answered
                     (``auth_request_set``); authsidecar runs without an upstream (``upstream: null``),
                     the forward-auth deployment. The configuration is the README's (and
                     tests/gateways/'s), with keep-alive connections to both upstreams.
* ``nginx-sidecar``  nginx ``proxy_pass`` to authsidecar in its normal proxy mode, which proxies to the
                     app: one more hop in the data path instead of a subrequest.

Both processes of a target run on the target core (nginx with one worker, authsidecar with one), so
the pair is measured against HAProxy's one process on that core: the whole gateway-plus-auth stack
on one core. The target's CPU is both process trees'; authsidecar's own share is reported apart.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from procs import TARGET_CORE, free_port, output, spawn
from targets import NGINX_HEAD, Target, start_sidecar, wait_http

NGINX_GATEWAY_CFG = NGINX_HEAD + """\
    upstream authsidecar {{ server 127.0.0.1:{sidecar}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_buffer_size 64k;
        proxy_buffers 4 64k;
        proxy_busy_buffers_size 128k;
{locations}
    }}
}}
"""

# The README's plain-nginx forward-auth configuration; keep-alive to both upstreams.
VERIFY_LOCATIONS = """\
        location /auth/ {
            proxy_pass http://authsidecar;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
        location = /_authsidecar {
            internal;
            proxy_pass http://authsidecar/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
        location / {
            auth_request /_authsidecar;
            auth_request_set $authsidecar_login $upstream_http_x_authsidecar_login;
            auth_request_set $user_id $upstream_http_x_user_id;
            auth_request_set $user_email $upstream_http_x_user_email;
            auth_request_set $user_groups $upstream_http_x_user_groups;
            auth_request_set $user_name $upstream_http_x_user_name;
            auth_request_set $app_cookie $upstream_http_x_authsidecar_cookie;
            proxy_set_header X-User-Id $user_id;
            proxy_set_header X-User-Email $user_email;
            proxy_set_header X-User-Groups $user_groups;
            proxy_set_header X-User-Name $user_name;
            proxy_set_header Cookie $app_cookie;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            error_page 401 = @authsidecar_login;
            proxy_pass http://app;
        }
        location @authsidecar_login {
            return 302 $authsidecar_login;
        }"""

# Everything through authsidecar, which authenticates and proxies to the app.
SIDECAR_LOCATIONS = """\
        location / {
            proxy_pass http://authsidecar;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering off;
            proxy_buffering off;
        }"""


async def start_nginx_gateway(
    workdir: Path, upstream: str, issuer: str, client_id: str, *, verify: bool
) -> Target | None:
    """``nginx-verify`` (``verify``) or ``nginx-sidecar``: authsidecar, then nginx in front of it."""
    exe = shutil.which("nginx")
    if exe is None:
        return None
    name = "nginx-verify" if verify else "nginx-sidecar"
    sidecar = await start_sidecar(
        workdir, None if verify else upstream, issuer, client_id, name=f"authsidecar-{name}",
        trust_loopback=True,
    )
    try:
        port = free_port()
        ndir = workdir / name
        ndir.mkdir(exist_ok=True)
        ndir.chmod(0o777)  # the worker runs as an unprivileged user when started as root
        cfg = ndir / "nginx.conf"
        cfg.write_text(NGINX_GATEWAY_CFG.format(
            dir=ndir, port=port, workers=1, upstream=upstream.removeprefix("http://"),
            sidecar=sidecar.url.rpartition(":")[2],
            locations=VERIFY_LOCATIONS if verify else SIDECAR_LOCATIONS,
        ))
        cmd = [exe, "-c", str(cfg), "-p", str(ndir), "-e", str(ndir / "nginx-error.log")]
        code, text = await output([*cmd, "-t"])
        if code != 0:
            raise RuntimeError(f"{name}: nginx config refused:\n{text}")
        proc = spawn(name, cmd, TARGET_CORE, workdir)
        try:
            # Without credentials: nginx-verify sends the browser to log in, authsidecar refuses.
            await wait_http(f"http://127.0.0.1:{port}/", {302} if verify else {401, 302}, proc)
        except BaseException:
            await proc.stop()
            raise
    except BaseException:
        await sidecar.proc.stop()
        raise
    version = (await output([exe, "-v"]))[1].strip().split(": ")[-1]
    return Target(
        name,
        f"http://127.0.0.1:{port}",
        proc,
        auth=True,
        version=f"{version} + {sidecar.version}" + (" (upstream: null)" if verify else ""),
        admin=sidecar.admin,
        behind=sidecar.proc,
        refusal=302 if verify else 401,
    )
