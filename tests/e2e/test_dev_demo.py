"""`authsidecar dev` as a user meets it: open the demo, log in as alice, call the API, log out.

The same stack `bash scripts/demo.sh` runs (``dev_stack``), on a free port instead of 8080. The
screenshots land in ``test-artifacts/``; with ``AUTHSIDECAR_UPDATE_DOCS=1`` the after-login one also
replaces ``docs/demo-after-login.png``, the README's picture, taken on port 8080 as the README shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import unused_port
from playwright.async_api import BrowserContext, Page, expect

from sidecar.dev.run import dev_stack
from sidecar.oidc.provider import PROVIDER
from tests.e2e.conftest import artifact, call_api, jar, sign_in_at_provider

pytestmark = pytest.mark.asyncio(loop_scope="package")

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "demo-after-login.png"


async def test_the_dev_demo_logs_in_calls_the_api_and_logs_out(page: Page, context: BrowserContext) -> None:
    update_docs = os.environ.get("AUTHSIDECAR_UPDATE_DOCS") == "1"
    port = 8080 if update_docs else unused_port()
    async with dev_stack(port=port, admin_port=0) as stack:
        await stack.sidecar.runner.app[PROVIDER].connected.wait()
        home = f"http://localhost:{port}/"
        alice = stack.provider.user("alice")
        assert alice is not None
        assert stack.upstream_stats is not None

        await page.goto(home)
        await expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#identity")).to_be_hidden()
        await expect(page.locator("#logout")).to_be_hidden()
        await page.screenshot(path=artifact("demo-before-login.png"), full_page=True)

        await page.click("#login")
        await sign_in_at_provider(page, stack.issuer, "alice")
        await page.wait_for_url(home)
        await expect(page.locator("#status")).to_have_attribute("data-state", "signed-in")
        await expect(page.locator("#who-email")).to_have_text("alice@example.com")

        echo = await call_api(page, "#call-get")
        assert echo["identity"]["X-User-Id"] == alice.sub
        assert echo["identity"]["X-User-Groups"] == "admins,users"
        await page.screenshot(path=artifact("demo-after-login.png"), full_page=True)
        if update_docs:
            shutil.copyfile(artifact("demo-after-login.png"), DOCS_SCREENSHOT)

        echo = await call_api(page, "#call-post")
        assert echo["method"] == "POST"
        assert stack.upstream_stats.by_path["/api/items"] == 1
        assert "access_token" in await jar(context)

        await page.click("#logout")
        await page.wait_for_url(home)
        await expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
        assert "access_token" not in await jar(context)
        # The provider's sign-in session ended too, and it told the sidecar (back-channel logout).
        assert stack.provider.backchannel_statuses == [200]
