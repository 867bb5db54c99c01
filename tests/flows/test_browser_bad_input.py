"""Odd bytes at every /auth/* door: each gets its exact answer, never a 500."""

from __future__ import annotations

import pytest
from yarl import URL

from tests.flows.browser_support import new_browser, query_of, set_cookie_map, start_login, transaction
from tests.flows.conftest import Stack


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "reason"),
    [
        pytest.param("GET", "/auth/callback?code=x&state=%FF%FE", {}, 400, "malformed",
                     id="callback-state-not-utf8"),
        pytest.param("GET", "/auth/callback?code=x&state=" + "a" * 10000, {}, 400, "malformed",
                     id="callback-state-10k"),
        pytest.param("GET", "/auth/callback?code=x&state=a&state=b", {}, 400, "state_mismatch",
                     id="callback-state-twice"),
        pytest.param("GET", "/auth/callback?code=%00&state=%00", {}, 400, "malformed",
                     id="callback-nul-bytes"),
        pytest.param("GET", "/auth/callback?code=x&state=%7B%22__proto__%22%3A1%7D", {}, 400,
                     "malformed", id="callback-state-json"),
        pytest.param("POST", "/auth/refresh", {"X-XSRF-TOKEN": "\u00e9\u00e9", "Origin": "{base}"}, 403,
                     "mismatch", id="refresh-non-ascii-csrf-header"),
        pytest.param("POST", "/auth/refresh", {"X-XSRF-TOKEN": "{xsrf}", "Origin": "http://[::1"}, 403,
                     "origin", id="refresh-origin-unparseable"),
        pytest.param("POST", "/auth/refresh", {"X-XSRF-TOKEN": "{xsrf}", "Origin": "http://127.0.0.1:99999"},
                     403, "origin", id="refresh-origin-port-out-of-range"),
        pytest.param("POST", "/auth/logout", {"X-XSRF-TOKEN": "{xsrf}", "Origin": "http://[::1"}, 403,
                     "origin", id="logout-post-origin-unparseable"),
        pytest.param("GET", "/auth/login?return_to=%FF", {}, 302, None, id="login-return-to-not-utf8"),
        pytest.param("GET", "/auth/login?return_to=%C0%AF%C0%AFevil.test", {}, 302, None,
                     id="login-return-to-overlong-utf8-slashes"),
        pytest.param("GET", "/auth/login?lang=%FF&prompt=%00", {}, 302, None, id="login-passthrough-junk"),
        pytest.param("GET", "/auth/logout", {"Referer": "http://[::1"}, 200, None,
                     id="logout-referer-unparseable-asks"),
        pytest.param("GET", "/auth/logout", {"Origin": "http://127.0.0.1:99999"}, 200, None,
                     id="logout-origin-port-out-of-range-asks"),
    ],
)
async def test_odd_input_gets_its_exact_answer(
    stack: Stack, method: str, target: str, headers: dict[str, str], status: int, reason: str | None
) -> None:
    browser = await new_browser(stack)
    await stack.login(browser, "alice")
    await start_login(stack, browser)  # a pending login: a bad state is a mismatch, not a missing cookie
    xsrf = stack.cookie(browser, "XSRF-TOKEN") or ""
    sent = {k: v.format(base=stack.base, xsrf=xsrf) for k, v in headers.items()}

    answer = await browser.request(method, URL(stack.url(target), encoded=True), headers=sent,
                                   allow_redirects=False)

    assert answer.status == status, await answer.text()
    if reason is not None:
        assert (await answer.json())["reason"] == reason
    if target.startswith("/auth/login"):
        query = query_of(answer.headers["Location"])
        assert "lang" not in query
        assert "prompt" not in query
        pending = transaction(stack, set_cookie_map(answer)["authsidecar_tx"].value)["tx"]
        assert pending[query["state"]]["return_to"] == stack.settings.app_url
    if target.startswith("/auth/logout") and method == "GET":
        assert stack.provider.calls["revoke"] == 0
