"""The demo SPA's servers, over HTTP without a browser: what is served, with which headers."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from sidecar.dev.spa import SPA_PUBLIC_PATHS, STATIC_DIR, SpaFiles, create_spa_app, spa_middleware
from sidecar.dev.upstream import create_upstream_app
from sidecar.proxy.rules import PathSet

API = "https://api.example.test:8443"


@pytest.fixture
async def spa(aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    return await aiohttp_client(create_spa_app(sidecar_base=API))


@pytest.fixture
async def demo_app(aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    app = create_upstream_app()
    app.middlewares.append(spa_middleware())
    return await aiohttp_client(app)


async def test_the_page_and_its_files_are_served_with_a_strict_csp(spa: TestClient[Any, Any]) -> None:
    page = await spa.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert '<script src="/static/authsidecar-fetch.js">' in await page.text()
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert f"connect-src 'self' {API};" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("app.js", "authsidecar-fetch.js", "style.css"):
        answer = await spa.get(f"/static/{name}")
        assert answer.status == 200, name
        assert await answer.read() == (STATIC_DIR / name).read_bytes()
    assert (await spa.get("/static/app.js")).content_type == "text/javascript"


async def test_config_js_points_the_page_at_the_sidecar(spa: TestClient[Any, Any]) -> None:
    answer = await spa.get("/static/config.js")
    assert await answer.text() == f'window.AUTHSIDECAR_BASE = "{API}";\n'


@pytest.mark.parametrize(
    "path", ["/static/missing.js", "/static/index.html", "/api/hello", "/static/../run.py", "/run.py"]
)
async def test_nothing_else_is_served(spa: TestClient[Any, Any], path: str) -> None:
    assert (await spa.get(path)).status == 404


async def test_a_long_cookie_header_from_the_parent_domain_is_accepted(spa: TestClient[Any, Any]) -> None:
    chunks = "; ".join(f"id_token.{i}={'x' * 3800}" for i in range(4))
    assert (await spa.get("/", headers={"Cookie": chunks})).status == 200


@pytest.mark.parametrize(
    "base", ["https://api.example.test/prefix", "api.example.test", "javascript:alert(1)", "https://u@api.example"]
)
def test_a_sidecar_base_must_be_an_origin(base: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        SpaFiles(base)


async def test_in_front_of_the_echo_app_the_spa_owns_root_and_static(demo_app: TestClient[Any, Any]) -> None:
    page = await demo_app.get("/")
    assert page.content_type == "text/html"
    config = await demo_app.get("/static/config.js")
    assert 'window.AUTHSIDECAR_BASE || ""' in await config.text()
    assert (await demo_app.get("/static/missing.js")).status == 404
    echoed = await demo_app.get("/api/hello")
    assert (await echoed.json())["path"] == "/api/hello"
    posted = await demo_app.post("/")
    assert (await posted.json())["method"] == "POST"


def test_every_path_the_spa_serves_is_public_at_the_sidecar() -> None:
    public = PathSet(SPA_PUBLIC_PATHS)
    assert all(path in public for path in SpaFiles().paths())
    assert "/api/hello" not in public
    assert "/static/a/b.js" not in public

