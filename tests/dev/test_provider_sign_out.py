from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_authorize import SESSION_COOKIE
from tests.conftest import FakeClock
from tests.dev._support import (
    ALL_SCOPES,
    CLIENT_ID,
    LOGOUT,
    authorize_params,
    exchange,
    location,
    refresh,
    sign_in,
)

Served = tuple[DevProvider, TestClient[Any, Any]]
AMZ = "application/x-amz-json-1.1"
TARGET = "AWSCognitoIdentityProviderService.GlobalSignOut"


def _cookies(client: TestClient[Any, Any]) -> set[str]:
    return {cookie.key for cookie in client.session.cookie_jar}


async def _global_sign_out(client: TestClient[Any, Any], body: Any, target: str = TARGET) -> Any:
    headers = {"X-Amz-Target": target, "Content-Type": AMZ}
    return await client.post("/", data=json.dumps(body), headers=headers)


async def test_logout_redirects_to_a_registered_uri_and_ends_the_session(served: Served) -> None:
    provider, client = served
    await sign_in(client)
    assert SESSION_COOKIE in _cookies(client)
    answer = await client.get(
        "/logout", params={"client_id": CLIENT_ID, "logout_uri": LOGOUT}, allow_redirects=False
    )
    assert location(answer) == URL(LOGOUT)
    assert SESSION_COOKIE not in _cookies(client)
    assert not provider.ledger.sessions
    # The next authorize shows the form again.
    page = await client.get("/oauth2/authorize", params=authorize_params(), allow_redirects=False)
    assert page.status == 200
    assert provider.calls["logout"] == 1


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"client_id": CLIENT_ID, "logout_uri": "https://evil.example/"}, id="unregistered"),
        pytest.param({"client_id": CLIENT_ID, "logout_uri": LOGOUT + "/"}, id="not-exact"),
        pytest.param({"client_id": CLIENT_ID}, id="missing-logout-uri"),
        pytest.param({"logout_uri": LOGOUT}, id="missing-client"),
        pytest.param({"client_id": "other", "logout_uri": LOGOUT}, id="unknown-client"),
    ],
)
async def test_logout_refuses_what_is_not_registered(served: Served, params: dict[str, str]) -> None:
    _, client = served
    answer = await client.get("/logout", params=params, allow_redirects=False)
    assert answer.status == 400
    assert "Location" not in answer.headers


async def test_oidc_end_session_with_an_id_token_hint_returns_state(served: Served, clock: FakeClock) -> None:
    provider, client = served
    body = await (await exchange(client, await sign_in(client))).json()
    clock.advance(7200)  # an expired hint is still a valid hint
    params = {"id_token_hint": body["id_token"], "post_logout_redirect_uri": LOGOUT, "state": "bye"}
    target = location(await client.get("/oauth2/logout", params=params, allow_redirects=False))
    assert target.with_query(None) == URL(LOGOUT)
    assert target.query["state"] == "bye"
    assert SESSION_COOKIE not in _cookies(client)
    assert provider.calls["end_session"] == 1


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"post_logout_redirect_uri": LOGOUT}, id="no-hint-no-client"),
        pytest.param(
            {"client_id": CLIENT_ID, "post_logout_redirect_uri": "https://evil.example/"}, id="unregistered"
        ),
        pytest.param({"id_token_hint": "not.a.token", "post_logout_redirect_uri": LOGOUT}, id="bad-hint"),
    ],
)
async def test_oidc_end_session_refusals(served: Served, params: dict[str, str]) -> None:
    _, client = served
    answer = await client.get("/oauth2/logout", params=params, allow_redirects=False)
    assert answer.status == 400
    assert "Location" not in answer.headers


async def test_oidc_end_session_refuses_an_access_token_as_hint(served: Served) -> None:
    provider, client = served
    params = {"id_token_hint": provider.mint_access_token("alice"), "post_logout_redirect_uri": LOGOUT}
    assert (await client.get("/oauth2/logout", params=params, allow_redirects=False)).status == 400


async def test_oidc_end_session_without_a_target_shows_a_page(served: Served) -> None:
    _, client = served
    answer = await client.get("/oauth2/logout", allow_redirects=False)
    assert answer.status == 200
    assert "Signed out" in await answer.text()


async def test_userinfo_returns_cognito_attributes(served: Served) -> None:
    provider, client = served
    body = await (await exchange(client, await sign_in(client))).json()
    answer = await client.get("/oauth2/userInfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert answer.status == 200
    alice = provider.user("alice")
    assert alice is not None
    assert await answer.json() == {
        "sub": alice.sub,
        "email_verified": "true",  # Cognito's userInfo sends strings
        "email": "alice@example.com",
        "username": "alice",
        "name": "Alice Example",
    }
    assert provider.calls["userinfo"] == 1


async def test_userinfo_follows_the_scopes(served: Served) -> None:
    provider, client = served
    token = provider.mint_access_token("bob", scope="openid")
    answer = await client.post("/oauth2/userInfo", headers={"Authorization": f"Bearer {token}"})
    assert set(await answer.json()) == {"sub", "username"}
    token = provider.mint_access_token("bob", scope="email")
    answer = await client.get("/oauth2/userInfo", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 403


async def test_userinfo_refuses_expired_revoked_and_foreign_tokens(served: Served, clock: FakeClock) -> None:
    provider, client = served
    expired = provider.mint_access_token("alice")
    id_token = provider.mint_id_token("alice")
    clock.advance(3600)
    cases = {
        "missing": {},
        "not-bearer": {"Authorization": "Basic abc"},
        "garbage": {"Authorization": "Bearer abc.def.ghi"},
        "expired": {"Authorization": f"Bearer {expired}"},
        "id-token": {"Authorization": f"Bearer {id_token}"},
        "unknown-family": {"Authorization": "Bearer " + provider.sign({"token_use": "access", "exp": 2**40})},
    }
    for name, headers in cases.items():
        answer = await client.get("/oauth2/userInfo", headers=headers)
        assert answer.status == 401, name
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), name


async def test_global_sign_out_revokes_every_session_of_the_user(served: Served) -> None:
    provider, client = served
    first = provider.issue_tokens("alice")
    second = provider.issue_tokens("alice")
    bobs = provider.issue_tokens("bob")
    answer = await _global_sign_out(client, {"AccessToken": first["access_token"]})
    assert answer.status == 200
    assert answer.content_type == AMZ
    assert await answer.json(content_type=AMZ) == {}
    for tokens in (first, second):
        assert await (await refresh(client, tokens["refresh_token"])).json() == {
            "error": "invalid_grant",
            "error_description": "Invalid Refresh Token",
        }
    assert (await refresh(client, bobs["refresh_token"])).status == 200
    again = await _global_sign_out(client, {"AccessToken": second["access_token"]})
    assert (await again.json(content_type=AMZ))["__type"] == "NotAuthorizedException"
    assert provider.calls["global_sign_out"] == 2


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param({"AccessToken": "abc.def.ghi"}, "NotAuthorizedException", id="garbage-token"),
        pytest.param({}, "InvalidParameterException", id="missing-token"),
        pytest.param(["AccessToken"], "InvalidParameterException", id="not-an-object"),
    ],
)
async def test_global_sign_out_refusals(served: Served, body: Any, kind: str) -> None:
    _, client = served
    answer = await _global_sign_out(client, body)
    assert answer.status == 400
    assert (await answer.json(content_type=AMZ))["__type"] == kind


async def test_global_sign_out_needs_the_admin_scope(served: Served) -> None:
    provider, client = served
    token = provider.mint_access_token("alice", scope="openid email")
    answer = await _global_sign_out(client, {"AccessToken": token})
    body = await answer.json(content_type=AMZ)
    assert (answer.status, body["__type"]) == (400, "NotAuthorizedException")
    assert "scopes" in body["message"]
    assert ALL_SCOPES.endswith("aws.cognito.signin.user.admin")


async def test_the_json_api_serves_only_global_sign_out(served: Served) -> None:
    provider, client = served
    token = provider.mint_access_token("alice")
    answer = await _global_sign_out(
        client, {"AccessToken": token}, target="AWSCognitoIdentityProviderService.GetUser"
    )
    assert (await answer.json(content_type=AMZ))["__type"] == "UnknownOperationException"
    wrong_type = await client.post(
        "/",
        data=json.dumps({"AccessToken": token}),
        headers={"X-Amz-Target": TARGET, "Content-Type": "application/json"},
    )
    assert (await wrong_type.json(content_type=AMZ))["__type"] == "SerializationException"
