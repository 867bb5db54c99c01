"""The SPA on https://app.example.test, the sidecar on https://api.example.test, in a real Chromium.

Each test is one user story on the production topology described in conftest.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, Response, expect

from tests.e2e.conftest import (
    ACCESS_TTL,
    API_HOST,
    COOKIE_DOMAIN,
    Topology,
    artifact,
    call_api,
    jar,
    log_in,
    sign_in_at_provider,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

TOKEN_COOKIES = ("access_token", "id_token", "refresh_token")


def sub_of(topology: Topology, username: str) -> str:
    user = topology.provider.user(username)
    assert user is not None
    return user.sub


def assert_not_logged(topology: Topology, *cookie_jars: dict[str, dict[str, Any]]) -> None:
    """No token or CSRF value the browser held appears in the sidecar's logs."""
    logs = topology.logs.getvalue()
    assert '"event": "request"' in logs
    for cookies in cookie_jars:
        for name, cookie in cookies.items():
            if name.split(".")[0] in (*TOKEN_COOKIES, "XSRF-TOKEN"):
                assert cookie["value"] not in logs, name


def record_responses(page: Page) -> list[tuple[str, str, int]]:
    """(method, path, status) of every response the page receives, in order."""
    seen: list[tuple[str, str, int]] = []

    def on_response(response: Response) -> None:
        path = response.url.split("://", 1)[1].partition("/")[2].partition("?")[0]
        seen.append((response.request.method, "/" + path, response.status))

    page.on("response", on_response)
    return seen


async def test_login_through_the_hosted_ui_leaves_only_the_csrf_token_readable_by_javascript(
    page: Page, context: BrowserContext, topology: Topology
) -> None:
    await page.goto(topology.app_url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
    await page.screenshot(path=artifact("cross-origin-before-login.png"), full_page=True)

    await page.click("#login")
    await sign_in_at_provider(page, topology.provider.issuer, "alice")
    await page.wait_for_url(topology.app_url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "signed-in")
    await expect(page.locator("#who-username")).to_have_text("alice")
    await page.screenshot(path=artifact("cross-origin-after-login.png"), full_page=True)

    visible = await page.evaluate("document.cookie")
    assert [pair.split("=", 1)[0] for pair in visible.split("; ")] == ["XSRF-TOKEN"]
    await expect(page.locator("#visible-cookies")).to_have_text("XSRF-TOKEN=" + visible[11:27] + "\u2026")

    cookies = await jar(context)
    for name in (*TOKEN_COOKIES, "XSRF-TOKEN"):
        cookie = cookies[name]
        # Only the CSRF cookie is shared with the SPA's host; the tokens stay on the API host.
        assert cookie["domain"] == (f".{COOKIE_DOMAIN}" if name == "XSRF-TOKEN" else API_HOST), name
        assert cookie["secure"] is True, name
        assert cookie["sameSite"] == "Lax", name
        assert cookie["httpOnly"] is (name != "XSRF-TOKEN"), name
        assert cookie["path"] == ("/auth" if name == "refresh_token" else "/"), name
    assert "authsidecar_tx" not in cookies  # the login transaction is over
    # Nothing the sidecar set is visible to the page besides the CSRF token, and no token value is.
    for name in TOKEN_COOKIES:
        assert cookies[name]["value"] not in visible


async def test_the_spas_credentialed_calls_reach_the_app_with_the_users_identity(
    page: Page, topology: Topology
) -> None:
    await log_in(page, topology, "alice")

    echo = await call_api(page, "#call-get")
    assert echo["method"] == "GET"
    assert echo["path"] == "/api/hello"
    assert echo["identity"]["X-User-Id"] == sub_of(topology, "alice")
    assert echo["identity"]["X-User-Groups"] == "admins,users"
    assert echo["identity"]["X-User-Email"] == "alice@example.com"
    assert echo["headers"]["Origin"] == topology.app
    # The sidecar's cookies never reach the app.
    assert not any(name in echo["headers"].get("Cookie", "") for name in (*TOKEN_COOKIES, "XSRF-TOKEN"))
    rows = page.locator("#api-identity tbody tr")
    await expect(rows.filter(has_text="X-User-Groups")).to_contain_text("admins,users")

    echo = await call_api(page, "#call-post")
    assert echo["method"] == "POST"
    assert echo["path"] == "/api/items"
    assert echo["identity"]["X-User-Id"] == sub_of(topology, "alice")
    assert echo["body_length"] > 0
    assert topology.upstream_hits("/api/items") == 1


async def test_a_post_from_the_spa_without_the_csrf_header_is_refused(page: Page, topology: Topology) -> None:
    await log_in(page, topology, "alice")

    answers: list[dict[str, Any]] = await page.evaluate(
        """async (url) => {
            const results = [];
            for (const headers of [{}, {'X-XSRF-TOKEN': 'forged.value'}]) {
                const response = await fetch(url, {
                    method: 'POST', credentials: 'include', body: '{}',
                    headers: Object.assign({'Content-Type': 'application/json'}, headers),
                });
                results.push({status: response.status, body: await response.json()});
            }
            return results;
        }""",
        f"{topology.api}/api/items",
    )
    assert answers == [
        {"status": 403, "body": {"error": "csrf_failed", "reason": "missing_header"}},
        {"status": 403, "body": {"error": "csrf_failed", "reason": "mismatch"}},
    ]
    assert topology.upstream_hits("/api/items") == 0


async def test_a_hostile_site_can_neither_read_the_api_nor_forge_writes(
    page: Page, context: BrowserContext, topology: Topology
) -> None:
    await log_in(page, topology, "alice")
    evil = await context.new_page()
    await evil.goto(topology.evil)
    api = topology.api

    # Reading: the sidecar sends no CORS headers to evil.test, so fetch() rejects.
    read = await evil.evaluate(
        """async (api) => {
            const out = {};
            for (const path of ['/api/hello', '/auth/me']) {
                try { await fetch(api + path, {credentials: 'include'}); out[path] = 'read'; }
                catch (e) { out[path] = e.name; }
            }
            return out;
        }""",
        api,
    )
    assert read == {"/api/hello": "TypeError", "/auth/me": "TypeError"}

    # Writing with fetch: a "simple" no-cors POST goes out but is refused; a JSON POST fails its preflight.
    async with evil.expect_response(f"{api}/api/transfer") as sent:
        opaque = await evil.evaluate(
            """async (api) => (await fetch(api + '/api/transfer', {
                method: 'POST', mode: 'no-cors', credentials: 'include',
                headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'amount=1000000',
            })).type""",
            api,
        )
    assert opaque == "opaque"
    # SameSite=Lax: a cross-site POST carries no session cookie at all, so nobody is signed in.
    assert (await sent.value).status == 401
    preflighted = await evil.evaluate(
        """async (api) => {
            try {
                await fetch(api + '/api/transfer', {method: 'POST', credentials: 'include',
                    headers: {'Content-Type': 'application/json'}, body: '{}'});
                return 'sent';
            } catch (e) { return e.name; }
        }""",
        api,
    )
    assert preflighted == "TypeError"

    # Writing with a form: a top-level cross-site POST navigation, refused the same way.
    async with evil.expect_response(f"{api}/api/transfer") as posted:
        await evil.evaluate("document.getElementById('forge').submit()")
    assert (await posted.value).status == 401

    assert topology.upstream_hits("/api/hello") == 0
    assert topology.upstream_hits("/api/transfer") == 0


async def test_a_same_site_attacker_who_gets_the_cookies_still_cannot_forge_a_write(
    page: Page, context: BrowserContext, topology: Topology
) -> None:
    await log_in(page, topology, "alice")
    sibling = await context.new_page()
    await sibling.goto(topology.sibling)
    api = topology.api

    # A sibling subdomain can read the parent-domain CSRF cookie, but cannot send it as a header:
    # the preflight from its origin is refused.
    stolen = await sibling.evaluate(
        """async (api) => {
            const token = document.cookie.split('; ').find(c => c.startsWith('XSRF-TOKEN='));
            try {
                await fetch(api + '/api/transfer', {method: 'POST', credentials: 'include', body: '{}',
                    headers: {'X-XSRF-TOKEN': token.slice(11), 'Content-Type': 'application/json'}});
                return 'sent';
            } catch (e) { return e.name; }
        }""",
        api,
    )
    assert stolen == "TypeError"

    # Its form POST is same-site, so the session cookies do go along: the CSRF check refuses it.
    async with sibling.expect_response(f"{api}/api/transfer") as posted:
        await sibling.evaluate("document.getElementById('forge').submit()")
    response = await posted.value
    assert response.status == 403
    assert await response.json() == {"error": "csrf_failed", "reason": "origin"}
    assert topology.upstream_hits("/api/transfer") == 0


async def test_an_expired_access_token_is_refreshed_transparently_and_the_cookies_rotate(
    page: Page, context: BrowserContext, topology: Topology
) -> None:
    await log_in(page, topology, "alice")
    before = await jar(context)
    topology.clock.advance(ACCESS_TTL + topology.settings.oidc.leeway + 1)
    responses = record_responses(page)

    echo = await call_api(page, "#call-get")

    assert echo["identity"]["X-User-Id"] == sub_of(topology, "alice")
    exchanged = [r for r in responses if r[1] in ("/api/hello", "/auth/refresh") and r[0] != "OPTIONS"]
    assert exchanged == [
        ("GET", "/api/hello", 401),
        ("POST", "/auth/refresh", 200),
        ("GET", "/api/hello", 200),
    ]
    assert topology.provider.calls["token:refresh_token"] == 1
    after = await jar(context)
    assert after["access_token"]["value"] != before["access_token"]["value"]
    assert after["refresh_token"]["value"] != before["refresh_token"]["value"]  # rotated by the provider
    assert not topology.provider.refresh_token_is_live(before["refresh_token"]["value"])
    assert topology.provider.refresh_token_is_live(after["refresh_token"]["value"])
    # The CSRF token is still valid for the same user: kept, so requests already built keep working.
    assert after["XSRF-TOKEN"]["value"] == before["XSRF-TOKEN"]["value"]

    echo = await call_api(page, "#call-post")
    assert echo["method"] == "POST"
    assert topology.provider.calls["token:refresh_token"] == 1
    assert_not_logged(topology, before, after)


async def test_logout_clears_the_cookies_returns_to_the_app_and_revokes_the_refresh_token(
    page: Page, context: BrowserContext, topology: Topology
) -> None:
    await log_in(page, topology, "alice")
    signed_in = await jar(context)
    refresh_token = signed_in["refresh_token"]["value"]
    assert topology.provider.refresh_token_is_live(refresh_token)

    await page.click("#logout")
    await page.wait_for_url(topology.app_url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")

    left = [c["name"] for c in await context.cookies() if c["domain"].lstrip(".").endswith(COOKIE_DOMAIN)]
    assert left == []
    assert await page.evaluate("document.cookie") == ""
    assert not topology.provider.refresh_token_is_live(refresh_token)
    assert topology.provider.calls["revoke"] == 1
    assert topology.provider.calls["logout"] == 1
    assert_not_logged(topology, signed_in)

    # Calling the API now sends the browser to sign in again, coming back to the page.
    await page.click("#call-get")
    await page.wait_for_url(f"{topology.provider.issuer}/**")


async def test_a_6kb_id_token_survives_the_round_trip_in_chunked_cookies(
    page: Page, context: BrowserContext, topology: Topology
) -> None:
    await log_in(page, topology, "many-groups")

    await expect(page.locator("#groups-count")).to_have_text("150")
    await expect(page.locator("#who-groups li")).to_have_count(150)
    await page.screenshot(path=artifact("cross-origin-many-groups.png"), full_page=True)
    cookies = await jar(context)
    chunks = sorted(name for name in cookies if name.startswith("id_token."))
    assert len(chunks) >= 2
    assert chunks == [f"id_token.{i}" for i in range(len(chunks))]
    assert "id_token" not in cookies
    id_token = "".join(cookies[name]["value"] for name in chunks)
    assert len(id_token) > 6000
    assert all(len(name) + 1 + len(c["value"]) <= 4096 for name, c in cookies.items())

    echo = await call_api(page, "#call-get")
    assert len(echo["identity"]["X-User-Groups"].split(",")) == 150
    me = json.loads(await page.evaluate("fetch(AuthSidecar.url('/auth/me'), {credentials: 'include'})"
                                        ".then(r => r.text())"))
    assert len(me["groups"]) == 150
