"""Authorization rules and public paths at the proxied port, including paths spelled to dodge them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.flows.conftest import Stack, StackFactory

DECISIONS = "authsidecar_auth_decisions_total"
NARROW_SCOPE = "openid email"
RULES: list[dict[str, Any]] = [
    {"path": "/admin/**", "groups_any": ["admins"]},
    {"path": "/reports/**", "methods": ["post", "DELETE"], "groups_any": ["admins"]},
    {"path": "/profile/write/**", "scopes": ["aws.cognito.signin.user.admin"]},
    {"path": "/alice-only/**", "claims": {"username": "alice"}},
    {"path": "/team/*/members", "claims": {"username": ["alice", "carol"]}},
    # First match wins: this rule has no condition, so any signed-in user passes...
    {"path": "/docs/internal/open", "methods": []},
    # ...while everything else under /docs/internal needs both groups.
    {"path": "/docs/internal/**", "groups_all": ["admins", "users"]},
]
PUBLIC = ["/public/**", "/status"]


@pytest.fixture
async def ruled(make_stack: StackFactory) -> Stack:
    return await make_stack(rules=RULES, public_paths=PUBLIC)


def token_for(stack: Stack, user: str) -> str:
    if user == "alice-narrow":
        return stack.provider.mint_access_token("alice", scope=NARROW_SCOPE)
    return stack.provider.mint_access_token(user)


@pytest.mark.parametrize(
    ("user", "method", "path", "status"),
    [
        pytest.param("alice", "GET", "/admin/users", 200, id="admins-group-may-enter-admin"),
        pytest.param("bob", "GET", "/admin/users", 403, id="users-group-may-not-enter-admin"),
        pytest.param("carol", "GET", "/admin/users", 403, id="no-groups-may-not-enter-admin"),
        pytest.param("bob", "GET", "/admin", 403, id="double-star-covers-the-bare-prefix"),
        pytest.param("bob", "GET", "/admin/", 403, id="double-star-covers-the-trailing-slash"),
        pytest.param("bob", "GET", "/admin/a/b/c", 403, id="double-star-covers-any-depth"),
        pytest.param("bob", "GET", "/administrator", 200, id="a-longer-segment-is-another-path"),
        pytest.param("bob", "GET", "/reports/q3", 200, id="methods-filter-lets-other-methods-pass"),
        pytest.param("bob", "POST", "/reports/q3", 403, id="methods-filter-applies-to-post"),
        pytest.param("bob", "DELETE", "/reports/q3", 403, id="methods-filter-applies-to-delete"),
        pytest.param("alice", "POST", "/reports/q3", 200, id="methods-filter-admin-may-post"),
        pytest.param("alice", "GET", "/profile/write/name", 200, id="scope-present"),
        pytest.param("alice-narrow", "GET", "/profile/write/name", 403, id="scope-missing"),
        pytest.param("alice", "GET", "/alice-only/notes", 200, id="claim-matches"),
        pytest.param("bob", "GET", "/alice-only/notes", 403, id="claim-differs"),
        pytest.param("carol", "GET", "/team/t1/members", 200, id="claim-in-list"),
        pytest.param("bob", "GET", "/team/t1/members", 403, id="claim-not-in-list"),
        pytest.param("bob", "GET", "/team/t1/members/x", 200, id="single-star-stays-in-one-segment"),
        pytest.param("bob", "GET", "/docs/internal/open", 200, id="first-match-wins-open"),
        pytest.param("bob", "GET", "/docs/internal/secret", 403, id="first-match-wins-later-rule"),
        pytest.param("alice", "GET", "/docs/internal/secret", 200, id="groups-all-satisfied"),
        pytest.param("bob", "GET", "/api/anything", 200, id="unmatched-path-needs-only-a-valid-token"),
    ],
)
async def test_rules_decide_by_path_method_groups_scopes_and_claims_first_match_winning(
    ruled: Stack, client: aiohttp.ClientSession, user: str, method: str, path: str, status: int
) -> None:
    headers = {"Authorization": f"Bearer {token_for(ruled, user)}"}

    async with client.request(method, ruled.url(path), headers=headers) as resp:
        assert resp.status == status
        body = await resp.json()

    if status == 403:
        assert body == {"error": "forbidden", "reason": "forbidden_by_rule"}
        assert ruled.metric(DECISIONS, outcome="forbidden_by_rule") == 1
        assert ruled.upstream_stats.total == 0
    else:
        assert body["path"] == path
        assert ruled.metric(DECISIONS, outcome="ok") == 1


async def test_a_rule_refusal_is_403_even_for_a_browser_navigation(
    ruled: Stack, client: aiohttp.ClientSession
) -> None:
    headers = {"Cookie": f"access_token={token_for(ruled, 'bob')}", "Sec-Fetch-Mode": "navigate"}

    async with client.get(ruled.url("/admin/users"), headers=headers, allow_redirects=False) as resp:
        assert resp.status == 403


# -- public paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [pytest.param("/public/app.js", id="under-a-public-tree"), pytest.param("/status", id="exact")]
)
async def test_a_public_path_passes_without_a_token_and_without_identity(
    ruled: Stack, client: aiohttp.ClientSession, path: str
) -> None:
    async with client.get(ruled.url(path), headers={"X-User-Id": "mallory"}) as resp:
        assert resp.status == 200
        echo = await resp.json()

    assert echo["identity"] == {}
    assert ruled.metric(DECISIONS, outcome="public") == 1


async def test_a_public_path_forwards_the_identity_of_a_valid_token(
    ruled: Stack, client: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {token_for(ruled, 'bob')}", "X-User-Id": "mallory"}

    async with client.get(ruled.url("/public/app.js"), headers=headers) as resp:
        echo = await resp.json()

    assert echo["identity"]["X-User-Id"] == ruled.provider.user("bob").sub  # type: ignore[union-attr]
    assert "Authorization" not in echo["headers"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Bearer garbage"}, id="garbage-bearer"),
        pytest.param({"Cookie": "access_token=garbage"}, id="garbage-cookie"),
    ],
)
async def test_a_public_path_with_an_invalid_token_passes_anonymously(
    ruled: Stack, client: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with client.get(ruled.url("/public/app.js"), headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["identity"] == {}


async def test_a_cross_site_post_to_a_public_path_does_not_carry_the_cookie_users_identity(
    ruled: Stack,
) -> None:
    browser = await ruled.browser()
    assert (await ruled.login(browser, "alice")).status == 302

    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with browser.post(ruled.url("/public/comments"), data=b"hi", headers=cross_site) as resp:
        assert resp.status == 200
        assert (await resp.json())["identity"] == {}


async def test_a_same_origin_post_to_a_public_path_with_the_xsrf_token_carries_the_identity(
    ruled: Stack,
) -> None:
    browser = await ruled.browser()
    assert (await ruled.login(browser, "alice")).status == 302
    xsrf = ruled.cookie(browser, "XSRF-TOKEN")
    assert xsrf is not None

    async with browser.post(ruled.url("/public/comments"), data=b"hi",
                            headers={"Origin": ruled.base, "X-XSRF-TOKEN": xsrf}) as resp:
        assert resp.status == 200
        assert (await resp.json())["identity"]["X-User-Name"] == "alice"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/publicity", id="longer-segment"),
        pytest.param("/PUBLIC/app.js", id="other-case"),
        pytest.param("/status/sub", id="below-an-exact-path"),
    ],
)
async def test_a_path_that_only_resembles_a_public_one_needs_a_token(
    ruled: Stack, client: aiohttp.ClientSession, path: str
) -> None:
    async with client.get(ruled.url(path)) as resp:
        assert resp.status == 401
    assert ruled.upstream_stats.total == 0


# -- paths spelled to dodge a rule -----------------------------------------------------------------------


async def raw_request(
    stack: Stack, target: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any] | None]:
    """Send ``target`` byte for byte (an HTTP client library would normalize it first)."""
    port = int(stack.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


@pytest.mark.parametrize(
    ("target", "status"),
    [
        pytest.param("/%61dmin/users", 403, id="percent-encoded-letter"),
        pytest.param("/admin%2Fusers", 403, id="percent-encoded-slash"),
        pytest.param("/ADMIN/users", 403, id="upper-case"),
        pytest.param("/Admin", 403, id="mixed-case-bare-prefix"),
        pytest.param("//admin/users", 403, id="doubled-leading-slash"),
        pytest.param("/admin//users", 403, id="doubled-inner-slash"),
        pytest.param("/docs//internal/secret", 403, id="doubled-slash-before-the-rule-prefix"),
        pytest.param("/admin;jsessionid=1/users", 403, id="path-parameter"),
        pytest.param("/admin/../admin/users", 400, id="dot-dot-back-into-the-rule"),
        pytest.param("/api/../admin/users", 400, id="dot-dot-into-the-rule"),
        pytest.param("/api/%2e%2e/admin/users", 400, id="encoded-dot-dot"),
        pytest.param("/api/%2E%2E%2Fadmin/users", 400, id="encoded-dot-dot-and-slash"),
        pytest.param("/./admin/users", 400, id="single-dot"),
        pytest.param("/api/..;/admin/users", 400, id="dot-dot-with-path-parameter"),
        pytest.param("/api\\..\\admin\\users", 400, id="backslashes"),
    ],
)
async def test_a_path_spelled_to_dodge_a_rule_is_still_refused(
    ruled: Stack, target: str, status: int
) -> None:
    got, body = await raw_request(ruled, target, {"Authorization": f"Bearer {token_for(ruled, 'bob')}"})

    assert got == status
    expected = ("forbidden", "forbidden_by_rule") if status == 403 else ("bad_request", "ambiguous_path")
    assert body == {"error": expected[0], "reason": expected[1]}
    assert ruled.upstream_stats.total == 0


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/public/../admin/users", id="dot-dot"),
        pytest.param("/public/%2e%2e/admin/users", id="encoded-dot-dot"),
        pytest.param("/public/..%2Fadmin/users", id="dot-dot-encoded-slash"),
        pytest.param("/public%2F..%2Fadmin", id="all-encoded"),
        pytest.param("/public/./../admin", id="dot-then-dot-dot"),
        pytest.param("/public/..;/admin", id="dot-dot-with-path-parameter"),
        pytest.param("/public/..", id="trailing-dot-dot"),
    ],
)
async def test_a_public_prefix_followed_by_dot_segments_does_not_open_a_protected_path(
    ruled: Stack, target: str
) -> None:
    got, body = await raw_request(ruled, target, {})

    assert got == 400
    assert body == {"error": "bad_request", "reason": "ambiguous_path"}
    assert ruled.upstream_stats.total == 0


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/files/.well-known/x", id="dot-leading-segment-name"),
        pytest.param("/files/a..b", id="dots-inside-a-name"),
        pytest.param("/files/...", id="three-dots"),
        pytest.param("/files/%2e%2e%2e", id="three-encoded-dots"),
    ],
)
async def test_names_with_dots_that_are_not_dot_segments_pass(ruled: Stack, target: str) -> None:
    got, body = await raw_request(ruled, target, {"Authorization": f"Bearer {token_for(ruled, 'bob')}"})

    assert got == 200
    assert body is not None
    assert body["path"].startswith("/files/")
