"""The whole flow once, end to end, as the README's demo runs it."""

from __future__ import annotations

from tests.flows.conftest import Stack


async def test_login_then_a_proxied_request_arrives_with_the_users_identity(stack: Stack) -> None:
    browser = await stack.browser()
    callback = await stack.login(browser, "alice", return_to="/dashboard?tab=1")
    assert callback.status == 302
    assert callback.headers["Location"] == stack.url("/dashboard?tab=1")

    answer = await browser.get(stack.url("/api/items"), headers={"X-User-Id": "mallory"})
    assert answer.status == 200
    echo = await answer.json()
    assert echo["identity"]["X-User-Id"] == stack.provider.user("alice").sub  # type: ignore[union-attr]
    assert echo["identity"]["X-User-Email"] == "alice@example.com"
    assert echo["identity"]["X-User-Groups"] == "admins,users"
    assert "mallory" not in str(echo["header_list"])
    assert "access_token" not in echo["headers"].get("Cookie", "")
