"""nginx ``auth_request`` and Caddy ``forward_auth`` in front of an app, the sidecar deciding.

A client with a cookie jar plays the browser (``tests/gateways/test_browser_nginx.py`` drives a real
one through nginx): it only ever talks to the gateway.
"""

from __future__ import annotations

import jwt
import pytest
from yarl import URL

from sidecar.auth.assertion import JWKS_PATH
from tests.gateways.support import Gateway, GatewayFactory

KINDS = [pytest.param("nginx", id="nginx"), pytest.param("caddy", id="caddy")]


async def log_in(gateway: Gateway, user: str, path: str = "/orders/7?tab=a%26b") -> dict[str, object]:
    """Ask for an app page, get sent to log in, sign in, land on the page: its echo."""
    browser = await gateway.browser()
    form = await browser.get(gateway.url(path))
    landed = await gateway.sign_in(browser, form, user)
    assert landed.status == 200, await landed.text()
    assert str(landed.url) == gateway.url(path)
    echo: dict[str, object] = await landed.json()
    return echo


@pytest.mark.parametrize("kind", KINDS)
async def test_a_browser_logs_in_through_the_gateway_and_the_app_gets_its_identity(
    make_gateway: GatewayFactory, kind: str,
) -> None:
    gateway = await make_gateway(kind)

    echo = await log_in(gateway, "alice")

    alice = gateway.provider.user("alice")
    assert alice is not None
    identity = echo["identity"]
    assert identity == {"X-User-Id": alice.sub, "X-User-Email": "alice@example.com",
                        "X-User-Groups": "admins,users", "X-User-Name": "alice"}
    assert echo["path"] == "/orders/7"
    assert echo["query"] == {"tab": ["a&b"]}


@pytest.mark.parametrize("kind", KINDS)
async def test_the_first_request_without_a_session_is_sent_to_the_sidecars_login(
    make_gateway: GatewayFactory, kind: str,
) -> None:
    gateway = await make_gateway(kind)
    browser = await gateway.browser()

    answer = await browser.get(gateway.url("/orders"), allow_redirects=False)

    assert answer.status == 302
    assert answer.headers["Location"].startswith(gateway.url("/auth/login?return_to="))
    assert gateway.upstream_stats.total == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_a_path_a_rule_refuses_is_a_403_and_never_reaches_the_app(
    make_gateway: GatewayFactory, kind: str,
) -> None:
    gateway = await make_gateway(kind)
    browser = await gateway.browser()
    form = await browser.get(gateway.url("/orders"))
    assert (await gateway.sign_in(browser, form, "bob")).status == 200
    before = gateway.upstream_stats.total

    refused = await browser.get(gateway.url("/admin/users"))

    assert refused.status == 403
    assert gateway.upstream_stats.total == before


@pytest.mark.parametrize("kind", KINDS)
async def test_client_sent_identity_headers_never_reach_the_app(
    make_gateway: GatewayFactory, kind: str,
) -> None:
    gateway = await make_gateway(kind)
    browser = await gateway.browser()
    form = await browser.get(gateway.url("/orders"))
    assert (await gateway.sign_in(browser, form, "carol")).status == 200

    answer = await browser.get(gateway.url("/orders"), headers={
        "X-User-Id": "admin", "X-User-Groups": "admins", "X-User-Name": "root",
        "X-Authsidecar-Assertion": "forged",
    })

    echo = await answer.json()
    carol = gateway.provider.user("carol")
    assert carol is not None
    assert echo["identity"]["X-User-Id"] == carol.sub
    # carol has none: the client's is gone too (nginx drops the empty header, Caddy sends it empty)
    assert echo["identity"].get("X-User-Groups", "") == ""
    assert echo["identity"]["X-User-Name"] == "carol"
    assert echo["headers"]["X-Authsidecar-Assertion"] != "forged"


@pytest.mark.parametrize("kind", KINDS)
async def test_the_app_verifies_the_assertion_the_gateway_passed_on(
    make_gateway: GatewayFactory, kind: str,
) -> None:
    gateway = await make_gateway(kind)
    echo = await log_in(gateway, "alice", "/orders")
    browser = await gateway.browser()
    jwks = jwt.PyJWKSet.from_dict(await (await browser.get(gateway.sidecar + JWKS_PATH)).json())
    headers = echo["headers"]
    assert isinstance(headers, dict)
    token = headers["X-Authsidecar-Assertion"]
    key = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(token)["kid"])

    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="echo-app", issuer=gateway.base)

    assert claims["email"] == "alice@example.com"
    assert claims["groups"] == ["admins", "users"]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_app_gets_the_browsers_cookies_but_never_the_sidecars(
    make_gateway: GatewayFactory, kind: str,
) -> None:
    gateway = await make_gateway(kind)
    browser = await gateway.browser()
    form = await browser.get(gateway.url("/orders"))
    assert (await gateway.sign_in(browser, form, "alice")).status == 200
    browser.cookie_jar.update_cookies({"theme": "dark"}, URL(gateway.base))

    echo = await (await browser.get(gateway.url("/orders"))).json()

    sent = echo["headers"]["Cookie"]
    assert "theme=dark" in sent
    for name in ("access_token", "id_token", "XSRF-TOKEN"):
        assert f"{name}=" not in sent
