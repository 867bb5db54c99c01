"""Forward-auth over real HTTP: ``/auth/verify`` judged like the proxy, on the gateway's original request.

A test client plays the gateway (from 127.0.0.1, a trusted proxy where the test says so) and sends
the browser's cookies on, as nginx's ``auth_request`` does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from yarl import URL

from sidecar.auth.assertion import JWKS_PATH
from tests.flows.browser_support import AUTH_COOKIES, csrf_headers, set_cookie_map
from tests.flows.conftest import Stack, StackFactory

VERIFY = "/auth/verify"
APP = "http://app.example.test"
RULES = [{"path": "/admin/**", "groups_any": ["admins"]}]
NAVIGATION = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
PAST_EXPIRY = 3600 + 120


def new_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


async def gateway_stack(make_stack: StackFactory, **overrides: Any) -> Stack:
    overrides.setdefault("trusted_proxies", ["127.0.0.1/32"])
    overrides.setdefault("rules", RULES)
    overrides.setdefault("allowed_return_origins", [APP])
    return await make_stack(**overrides)


async def logged_in(stack: Stack, user: str = "alice") -> aiohttp.ClientSession:
    browser = await stack.browser()
    assert (await stack.login(browser, user)).status == 302
    return browser


def original(uri: str, method: str = "GET") -> dict[str, str]:
    return {"X-Original-URI": uri, "X-Original-Method": method}


async def test_a_signed_in_browser_is_let_through_with_its_identity_in_the_answer(
    make_stack: StackFactory,
) -> None:
    stack = await gateway_stack(make_stack)
    browser = await logged_in(stack)

    answer = await browser.get(stack.url(VERIFY), headers=original("/orders/7?tab=2"))

    assert answer.status == 200
    alice = stack.provider.user("alice")
    assert alice is not None
    assert answer.headers["X-User-Id"] == alice.sub
    assert answer.headers["X-User-Email"] == "alice@example.com"
    assert answer.headers["X-User-Groups"] == "admins,users"
    assert answer.headers["X-Auth-Request-User"] == alice.sub
    assert answer.headers["X-Auth-Request-Email"] == "alice@example.com"
    assert answer.headers["X-Auth-Request-Groups"] == "admins,users"
    assert answer.headers["X-Auth-Request-Preferred-Username"] == "alice"
    assert "X-Auth-Request-Access-Token" not in answer.headers
    assert answer.headers["Cache-Control"] == "no-store"
    assert await answer.read() == b""


async def test_the_access_token_is_in_the_answer_only_when_forwarding_is_configured(
    make_stack: StackFactory,
) -> None:
    stack = await gateway_stack(make_stack, identity_headers={"forward_access_token": True})
    browser = await logged_in(stack)

    answer = await browser.get(stack.url(VERIFY), headers=original("/"))

    assert answer.headers["X-Auth-Request-Access-Token"] == stack.cookie(browser, "access_token")


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="api-client"),
    pytest.param(NAVIGATION, id="navigation"),
])
async def test_no_credentials_get_a_401_naming_the_login_url_never_a_redirect(
    make_stack: StackFactory, client: aiohttp.ClientSession, headers: dict[str, str],
) -> None:
    stack = await gateway_stack(make_stack)

    answer = await client.get(stack.url(VERIFY), allow_redirects=False, headers={
        **headers, **original("/orders/7?tab=a%26b"),
        "X-Forwarded-Host": "app.example.test", "X-Forwarded-Proto": "http",
    })

    assert answer.status == 401
    assert (await answer.json())["error"] == "unauthorized"
    assert "Location" not in answer.headers
    login = answer.headers["X-Authsidecar-Login"]
    assert login.startswith(stack.url("/auth/login?return_to="))
    assert parse_qs(urlsplit(login).query)["return_to"] == [f"{APP}/orders/7?tab=a%26b"]


async def test_the_login_url_brings_the_browser_back_to_the_gateways_absolute_url(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await gateway_stack(make_stack)
    denied = await client.get(stack.url(VERIFY), headers={
        **original("/orders/7?tab=2"), "X-Forwarded-Host": "app.example.test", "X-Forwarded-Proto": "http",
    })
    login = denied.headers["X-Authsidecar-Login"]
    browser = await stack.browser()

    callback = await stack.login(browser, return_to=parse_qs(urlsplit(login).query)["return_to"][0])

    assert callback.headers["Location"] == f"{APP}/orders/7?tab=2"


async def test_a_return_to_on_an_origin_not_allowed_lands_on_the_app_url(make_stack: StackFactory) -> None:
    stack = await gateway_stack(make_stack)
    browser = await stack.browser()

    callback = await stack.login(browser, return_to="http://evil.test/orders")

    assert callback.headers["Location"] == stack.settings.app_url


async def test_a_rule_that_refuses_the_original_path_is_a_403(make_stack: StackFactory) -> None:
    stack = await gateway_stack(make_stack)
    bob = await logged_in(stack, "bob")

    refused = await bob.get(stack.url(VERIFY), headers=original("/admin/users"))
    allowed = await bob.get(stack.url(VERIFY), headers=original("/orders"))

    assert refused.status == 403
    assert (await refused.json())["error"] == "forbidden"
    assert allowed.status == 200


async def test_the_forwarded_uri_names_of_traefik_and_caddy_are_read_too(make_stack: StackFactory) -> None:
    stack = await gateway_stack(make_stack)
    bob = await logged_in(stack, "bob")

    refused = await bob.get(stack.url(VERIFY), headers={"X-Forwarded-Uri": "/admin/users",
                                                        "X-Forwarded-Method": "GET"})

    assert refused.status == 403


async def test_ingress_nginxs_absolute_original_url_is_read_too(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await gateway_stack(make_stack)
    bob = await logged_in(stack, "bob")
    url = {"X-Original-URL": f"{APP}/admin/users?x=1", "X-Original-Method": "GET"}

    refused = await bob.get(stack.url(VERIFY), headers=url)
    anonymous = await client.get(stack.url(VERIFY), headers=url)

    assert refused.status == 403
    assert anonymous.status == 401
    login = anonymous.headers["X-Authsidecar-Login"]
    assert parse_qs(urlsplit(login).query)["return_to"] == [f"{APP}/admin/users?x=1"]


async def test_envoys_original_path_after_the_verify_path_is_read_too(make_stack: StackFactory) -> None:
    stack = await gateway_stack(make_stack)
    bob = await logged_in(stack, "bob")

    refused = await bob.get(stack.url(VERIFY + "/admin/users?x=1"))
    allowed = await bob.get(stack.url(VERIFY + "/orders/7?x=1"))
    dotted = await bob.get(URL(stack.url(VERIFY + "/a/%2e%2e/admin"), encoded=True))

    assert refused.status == 403
    assert allowed.status == 200
    assert dotted.status == 400


async def test_the_original_uri_of_an_untrusted_peer_is_ignored(make_stack: StackFactory) -> None:
    stack = await gateway_stack(make_stack, trusted_proxies=[])
    bob = await logged_in(stack, "bob")

    for claimed in (original("/admin/users"), {"X-Forwarded-Uri": "/admin/users"},
                    {"X-Original-URL": f"{APP}/admin/users"}):
        answer = await bob.get(stack.url(VERIFY), headers=claimed)
        # The rule saw the real path (/auth/verify), not the claimed one.
        assert answer.status == 200, claimed
    # Nor is a path after /auth/verify read as the original one.
    assert (await bob.get(stack.url(VERIFY + "/admin/users"))).status == 200


async def test_a_public_original_path_passes_without_credentials(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await gateway_stack(make_stack, public_paths=["/static/**"])

    answer = await client.get(stack.url(VERIFY), headers=original("/static/app.js"))

    assert answer.status == 200
    assert "X-User-Id" not in answer.headers


@pytest.mark.parametrize(("headers", "reason"), [
    pytest.param(original("/orders%0D%0ASet-Cookie:%20x=1"), "bad_original_uri", id="encoded-crlf"),
    pytest.param(original("/orders%00"), "bad_original_uri", id="encoded-nul"),
    pytest.param(original("/public/../admin"), "ambiguous_path", id="dot-dot"),
    pytest.param(original("/public/%2e%2e/admin"), "ambiguous_path", id="encoded-dot-dot"),
    pytest.param(original("/./admin"), "ambiguous_path", id="dot"),
    pytest.param(original("/" + "a" * 9000), "original_uri_too_long", id="huge"),
    pytest.param(original("http://app.example.test/admin"), "bad_original_uri", id="absolute-form"),
    pytest.param(original("/orders\tx"), "bad_original_uri", id="raw-tab"),
    pytest.param(original("/orders", method="GET /x"), "bad_original_method", id="bad-method"),
    pytest.param({"X-Forwarded-Uri": "/a/../admin"}, "ambiguous_path", id="forwarded-uri-dot-dot"),
    pytest.param({"X-Original-URL": f"{APP}/a/../admin"}, "ambiguous_path", id="original-url-dot-dot"),
    pytest.param({"X-Original-URL": "javascript:alert(1)"}, "bad_original_uri", id="original-url-scheme"),
    pytest.param({"X-Original-URL": "http://user@app.example.test/"}, "bad_original_uri",
                 id="original-url-userinfo"),
    pytest.param({"X-Original-URL": f"{APP}/" + "a" * 9000}, "original_uri_too_long", id="original-url-huge"),
])
async def test_an_original_uri_that_cannot_be_judged_is_a_400(
    make_stack: StackFactory, headers: dict[str, str], reason: str,
) -> None:
    stack = await gateway_stack(make_stack)
    browser = await logged_in(stack)

    answer = await browser.get(stack.url(VERIFY), headers=headers)

    assert answer.status == 400
    assert await answer.json() == {"error": "bad_request", "reason": reason}


async def test_an_unsafe_original_method_with_cookies_needs_the_csrf_token(make_stack: StackFactory) -> None:
    stack = await gateway_stack(make_stack)
    browser = await logged_in(stack)

    # nginx's subrequest may be a GET; the original POST decides.
    forged = await browser.get(stack.url(VERIFY), headers={**original("/orders", "POST"),
                                                           "Origin": stack.base})
    passed = await browser.get(stack.url(VERIFY), headers={**original("/orders", "POST"),
                                                           **csrf_headers(stack, browser)})
    safe = await browser.get(stack.url(VERIFY), headers=original("/orders", "GET"))

    assert forged.status == 403
    assert (await forged.json())["error"] == "csrf_failed"
    assert passed.status == 200
    assert safe.status == 200


async def test_a_cross_site_unsafe_original_request_is_refused_even_with_the_token(
    make_stack: StackFactory,
) -> None:
    stack = await gateway_stack(make_stack)
    browser = await logged_in(stack)

    answer = await browser.get(stack.url(VERIFY), headers={
        **original("/orders", "DELETE"), **csrf_headers(stack, browser, origin="https://evil.test"),
    })

    assert answer.status == 403


async def test_an_expired_session_is_renewed_and_the_new_cookies_ride_on_the_200(
    make_stack: StackFactory,
) -> None:
    stack = await gateway_stack(make_stack, cookies={"refresh_token_path": "/"})
    browser = await logged_in(stack)
    old = stack.cookie(browser, "access_token")
    stack.clock.advance(PAST_EXPIRY)

    answer = await browser.get(stack.url(VERIFY), headers=original("/orders"))

    assert answer.status == 200
    renewed = set_cookie_map(answer)
    assert renewed["access_token"].value not in ("", old)
    assert set(renewed) <= set(AUTH_COOKIES)
    assert stack.provider.calls["token:refresh_token"] == 1


async def test_verify_answers_every_method_a_gateway_may_use(make_stack: StackFactory) -> None:
    stack = await gateway_stack(make_stack)
    browser = await logged_in(stack)

    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        answer = await browser.request(method, stack.url(VERIFY),
                                       headers={**original("/orders"), **csrf_headers(stack, browser)})
        assert answer.status == 200, method


# -- the signed assertion ---------------------------------------------------------------------------


async def assertion_stack(make_stack: StackFactory, **overrides: Any) -> Stack:
    return await gateway_stack(make_stack, identity_headers={"assertion": {
        "enabled": True, "audience": "orders", "signing_key": new_key(), "secondary_key": new_key(),
    }}, **overrides)


def check_assertion(stack: Stack, token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
    key = keys[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["ES256"], audience="orders",
                                        issuer=stack.base)
    return claims


async def test_the_assertion_rides_on_proxied_requests_and_verifies_from_both_ports(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await assertion_stack(make_stack)
    browser = await logged_in(stack)
    public = await (await client.get(stack.url(JWKS_PATH))).json()
    admin = await (await client.get(stack.admin + JWKS_PATH)).json()

    echo = await (await browser.get(stack.url("/api/items"),
                                    headers={"X-Authsidecar-Assertion": "forged"})).json()
    verified = await browser.get(stack.url(VERIFY), headers=original("/orders"))

    assert public == admin
    assert len(public["keys"]) == 2
    assert not any("d" in key for key in public["keys"])
    sent = [v for n, v in echo["header_list"] if n.lower() == "x-authsidecar-assertion"]
    assert len(sent) == 1
    assert sent[0] != "forged"
    claims = check_assertion(stack, sent[0], public)
    assert claims["sub"] == stack.provider.user("alice").sub  # type: ignore[union-attr]
    assert claims["email"] == "alice@example.com"
    assert claims["exp"] - claims["iat"] <= 60
    assert check_assertion(stack, verified.headers["X-Authsidecar-Assertion"], public)["groups"] == [
        "admins", "users"]


async def test_a_client_sent_assertion_never_reaches_the_app_even_with_assertions_off(stack: Stack) -> None:
    browser = await logged_in(stack)

    echo = await (await browser.get(stack.url("/api/items"), headers={
        "X-Authsidecar-Assertion": "forged", "X_Authsidecar_Assertion": "forged"})).json()

    assert not [n for n, _ in echo["header_list"] if "assertion" in n.lower()]


# -- no upstream ------------------------------------------------------------------------------------


async def test_without_an_upstream_only_the_sidecars_own_routes_answer(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await assertion_stack(make_stack, upstream=None)
    browser = await logged_in(stack)

    elsewhere = await browser.get(stack.url("/api/items"))
    verified = await browser.get(stack.url(VERIFY), headers=original("/api/items"))
    me = await browser.get(stack.url("/auth/me"))
    jwks = await client.get(stack.url(JWKS_PATH))
    ready = await client.get(stack.admin + "/readyz")

    assert elsewhere.status == 404
    assert await elsewhere.json() == {"error": "not_found", "reason": "not_found"}
    assert stack.upstream_stats.total == 0
    assert verified.status == 200
    assert me.status == 200
    assert jwks.status == 200
    assert ready.status == 200


async def test_every_identity_header_is_named_also_when_the_identity_has_no_value(
    make_stack: StackFactory,
) -> None:
    stack = await gateway_stack(make_stack)
    carol = await logged_in(stack, "carol")  # in no group

    answer = await carol.get(stack.url(VERIFY), headers=original("/orders"))

    # Present and empty: a gateway copying the header replaces whatever the client sent.
    assert answer.headers.getall("X-User-Groups") == [""]
    assert answer.headers.getall("X-Auth-Request-Groups") == [""]
