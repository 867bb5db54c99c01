"""POST /admin/revoke on the admin listener: a user's, a session's or a token's access ends
everywhere; only with the configured secret; never on the proxied port; absent without a secret."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.config_load import parse_settings, redacted
from sidecar.errors import ConfigError
from tests.flows.browser_support import jar_cookies, login_as, new_browser
from tests.flows.conftest import Stack, StackFactory
from tests.flows.fleet_support import FleetFactory
from tests.flows.test_fleet_revocation import CONNECTIONS, refused_within, session_headers, statuses
from tests.redis_server import RedisServer

ADMIN_TOKEN = "admin-revoke-secret-0123456789-abcdefghijklmnop"
JSON = {"Accept": "application/json"}


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def with_admin(make_stack: StackFactory) -> Stack:
    return await make_stack(admin={"revoke_token": ADMIN_TOKEN, "revoke_label": "oncall"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **JSON}


async def get(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with client.get(url, headers=headers) as resp:
        return resp.status


async def revoke(client: aiohttp.ClientSession, admin: str, body: Any,
                 headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return await client.post(admin + "/admin/revoke", data=data,
                             headers=admin_headers() if headers is None else headers)


async def test_revoking_a_sub_refuses_every_token_of_that_user_and_a_later_login_works(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await with_admin(make_stack)
    alice = [stack.provider.mint_access_token("alice") for _ in range(2)]
    bob = stack.provider.mint_access_token("bob")
    for token in (*alice, bob):
        assert await get(client, stack.url("/dashboard"), bearer(token)) == 200
    sub = stack.provider.user("alice").sub  # type: ignore[union-attr]

    answer = await revoke(client, stack.admin, {"sub": sub})

    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert await answer.json() == {"revoked": {"sub": sub}, "sessions": 2}
    for token in alice:
        assert await get(client, stack.url("/dashboard"), bearer(token)) == 401
    assert await get(client, stack.url("/dashboard"), bearer(bob)) == 200
    stack.clock.advance(1)
    fresh = stack.provider.mint_access_token("alice")
    assert await get(client, stack.url("/dashboard"), bearer(fresh)) == 200
    assert stack.metric("authsidecar_revocations_total", source="admin") == 1
    (audit,) = [line for line in stack.log_lines() if line.get("event") == "admin_revoke"]
    assert {k: audit[k] for k in ("who", "kind", "value", "sessions")} == {
        "who": "oncall", "kind": "sub", "value": sub, "sessions": 2}
    logs = stack.logs.getvalue()
    assert ADMIN_TOKEN not in logs
    assert not any(token in logs for token in alice)


@pytest.mark.parametrize("kind", ["jti", "sid"])
async def test_revoking_a_jti_or_a_sid_refuses_that_token_only(
    make_stack: StackFactory, client: aiohttp.ClientSession, kind: str,
) -> None:
    stack = await with_admin(make_stack)
    target = stack.provider.mint_access_token("alice", jti="jti-1", sid="sid-1")
    other = stack.provider.mint_access_token("alice", jti="jti-2", sid="sid-2")
    answer = await revoke(client, stack.admin, {kind: f"{kind}-1"})
    assert answer.status == 200
    assert await get(client, stack.url("/dashboard"), bearer(target)) == 401
    assert await get(client, stack.url("/dashboard"), bearer(other)) == 200


async def signed_in_session(stack: Stack, client: aiohttp.ClientSession) -> tuple[dict[str, str], str]:
    """A browser session's cookies as one header, and its ``sid``, with the deny-list already holding
    another session (so every cookie request consults it: Cognito-shaped access tokens carry no
    ``sid``, the session's ID token does)."""
    assert (await revoke(client, stack.admin, {"sid": "another-session"})).status == 200
    # A provider with back-channel logout names its session (sid) in the ID tokens it issues.
    stack.provider.config = dataclasses.replace(stack.provider.config,
                                                backchannel_logout_uris=(stack.url("/auth/backchannel-logout"),))
    browser = await new_browser(stack)
    assert (await login_as(stack, browser, "alice", at_provider=await stack.browser())).status == 302
    cookies = jar_cookies(browser)
    claims = stack.provider.keys.verify(cookies["id_token"])
    assert claims is not None
    assert "sid" not in (stack.provider.keys.verify(cookies["access_token"]) or {"sid": "?"})
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return {"Cookie": header, **JSON}, str(claims["sid"])


async def test_a_session_revoked_by_sid_after_its_requests_is_refused_at_the_very_next_one(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await with_admin(make_stack)
    session, sid = await signed_in_session(stack, client)
    for _ in range(3):
        assert await get(client, stack.url("/dashboard"), session) == 200

    assert (await revoke(client, stack.admin, {"sid": sid})).status == 200

    refused = await client.get(stack.url("/dashboard"), headers=session)
    assert refused.status == 401
    assert (await refused.json())["reason"] == "revoked"
    assert stack.provider.calls["token:refresh_token"] == 0


async def test_warm_cookie_requests_with_a_non_empty_deny_list_verify_the_id_token_no_more(
    make_stack: StackFactory, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = await with_admin(make_stack)
    session, _ = await signed_in_session(stack, client)
    validator = stack.link.get().validator
    looked_up = {"id_token": 0}
    verify_id_token = validator.id_token

    async def counted(token: str, **options: Any) -> Mapping[str, Any]:
        looked_up["id_token"] += 1
        return await verify_id_token(token, **options)

    monkeypatch.setattr(validator, "id_token", counted)
    assert await get(client, stack.url("/dashboard"), session) == 200
    first = looked_up["id_token"]
    hits = stack.metric("authsidecar_token_validation_cache_total", result="hit")

    for _ in range(5):
        assert await get(client, stack.url("/dashboard"), session) == 200

    assert looked_up["id_token"] == first
    # The access token: one validation-cache lookup per request, a hit; nothing else asked.
    assert stack.metric("authsidecar_token_validation_cache_total", result="hit") == hits + 5


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-authorization"),
    pytest.param(admin_headers("wrong-" + ADMIN_TOKEN[6:]), id="wrong-secret"),
    pytest.param(admin_headers(ADMIN_TOKEN[:-1]), id="a-prefix-of-the-secret"),
    pytest.param({"Authorization": f"Basic {ADMIN_TOKEN}"}, id="not-bearer"),
    pytest.param(admin_headers(ADMIN_TOKEN + "x"), id="the-secret-and-more"),
])
async def test_a_wrong_or_missing_admin_secret_is_401_and_revokes_nothing(
    make_stack: StackFactory, client: aiohttp.ClientSession, headers: dict[str, str],
) -> None:
    stack = await with_admin(make_stack)
    token = stack.provider.mint_access_token("alice")
    sub = stack.provider.user("alice").sub  # type: ignore[union-attr]
    answer = await revoke(client, stack.admin, {"sub": sub}, headers=headers)
    assert answer.status == 401
    assert (await answer.json())["reason"] == "bad_admin_token"
    assert await get(client, stack.url("/dashboard"), bearer(token)) == 200
    assert stack.metric("authsidecar_revocations_total", source="admin") == 0


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param([], id="a-list"),
    pytest.param({}, id="nothing-named"),
    pytest.param({"sub": "a", "sid": "b"}, id="two-named"),
    pytest.param({"email": "a@example.com"}, id="an-unknown-kind"),
    pytest.param({"sub": ""}, id="empty-value"),
    pytest.param({"sub": 42}, id="a-number"),
    pytest.param({"sub": "x" * 2000}, id="too-long-value"),
    pytest.param({"sub": "a\nb"}, id="a-control-character"),
    pytest.param(b"{" * 100_000, id="oversized"),
])
async def test_a_malformed_body_is_refused_and_revokes_nothing(
    make_stack: StackFactory, client: aiohttp.ClientSession, body: Any,
) -> None:
    stack = await with_admin(make_stack)
    answer = await revoke(client, stack.admin, body)
    assert answer.status in (400, 413)
    assert stack.metric("authsidecar_revocations_total", source="admin") == 0


async def test_the_revoke_route_does_not_exist_without_a_configured_secret(
    stack: Stack, client: aiohttp.ClientSession,
) -> None:
    answer = await revoke(client, stack.admin, {"sub": "anyone"})
    assert answer.status == 404


async def test_the_revoke_route_is_absent_on_the_proxied_port(
    make_stack: StackFactory, client: aiohttp.ClientSession,
) -> None:
    stack = await with_admin(make_stack)
    token = stack.provider.mint_access_token("alice")
    sub = stack.provider.user("alice").sub  # type: ignore[union-attr]
    answer = await revoke(client, stack.base, {"sub": sub})
    # The gate judged the admin secret as a Bearer token of the app's users: refused.
    assert answer.status == 401
    assert "revoked" not in await answer.json()
    assert await get(client, stack.url("/dashboard"), bearer(token)) == 200
    assert stack.metric("authsidecar_revocations_total", source="admin") == 0


async def test_revoking_a_sub_ends_two_sessions_of_the_user_on_two_replicas(
    make_fleet: FleetFactory, redis_server: RedisServer,
) -> None:
    fleet = await make_fleet(replicas=2, workers=1, settings={"admin": {"revoke_token": ADMIN_TOKEN}},
                             store={"backend": "redis", "redis": {"url": redis_server.url,
                                                                  "key_prefix": "fleet-admin:"}})
    first, second = session_headers(fleet)[0], session_headers(fleet)[0]
    bob = session_headers(fleet, "bob")[0]
    a, b = fleet.replicas
    checks = [(a.base, first), (b.base, second), (a.base, second), (b.base, first)]
    for base, headers in [*checks, (a.base, bob)]:
        assert await statuses(base, headers) == [200] * CONNECTIONS
    sub = fleet.provider.user("alice").sub  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as client:
        answer = await revoke(client, b.admin, {"sub": sub})
        assert answer.status == 200
    await refused_within(1.0, checks)
    for replica in fleet.replicas:
        assert await statuses(replica.base, bob) == [200] * CONNECTIONS


def _settings(admin: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return parse_settings({
        "dev_mode": True, "oidc": {"issuer": "https://idp.example.com", "client_id": "app"},
        "callback_url": "https://app.example.com/auth/callback", "app_url": "https://app.example.com/",
        "cookies": {"secret": "c" * 32}, "admin": admin,
    }, environ)


def test_the_admin_secret_comes_from_a_file_and_never_prints(tmp_path: Path) -> None:
    secret_file = tmp_path / "revoke-token"
    secret_file.write_text(ADMIN_TOKEN + "\n")
    settings = _settings({"revoke_token_file": str(secret_file)})
    assert settings.admin.revoke_token is not None
    assert settings.admin.revoke_token.get_secret_value() == ADMIN_TOKEN
    assert ADMIN_TOKEN not in json.dumps(redacted(settings))
    from_env = _settings({}, {"AUTHSIDECAR_ADMIN__REVOKE_TOKEN": "#" + ADMIN_TOKEN})
    assert from_env.admin.revoke_token is not None
    assert from_env.admin.revoke_token.get_secret_value() == "#" + ADMIN_TOKEN


def test_a_short_admin_secret_is_refused_at_the_door() -> None:
    with pytest.raises(ConfigError) as refused:
        _settings({"revoke_token": "short"})
    assert any("admin.revoke_token" in message for message in refused.value.messages)
    assert "short" not in str(refused.value)
