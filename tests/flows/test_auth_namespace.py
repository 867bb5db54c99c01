"""/auth/* belongs to the sidecar: unknown paths and wrong methods never reach the app."""

from __future__ import annotations

import pytest

from tests.flows.conftest import Stack, StackFactory


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/auth/nothing-here", 404, id="unknown-path"),
        pytest.param("POST", "/auth/login/extra", 404, id="below-a-route"),
        pytest.param("GET", "/auth/refresh", 405, id="refresh-is-post-only"),
        pytest.param("DELETE", "/auth/logout", 405, id="logout-get-or-post"),
        pytest.param("POST", "/auth/me", 405, id="me-is-get-only"),
    ],
)
async def test_the_auth_namespace_answers_itself(stack: Stack, method: str, path: str, status: int) -> None:
    browser = await stack.browser()
    before = stack.upstream_stats.total
    answer = await browser.request(method, stack.url(path), allow_redirects=False)
    assert answer.status == status
    assert answer.headers["Cache-Control"] == "no-store"
    assert stack.upstream_stats.total == before


async def test_a_refused_preflight_carries_no_cors_header_at_all(make_stack: StackFactory) -> None:
    stack = await make_stack(cors={"allowed_origins": ["http://app.example.test"]})
    browser = await stack.browser()
    answer = await browser.options(
        stack.url("/api/items"),
        headers={
            "Origin": "http://app.example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-Not-Allowed",
        },
    )
    assert answer.status == 403
    assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
