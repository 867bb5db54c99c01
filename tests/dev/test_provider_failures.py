from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from sidecar.dev.provider import DevProvider, ProviderConfig
from tests.conftest import FakeClock
from tests.dev._support import CLIENT_ID, exchange, refresh, sign_in, verify
from tests.dev.conftest import ProviderFactory

Served = tuple[DevProvider, TestClient[Any, Any]]


async def test_a_500_failure_answers_500_and_still_counts(served: Served) -> None:
    provider, client = served
    provider.set_failure("jwks", "500")
    assert (await client.get("/.well-known/jwks.json")).status == 500
    provider.set_failure("jwks", "ok")
    assert (await client.get("/.well-known/jwks.json")).status == 200
    assert provider.calls["jwks"] == 2


async def test_garbage_is_json_by_content_type_only(served: Served) -> None:
    provider, client = served
    provider.set_failure("token", "garbage")
    answer = await exchange(client, "any-code")
    assert answer.status == 200
    assert answer.content_type == "application/json"
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        json.loads(await answer.read())
    assert provider.calls["token:authorization_code"] == 1


async def test_a_failure_on_one_endpoint_leaves_the_others_alone(served: Served) -> None:
    provider, client = served
    provider.set_failure("revoke", "500")
    assert (await client.get("/.well-known/openid-configuration")).status == 200
    code = await sign_in(client)
    assert (await exchange(client, code)).status == 200
    assert (await client.post("/oauth2/revoke", data={"token": "x", "client_id": CLIENT_ID})).status == 500


async def test_a_timeout_hangs_until_the_client_gives_up(served: Served) -> None:
    provider, client = served
    provider.set_failure("jwks", "timeout")
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/.well-known/jwks.json", timeout=aiohttp.ClientTimeout(total=0.2))
    assert provider.calls["jwks"] == 1


async def test_a_hang_resumes_normally_when_the_failure_is_cleared(served: Served) -> None:
    provider, client = served
    provider.set_failure("jwks", "timeout")
    request = asyncio.ensure_future(client.get("/.well-known/jwks.json"))
    await provider.wait_hanging("jwks")
    assert not request.done()
    provider.set_failure("jwks", "ok")
    answer = await asyncio.wait_for(request, 5)
    assert answer.status == 200
    assert "keys" in await answer.json()


async def test_a_hang_can_turn_into_another_failure(served: Served) -> None:
    provider, client = served
    provider.set_failure("token", "timeout")
    request = asyncio.ensure_future(exchange(client, "code"))
    await provider.wait_hanging("token")
    provider.set_failure("token", "500")
    assert (await asyncio.wait_for(request, 5)).status == 500


async def test_closing_the_server_releases_hung_requests_at_once(
    aiohttp_server: AiohttpServer, clock: FakeClock
) -> None:
    provider = DevProvider(ProviderConfig(), clock)
    server = await aiohttp_server(provider.app(), host="127.0.0.1")
    provider.issuer = str(server.make_url(""))
    provider.set_failure("revoke", "timeout")
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(server.make_url("/oauth2/revoke"), data={"token": "t"}))
        await provider.wait_hanging("revoke")
        # aiohttp would otherwise wait 60 s for the handler; the test timeout would catch that.
        await asyncio.wait_for(server.close(), 5)
        # aiohttp lets in-flight handlers finish before closing connections: the answer arrives.
        answer = await asyncio.wait_for(request, 5)
        assert answer.status == 503
    assert provider.failures.hanging["revoke"] == 0


def test_unknown_endpoints_and_modes_are_refused(clock: FakeClock) -> None:
    provider = DevProvider(ProviderConfig(), clock)
    with pytest.raises(ValueError, match="unknown endpoint"):
        provider.set_failure("tokens", "500")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown failure mode"):
        provider.set_failure("token", "slow")  # type: ignore[arg-type]


async def test_calls_are_counted_per_endpoint(served: Served) -> None:
    provider, client = served
    code = await sign_in(client)
    tokens = await (await exchange(client, code)).json()
    await client.post(
        "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
        },
    )
    await client.post("/oauth2/revoke", data={"token": tokens["refresh_token"], "client_id": CLIENT_ID})
    await client.get("/logout", params={"client_id": CLIENT_ID, "logout_uri": "x"})
    assert dict(provider.calls) == {
        "authorize": 1,
        "login": 1,
        "token:authorization_code": 1,
        "token:refresh_token": 1,
        "revoke": 1,
        "logout": 1,
    }


async def test_dev_routes_are_off_by_default(served: Served) -> None:
    _, client = served
    assert (await client.post("/_dev/rotate-keys")).status in (404, 405)


async def test_dev_routes_drive_the_hooks_over_http(make_provider: ProviderFactory) -> None:
    provider, client = await make_provider(dev_routes=True)
    old_kid = provider.keys.current_kid
    rotated = await (await client.post("/_dev/rotate-keys", params={"keep_old": "false"})).json()
    assert rotated["kid"] == provider.keys.current_kid != old_kid
    assert provider.keys.kids == (rotated["kid"],)
    answer = await client.post("/_dev/failure", json={"endpoint": "jwks", "mode": "500"})
    assert answer.status == 200
    assert (await client.get("/.well-known/jwks.json")).status == 500
    assert (await client.post("/_dev/failure", json={"endpoint": "nope", "mode": "500"})).status == 400
    assert await (await client.get("/_dev/calls")).json() == {"jwks": 1}


async def test_the_foreign_id_sub_quirk_mints_id_tokens_naming_another_user(served: Served) -> None:
    provider, client = served
    alice, bob = provider.user("alice"), provider.user("bob")
    assert alice is not None
    assert bob is not None
    provider.set_failure("token", "foreign_id_sub")

    tokens = await (await exchange(client, await sign_in(client))).json()
    access = (await verify(client, tokens["access_token"])).claims
    id_token = (await verify(client, tokens["id_token"])).claims
    assert access["sub"] == alice.sub
    assert id_token["sub"] == bob.sub

    renewed = await (await refresh(client, tokens["refresh_token"])).json()
    assert (await verify(client, renewed["access_token"])).claims["sub"] == alice.sub
    assert (await verify(client, renewed["id_token"])).claims["sub"] == bob.sub

    provider.set_failure("token", "ok")
    healed = await (await refresh(client, tokens["refresh_token"])).json()
    assert (await verify(client, healed["id_token"])).claims["sub"] == alice.sub


async def test_a_quirk_applies_only_to_its_endpoint(make_provider: ProviderFactory) -> None:
    provider, client = await make_provider(dev_routes=True)
    with pytest.raises(ValueError, match="only applies to the 'token' endpoint"):
        provider.set_failure("jwks", "foreign_id_sub")
    answer = await client.post("/_dev/failure", json={"endpoint": "jwks", "mode": "foreign_id_sub"})
    assert answer.status == 400
    assert provider.failures.mode("jwks") == "ok"
