"""return_to: a relative path or an allowed origin; every open-redirect trick lands on the app URL.

Each case runs the whole login (provider form included) and looks at where the callback sends the
browser, so a guard that only ran at /auth/login time, or a later rewrite of the stored value,
would both be caught.
"""

from __future__ import annotations

import pytest

from tests.flows.browser_support import set_cookie_map
from tests.flows.conftest import StackFactory

ALLOWED = "https://app.example.test"


@pytest.mark.parametrize(
    ("return_to", "expected"),
    [
        pytest.param("/dashboard?tab=1#top", "{app}/dashboard?tab=1#top", id="relative-path"),
        pytest.param("/", "{app}/", id="root"),
        pytest.param("https://app.example.test/orders/7?x=1", "https://app.example.test/orders/7?x=1",
                     id="allowed-origin"),
        pytest.param("HTTPS://APP.EXAMPLE.TEST/orders", "https://app.example.test/orders",
                     id="allowed-origin-upper-case"),
        pytest.param("https://app.example.test:443/a", "https://app.example.test/a", id="default-port"),
    ],
)
async def test_a_safe_return_to_is_where_the_login_ends(
    make_stack: StackFactory, return_to: str, expected: str
) -> None:
    stack = await make_stack(allowed_return_origins=[ALLOWED])
    browser = await stack.browser()
    answer = await stack.login(browser, "alice", return_to=return_to)
    assert answer.status == 302
    assert answer.headers["Location"] == expected.format(app=stack.base)


OPEN_REDIRECTS = [
    pytest.param("//evil.test", id="protocol-relative"),
    pytest.param("///evil.test", id="triple-slash"),
    pytest.param("//app.example.test", id="protocol-relative-to-an-allowed-host"),
    pytest.param("https:evil.test", id="scheme-without-slashes"),
    pytest.param("https:/evil.test", id="scheme-one-slash"),
    pytest.param("/\\evil.test", id="slash-backslash"),
    pytest.param("\\\\evil.test", id="double-backslash"),
    pytest.param("\\/evil.test", id="backslash-slash"),
    pytest.param("/%5Cevil.test", id="encoded-backslash"),
    pytest.param("/%5cevil.test", id="encoded-backslash-lower-case"),
    pytest.param("%2F%2Fevil.test", id="encoded-double-slash"),
    pytest.param("/%2Fevil.test", id="slash-then-encoded-slash"),
    pytest.param("/%2fevil.test", id="slash-then-encoded-slash-lower-case"),
    pytest.param("/%252F%252Fevil.test", id="double-encoded-slashes"),
    pytest.param("/%25252F/evil.test", id="triple-encoded-slash"),
    pytest.param("/%09/evil.test", id="encoded-tab"),
    pytest.param("/\t/evil.test", id="raw-tab"),
    pytest.param(" //evil.test", id="leading-space"),
    pytest.param("https://evil.test/", id="foreign-origin"),
    pytest.param("HtTpS://EvIl.TeSt/", id="foreign-origin-mixed-case"),
    pytest.param("http://app.example.test/", id="allowed-host-wrong-scheme"),
    pytest.param("https://app.example.test:8443/", id="allowed-host-wrong-port"),
    pytest.param("https://app.example.test@evil.test", id="userinfo-allowed-host"),
    pytest.param("https://app.example.test%40evil.test", id="encoded-at"),
    pytest.param("https://evil.test#@app.example.test", id="fragment-at"),
    pytest.param("https://evil.test\\@app.example.test", id="backslash-at"),
    pytest.param("https://app.example.test.evil.test/", id="allowed-host-as-prefix"),
    pytest.param("https://\u0430pp.example.test/", id="idn-look-alike"),
    pytest.param("https://app.example.test/%2F%2Fevil.test", id="allowed-origin-encoded-path"),
    pytest.param("https://app.example.test//evil.test", id="allowed-origin-double-slash-path"),
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("JaVaScRiPt:alert(1)", id="javascript-mixed-case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data-url"),
    pytest.param("evil.test", id="bare-host"),
    pytest.param("/" + "a" * 3000, id="too-long"),
]


@pytest.mark.parametrize("return_to", OPEN_REDIRECTS)
async def test_an_open_redirect_attempt_lands_on_the_app_url_after_the_whole_login(
    make_stack: StackFactory, return_to: str
) -> None:
    stack = await make_stack(allowed_return_origins=[ALLOWED])
    browser = await stack.browser()
    answer = await stack.login(browser, "alice", return_to=return_to)
    assert answer.status == 302
    assert answer.headers["Location"] == stack.settings.app_url
    assert set_cookie_map(answer)["access_token"].value
