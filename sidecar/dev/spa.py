"""Serving the demo single-page app (``sidecar/dev/static``) and telling it where the sidecar is.

Two shapes, same files:

* :func:`spa_middleware` puts the SPA in front of another app. ``authsidecar dev`` puts it on the
  demo upstream, so ``http://localhost:8080/`` is the SPA, reached through the sidecar on public
  paths (:data:`SPA_PUBLIC_PATHS`), while every other path still reaches the echo app behind it.
* :func:`create_spa_app` is a server of its own, for the production shape where the SPA has its own
  origin (``https://app.example.com``) and calls the sidecar on another (``https://api.example.com``).
  ``sidecar_base`` is then the sidecar's origin: it is written into ``/static/config.js``, which sets
  ``window.AUTHSIDECAR_BASE`` for ``authsidecar-fetch.js``, and into the page's CSP ``connect-src``.

Routes: ``GET /`` and ``/index.html`` (the page) and ``GET /static/<file>`` for the directory's
``.html``, ``.js`` and ``.css`` files, read once at start-up; nothing else is served.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from sidecar.auth.return_to import origin_of

STATIC_DIR = Path(__file__).with_name("static")
# What the sidecar must let through without a session for the SPA to load (``public_paths``).
SPA_PUBLIC_PATHS = ("/", "/index.html", "/static/*")
# Cookies scoped to the parent domain (the sidecar's ``cookies.domain``) reach the SPA's server too,
# chunked tokens included: a long Cookie header must not be refused (aiohttp's default is 8 KiB).
MAX_FIELD = 65536

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str


class SpaFiles:
    """The SPA's files by URL path, with the response headers they are served with; built once."""

    def __init__(self, sidecar_base: str = "", directory: Path = STATIC_DIR) -> None:
        base = sidecar_base.rstrip("/")
        if base and (origin_of(base) is None or urlsplit(base).path):
            raise ValueError(f"sidecar_base {sidecar_base!r} is not an origin like https://api.example.com")
        assets: dict[str, _Asset] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.suffix in _TYPES:
                assets[f"/static/{path.name}"] = _Asset(path.read_bytes(), _TYPES[path.suffix])
        index = assets.pop("/static/index.html", None)
        if index is None:
            raise ValueError(f"{directory} has no index.html")
        assets["/"] = assets["/index.html"] = index
        if base:
            config = f"window.AUTHSIDECAR_BASE = {json.dumps(base)};\n"
            assets["/static/config.js"] = _Asset(config.encode(), _TYPES[".js"])
        self.assets: Mapping[str, _Asset] = MappingProxyType(assets)
        connect = f"'self' {base}" if base else "'self'"
        self.headers: Mapping[str, str] = MappingProxyType({
            # Scripts and styles from this origin only: nothing injected can run or phone home.
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            # The sidecar checks where an unsafe request or a logout came from: keep the origin in Referer.
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Cache-Control": "no-cache",
        })

    def paths(self) -> tuple[str, ...]:
        return tuple(self.assets)

    def response(self, path: str) -> web.Response | None:
        asset = self.assets.get(path)
        if asset is None:
            return None
        return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8",
                            headers=dict(self.headers))


def spa_middleware(files: SpaFiles | None = None) -> Middleware:
    """Answer GET/HEAD of the SPA's paths (``/static/`` is the SPA's alone: an unknown file there is
    a 404); hand everything else to the app's own routes."""
    spa = files if files is not None else SpaFiles()

    @web.middleware
    async def serve_spa(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            response = spa.response(request.path)
            if response is not None:
                return response
            if request.path.startswith("/static/"):
                raise web.HTTPNotFound()
        return await handler(request)

    return serve_spa


def create_spa_app(sidecar_base: str = "", directory: Path = STATIC_DIR) -> web.Application:
    """A server of the SPA alone; ``sidecar_base`` is the sidecar's origin ("" for this one)."""
    files = SpaFiles(sidecar_base, directory)

    async def serve(request: web.Request) -> web.StreamResponse:
        response = files.response(request.path)
        if response is None:
            raise web.HTTPNotFound()
        return response

    app = web.Application(handler_args={"max_field_size": MAX_FIELD, "max_line_size": MAX_FIELD})
    for path in files.paths():
        app.router.add_get(path, serve)
    return app
