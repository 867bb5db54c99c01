from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_claims import at_hash
from tests.conftest import START, FakeClock
from tests.dev._support import (
    CLIENT_ID,
    REDIRECT,
    VERIFIER,
    basic,
    exchange,
    refresh,
    sign_in,
    verify,
)
from tests.dev.conftest import ProviderFactory

Served = tuple[DevProvider, TestClient[Any, Any]]


async def _error(response: Any) -> str:
    assert response.status == 400, await response.text()
    body = await response.json()
    assert set(body) == {"error", "error_description"}
    return str(body["error"])


async def test_code_flow_with_pkce_returns_cognito_shaped_tokens(served: Served) -> None:
    provider, client = served
    code = await sign_in(client)
    response = await exchange(client, code)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert set(body) == {"id_token", "access_token", "refresh_token", "expires_in", "token_type"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert body["refresh_token"].count(".") == 0  # opaque, never a JWT

    access = await verify(client, body["access_token"])
    alice = provider.user("alice")
    assert alice is not None
    assert access.header == {"alg": "RS256", "kid": provider.keys.current_kid}
    assert access.claims == {
        "sub": alice.sub,
        "cognito:groups": ["admins", "users"],
        "iss": provider.issuer,
        "version": 2,
        "client_id": CLIENT_ID,
        "origin_jti": access.claims["origin_jti"],
        "event_id": access.claims["event_id"],
        "token_use": "access",
        "scope": "openid email profile aws.cognito.signin.user.admin",
        "auth_time": int(START),
        "exp": int(START) + 3600,
        "iat": int(START),
        "jti": access.claims["jti"],
        "username": "alice",
    }
    ident = await verify(client, body["id_token"])
    assert ident.claims == {
        "at_hash": at_hash(body["access_token"]),
        "sub": alice.sub,
        "cognito:groups": ["admins", "users"],
        "email_verified": True,
        "iss": provider.issuer,
        "cognito:username": "alice",
        "nonce": "nonce-456",
        "origin_jti": access.claims["origin_jti"],
        "aud": CLIENT_ID,
        "event_id": access.claims["event_id"],
        "token_use": "id",
        "auth_time": int(START),
        "name": "Alice Example",
        "exp": int(START) + 3600,
        "iat": int(START),
        "jti": ident.claims["jti"],
        "email": "alice@example.com",
    }
    assert ident.claims["jti"] != access.claims["jti"]
    assert provider.calls["token:authorization_code"] == 1


async def test_a_user_without_groups_gets_no_groups_claim(served: Served) -> None:
    _, client = served
    body = await (
        await exchange(client, await sign_in(client, username="carol", password="carol-dev-password"))
    ).json()
    assert "cognito:groups" not in (await verify(client, body["access_token"])).claims
    ident = (await verify(client, body["id_token"])).claims
    assert "cognito:groups" not in ident
    assert ident["email_verified"] is False


async def test_without_the_openid_scope_there_is_no_id_token(served: Served) -> None:
    _, client = served
    body = await (await exchange(client, await sign_in(client, scope="email"))).json()
    assert "id_token" not in body
    assert (await verify(client, body["access_token"])).claims["scope"] == "email"


async def test_many_groups_user_has_an_id_token_over_six_kilobytes(served: Served) -> None:
    _, client = served
    code = await sign_in(client, username="many-groups", password="many-groups-password")
    body = await (await exchange(client, code)).json()
    assert len(body["id_token"]) > 6 * 1024
    assert len((await verify(client, body["id_token"])).claims["cognito:groups"]) == 150


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param("w" * 50, id="different-verifier"),
        pytest.param(VERIFIER[:-1], id="truncated-verifier"),
        pytest.param("short", id="verifier-too-short"),
        pytest.param(None, id="verifier-missing"),
    ],
)
async def test_a_wrong_pkce_verifier_is_invalid_grant_and_burns_the_code(
    served: Served, verifier: str | None
) -> None:
    _, client = served
    code = await sign_in(client)
    assert await _error(await exchange(client, code, verifier=verifier)) == "invalid_grant"
    assert await _error(await exchange(client, code)) == "invalid_grant"


async def test_a_verifier_without_a_challenge_is_refused(make_provider: ProviderFactory) -> None:
    _, client = await make_provider(require_pkce=False)
    code = await sign_in(client, code_challenge=None, code_challenge_method=None)
    assert await _error(await exchange(client, code)) == "invalid_grant"
    code = await sign_in(client, code_challenge=None, code_challenge_method=None, prompt="login")
    assert (await exchange(client, code, verifier=None)).status == 200


async def test_a_reused_code_is_refused_and_revokes_what_it_issued(served: Served) -> None:
    provider, client = served
    code = await sign_in(client)
    first = await (await exchange(client, code)).json()
    assert await _error(await exchange(client, code)) == "invalid_grant"
    # RFC 6749 §4.1.2: tokens from the replayed code stop working.
    assert await _error(await refresh(client, first["refresh_token"])) == "invalid_grant"
    userinfo = await client.get(
        "/oauth2/userInfo", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert userinfo.status == 401
    assert provider.calls["token:authorization_code"] == 2


async def test_an_expired_code_is_invalid_grant(served: Served, clock: FakeClock) -> None:
    _, client = served
    code = await sign_in(client)
    clock.advance(300)
    assert await _error(await exchange(client, code)) == "invalid_grant"


async def test_a_code_just_before_expiry_still_works(served: Served, clock: FakeClock) -> None:
    _, client = served
    code = await sign_in(client)
    clock.advance(299)
    assert (await exchange(client, code)).status == 200


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"redirect_uri": REDIRECT + "/"}, "invalid_grant", id="redirect-uri-differs"),
        pytest.param({"code": "not-a-code"}, "invalid_grant", id="unknown-code"),
        pytest.param({"client_id": "someone-else"}, "invalid_client", id="other-client"),
        pytest.param({"grant_type": "password"}, "unsupported_grant_type", id="password-grant"),
    ],
)
async def test_code_exchange_refusals(served: Served, change: dict[str, str], expected: str) -> None:
    _, client = served
    code = await sign_in(client)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "code_verifier": VERIFIER,
        **change,
    }
    assert await _error(await client.post("/oauth2/token", data=data)) == expected


async def test_token_endpoint_wants_a_form_body(served: Served) -> None:
    provider, client = served
    response = await client.post("/oauth2/token", json={"grant_type": "authorization_code"})
    assert await _error(response) == "invalid_request"
    assert provider.calls["token:unsupported"] == 1


async def test_refresh_without_rotation_returns_no_refresh_token(served: Served, clock: FakeClock) -> None:
    provider, client = served
    first = await (await exchange(client, await sign_in(client))).json()
    clock.advance(1800)
    response = await refresh(client, first["refresh_token"])
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"id_token", "access_token", "expires_in", "token_type"}
    old = (await verify(client, first["access_token"])).claims
    new = (await verify(client, body["access_token"])).claims
    assert new["origin_jti"] == old["origin_jti"]
    assert new["auth_time"] == old["auth_time"] == int(START)
    assert new["iat"] == int(START) + 1800
    assert new["jti"] != old["jti"]
    assert "nonce" not in (await verify(client, body["id_token"])).claims
    # The same refresh token keeps working.
    assert (await refresh(client, first["refresh_token"])).status == 200
    assert provider.calls["token:refresh_token"] == 2


async def test_refresh_with_rotation_invalidates_the_old_token(make_provider: ProviderFactory) -> None:
    provider, client = await make_provider(rotate_refresh_tokens=True)
    first = await (await exchange(client, await sign_in(client))).json()
    body = await (await refresh(client, first["refresh_token"])).json()
    assert body["refresh_token"] != first["refresh_token"]
    assert not provider.refresh_token_is_live(first["refresh_token"])
    assert (await refresh(client, body["refresh_token"])).status == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    make_provider: ProviderFactory,
) -> None:
    provider, client = await make_provider(rotate_refresh_tokens=True)
    first = await (await exchange(client, await sign_in(client))).json()
    second = await (await refresh(client, first["refresh_token"])).json()
    # The old token again: taken as theft (OAuth 2.0 Security BCP §4.14.2), the family is revoked.
    assert await _error(await refresh(client, first["refresh_token"])) == "invalid_grant"
    assert not provider.refresh_token_is_live(second["refresh_token"])
    assert await _error(await refresh(client, second["refresh_token"])) == "invalid_grant"


async def test_within_the_retry_grace_period_a_rotated_token_is_still_served(
    make_provider: ProviderFactory, clock: FakeClock
) -> None:
    provider, client = await make_provider(rotate_refresh_tokens=True, refresh_reuse_grace=10)
    first = await (await exchange(client, await sign_in(client))).json()
    second = await (await refresh(client, first["refresh_token"])).json()
    clock.advance(9)
    assert (await refresh(client, first["refresh_token"])).status == 200
    clock.advance(2)
    assert await _error(await refresh(client, first["refresh_token"])) == "invalid_grant"
    assert not provider.refresh_token_is_live(second["refresh_token"])


async def test_an_expired_refresh_token_is_invalid_grant(served: Served, clock: FakeClock) -> None:
    _, client = served
    first = await (await exchange(client, await sign_in(client))).json()
    clock.advance(30 * 24 * 3600)
    assert await _error(await refresh(client, first["refresh_token"])) == "invalid_grant"


async def test_revoke_then_refresh_fails_and_access_tokens_die(served: Served) -> None:
    provider, client = served
    first = await (await exchange(client, await sign_in(client))).json()
    later = await (await refresh(client, first["refresh_token"])).json()
    response = await client.post(
        "/oauth2/revoke", data={"token": first["refresh_token"], "client_id": CLIENT_ID}
    )
    assert response.status == 200
    assert await response.read() == b""
    assert await _error(await refresh(client, first["refresh_token"])) == "invalid_grant"
    for access in (first["access_token"], later["access_token"]):
        answer = await client.get("/oauth2/userInfo", headers={"Authorization": f"Bearer {access}"})
        assert answer.status == 401
    # RFC 7009 §2.2: revoking again (or anything unknown) is still 200.
    again = await client.post(
        "/oauth2/revoke", data={"token": first["refresh_token"], "client_id": CLIENT_ID}
    )
    assert again.status == 200
    assert provider.calls["revoke"] == 2


async def test_revoking_an_access_token_is_unsupported(served: Served) -> None:
    provider, client = served
    data = {"token": provider.mint_access_token("alice"), "client_id": CLIENT_ID}
    assert await _error(await client.post("/oauth2/revoke", data=data)) == "unsupported_token_type"


async def test_revoke_without_a_token_is_invalid_request(served: Served) -> None:
    _, client = served
    assert (
        await _error(await client.post("/oauth2/revoke", data={"client_id": CLIENT_ID})) == "invalid_request"
    )


async def test_issue_tokens_skips_the_browser_but_not_the_rules(served: Served) -> None:
    provider, client = served
    body = provider.issue_tokens("bob", scope="openid", nonce="abc")
    assert (await verify(client, body["id_token"])).claims["nonce"] == "abc"
    assert provider.refresh_token_is_live(body["refresh_token"])
    assert (await refresh(client, body["refresh_token"])).status == 200


async def test_minted_tokens_take_overrides_and_none_drops_a_claim(served: Served) -> None:
    provider, client = served
    token = provider.mint_access_token("bob", exp=None, scope="openid", **{"cognito:groups": ["x"]})
    claims = (await verify(client, token)).claims
    assert "exp" not in claims
    assert (claims["scope"], claims["cognito:groups"]) == ("openid", ["x"])


class TestConfidentialClient:
    SECRET = "s3cret with spaces/and:colon"

    @pytest.fixture
    async def confidential(self, make_provider: ProviderFactory) -> Served:
        return await make_provider(client_secret=self.SECRET)

    async def test_client_secret_basic_is_accepted_with_form_encoding(self, confidential: Served) -> None:
        _, client = confidential
        code = await sign_in(client)
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before Base64.
        header = basic(CLIENT_ID, "s3cret+with+spaces%2Fand%3Acolon")
        response = await exchange(client, code, headers={"Authorization": header})
        assert response.status == 200, await response.text()

    async def test_client_secret_post_is_accepted(self, confidential: Served) -> None:
        _, client = confidential
        code = await sign_in(client)
        response = await exchange(client, code, client_id=CLIENT_ID, client_secret=self.SECRET)
        assert response.status == 200

    @pytest.mark.parametrize(
        ("headers", "body"),
        [
            pytest.param(None, {"client_id": CLIENT_ID}, id="no-secret"),
            pytest.param(None, {"client_id": CLIENT_ID, "client_secret": "wrong"}, id="wrong-post"),
            pytest.param({"Authorization": basic(CLIENT_ID, "wrong")}, {}, id="wrong-basic"),
            pytest.param({"Authorization": "Basic !!!"}, {}, id="malformed-basic"),
            pytest.param({"Authorization": "Bearer abc"}, {}, id="not-basic"),
        ],
    )
    async def test_missing_or_wrong_client_credentials_are_invalid_client(
        self, confidential: Served, headers: dict[str, str] | None, body: dict[str, str]
    ) -> None:
        _, client = confidential
        code = await sign_in(client)
        assert await _error(await exchange(client, code, headers=headers, **body)) == "invalid_client"

    async def test_two_authentication_methods_at_once_are_refused(self, confidential: Served) -> None:
        _, client = confidential
        code = await sign_in(client)
        response = await exchange(
            client, code, headers={"Authorization": basic(CLIENT_ID, self.SECRET)}, client_secret=self.SECRET
        )
        assert await _error(response) == "invalid_request"

    async def test_refresh_and_revoke_need_the_secret_too(self, confidential: Served) -> None:
        _, client = confidential
        auth = {"Authorization": basic(CLIENT_ID, self.SECRET)}
        body = await (await exchange(client, await sign_in(client), headers=auth)).json()
        assert await _error(await refresh(client, body["refresh_token"])) == "invalid_client"
        assert (await refresh(client, body["refresh_token"], headers=auth)).status == 200
        unauthenticated = await client.post(
            "/oauth2/revoke", data={"token": body["refresh_token"], "client_id": CLIENT_ID}
        )
        assert await _error(unauthenticated) == "invalid_client"
        revoked = await client.post("/oauth2/revoke", data={"token": body["refresh_token"]}, headers=auth)
        assert revoked.status == 200
        assert await _error(await refresh(client, body["refresh_token"], headers=auth)) == "invalid_grant"


async def test_a_public_client_must_not_send_a_secret(served: Served) -> None:
    _, client = served
    code = await sign_in(client)
    response = await exchange(client, code, headers={"Authorization": basic(CLIENT_ID, "anything")})
    assert await _error(response) == "invalid_client"
