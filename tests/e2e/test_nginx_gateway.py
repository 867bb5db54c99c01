"""A real Chromium signs in through nginx's ``auth_request`` (the gateway's 401 → its ``error_page`` →
the sidecar's login → the Hosted UI → back to the page it asked for), and the app behind nginx
receives the identity. Topology: :mod:`tests.gateways.support`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page

from tests.e2e.conftest import artifact, sign_in_at_provider
from tests.gateways.support import Gateway, binary, gateways

pytestmark = pytest.mark.asyncio(loop_scope="package")


@pytest_asyncio.fixture(loop_scope="package")
async def nginx(tmp_path: Path) -> AsyncIterator[Gateway]:
    binary("nginx")
    async with gateways(tmp_path) as start:
        yield await start("nginx")


async def test_a_browser_signs_in_through_nginx_and_the_app_sees_who_it_is(
    page: Page, nginx: Gateway,
) -> None:
    target = nginx.url("/orders/7?tab=a%26b")

    await page.goto(target)
    await sign_in_at_provider(page, nginx.provider.issuer, "alice")
    await page.wait_for_url(target)

    echo = json.loads(await page.locator("body").inner_text())
    await page.screenshot(path=str(artifact("nginx-gateway-after-login.png")))
    alice = nginx.provider.user("alice")
    assert alice is not None
    assert echo["identity"]["X-User-Id"] == alice.sub
    assert echo["identity"]["X-User-Groups"] == "admins,users"
    assert echo["query"] == {"tab": ["a&b"]}
    assert echo["headers"]["X-Authsidecar-Assertion"].count(".") == 2

    # Signed in: the next pages pass nginx without a detour (/admin/** is for admins: alice is one).
    for path in ("/orders/8", "/admin/users"):
        answer = await page.goto(nginx.url(path))
        assert answer is not None
        assert answer.status == 200
        assert answer.url == nginx.url(path)
