from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from jwcrypto import jwk, jwt
from jwcrypto.common import JWException

from sidecar.dev.provider import DevProvider, DevUser, ProviderConfig, start_provider
from tests.conftest import FakeClock
from tests.dev._support import verify

Served = tuple[DevProvider, TestClient[Any, Any]]


async def test_discovery_names_every_endpoint_under_the_issuer(served: Served) -> None:
    provider, client = served
    response = await client.get("/.well-known/openid-configuration")
    assert response.status == 200
    doc = await response.json()
    base = provider.issuer
    assert doc["issuer"] == base == str(client.make_url("")).rstrip("/")
    assert doc["authorization_endpoint"] == f"{base}/oauth2/authorize"
    assert doc["token_endpoint"] == f"{base}/oauth2/token"
    assert doc["userinfo_endpoint"] == f"{base}/oauth2/userInfo"
    assert doc["revocation_endpoint"] == f"{base}/oauth2/revoke"
    assert doc["end_session_endpoint"] == f"{base}/oauth2/logout"
    assert doc["jwks_uri"] == f"{base}/.well-known/jwks.json"
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
    assert "openid" in doc["scopes_supported"]
    assert provider.calls["discovery"] == 1


async def test_jwks_publishes_only_public_rs256_signing_keys(served: Served) -> None:
    provider, client = served
    doc = await (await client.get("/.well-known/jwks.json")).json()
    [key] = doc["keys"]
    assert key["kid"] == provider.keys.current_kid
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert set(key) == {"kty", "kid", "alg", "use", "n", "e"}  # no d, p, q, dp, dq, qi
    assert provider.calls["jwks"] == 1


async def test_issuer_must_be_set_before_tokens_are_minted() -> None:
    provider = DevProvider(ProviderConfig(), FakeClock())
    with pytest.raises(RuntimeError, match="issuer is not set"):
        provider.mint_access_token("alice")


async def test_rotation_keeping_the_old_key_publishes_both(served: Served) -> None:
    provider, client = served
    old_token = provider.mint_access_token("alice")
    old_kid = provider.keys.current_kid
    new_kid = provider.rotate_keys(keep_old=True)
    assert new_kid != old_kid
    kids = [k["kid"] for k in (await (await client.get("/.well-known/jwks.json")).json())["keys"]]
    assert kids == [old_kid, new_kid]
    new_token = provider.mint_access_token("alice")
    assert (await verify(client, new_token)).header == {"alg": "RS256", "kid": new_kid}
    assert (await verify(client, old_token)).header["kid"] == old_kid


async def test_rotation_dropping_the_old_key_unpublishes_it(served: Served) -> None:
    provider, client = served
    old_token = provider.mint_access_token("alice")
    new_kid = provider.rotate_keys(keep_old=False)
    kids = [k["kid"] for k in (await (await client.get("/.well-known/jwks.json")).json())["keys"]]
    assert kids == [new_kid]
    with pytest.raises(JWException):
        await verify(client, old_token)
    # The provider itself no longer honours it either.
    response = await client.get("/oauth2/userInfo", headers={"Authorization": f"Bearer {old_token}"})
    assert response.status == 401


async def test_start_provider_binds_loopback_and_sets_the_issuer() -> None:
    provider = DevProvider(ProviderConfig(), FakeClock())
    runner, base_url = await start_provider(provider)
    try:
        assert base_url.startswith("http://127.0.0.1:")
        assert provider.issuer == base_url
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base_url}/.well-known/openid-configuration") as response:
                assert (await response.json())["issuer"] == base_url
            async with session.get(f"{base_url}/.well-known/jwks.json") as response:
                keyset = jwk.JWKSet.from_json(await response.text())
        token = jwt.JWT(jwt=provider.mint_id_token("bob"), key=keyset, check_claims=False)
        assert json.loads(token.claims)["iss"] == base_url
    finally:
        await runner.cleanup()


def test_config_refuses_relative_uris_and_duplicate_users() -> None:
    with pytest.raises(ValueError, match="not an absolute URL"):
        ProviderConfig(redirect_uris=("/callback",))
    with pytest.raises(ValueError, match="code_ttl must be positive"):
        ProviderConfig(code_ttl=0)
    with pytest.raises(ValueError, match="usernames must be unique"):
        ProviderConfig(users=(DevUser("x", "p", "x@example.com"), DevUser("x", "q", "y@example.com")))
