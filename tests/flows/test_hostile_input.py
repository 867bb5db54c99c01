"""Bytes that are not UTF-8 (or not ASCII) at every door, sent raw: each gets its exact 4xx, never a 500.

The first three rows are the cases measured at 500 under load (the token reached the validation
cache's digest, ``str.encode``, before any shape check); the others walk every other door.
"""

from __future__ import annotations

import pytest

from tests.flows.conftest import Stack
from tests.flows.hostile import json_body, request_bytes, send, server_errors

NOT_UTF8 = b"\xff\xfe\xfd\xfc-not-utf8-0123456789"
LATIN1 = b"caf\xe9-latin-1-0123456789"
Headers = list[tuple[bytes, bytes]]


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "reason"),
    [
        # A cookie that cannot hold a token is refused as such (sidecar.auth.session), before
        # anything hashes it: told apart from no cookie at all.
        pytest.param(b"GET", b"/api/items", [(b"Cookie", b"access_token=" + NOT_UTF8)], 401, "malformed",
                     id="measured-500-access-cookie-not-utf8"),
        pytest.param(b"GET", b"/api/items", [(b"Cookie", b"access_token=" + LATIN1)], 401, "malformed",
                     id="measured-500-access-cookie-latin1"),
        pytest.param(b"GET", b"/api/items", [(b"Authorization", b"Bearer " + NOT_UTF8)], 401, "malformed",
                     id="measured-500-bearer-not-utf8"),
        pytest.param(b"GET", b"/api/items", [(b"Authorization", b"Bearer " + LATIN1)], 401, "malformed",
                     id="bearer-latin1"),
        pytest.param(b"GET", b"/api/items", [(b"Authorization", b"Bearer a.b.c\xe9")], 401, "malformed",
                     id="bearer-jws-shaped-with-a-latin1-tail"),
        pytest.param(b"GET", b"/api/items", [(b"Authorization", b"Bearer " + b"a" * 20000)], 401, "malformed",
                     id="bearer-20k"),
        pytest.param(b"GET", b"/auth/me",
                     [(b"Cookie", b"access_token.0=" + NOT_UTF8 + b"; access_token.1=x")], 401, "malformed",
                     id="me-access-chunks-not-utf8"),
        pytest.param(b"GET", b"/auth/me", [(b"Cookie", b"id_token.0=\xff; id_token.1=\xfe"),
                                           (b"Authorization", b"Bearer " + NOT_UTF8)], 401, "malformed",
                     id="me-id-chunks-not-utf8"),
        pytest.param(b"GET", b"/auth/login", [(b"Cookie", b"authsidecar_tx=" + NOT_UTF8)], 302, None,
                     id="login-transaction-cookie-not-utf8-starts-afresh"),
        pytest.param(b"GET", b"/auth/callback?state=abc&code=c", [(b"Cookie", b"authsidecar_tx=" + LATIN1)],
                     400, "missing_transaction", id="callback-transaction-cookie-latin1"),
        pytest.param(b"GET", b"/auth/callback?state=%FF%FE&code=c", [], 400, "malformed",
                     id="callback-state-percent-not-utf8"),
        pytest.param(b"GET", b"/auth/callback?state=abc&code=%FF%FE", [], 400, "malformed",
                     id="callback-code-percent-not-utf8"),
        pytest.param(b"GET", b"/auth/callback?state=abc&code=%E9", [], 400, "malformed",
                     id="callback-code-percent-latin1"),
        pytest.param(b"GET", b"/auth/callback?state=\xff\xfe&code=c", [], 400, "400 Bad Request",
                     id="callback-state-raw-bytes-refused-by-the-parser"),
        pytest.param(b"GET", b"/auth/callback?error=%FF&error_description=%FF%FE&state=%FF", [], 302, None,
                     id="callback-error-not-utf8"),
        pytest.param(b"GET", b"/auth/login?return_to=%FF%FE", [], 302, None, id="login-return-to-not-utf8"),
        pytest.param(b"GET", b"/auth/login?return_to=\xff", [], 400, "400 Bad Request",
                     id="login-return-to-raw-bytes-refused-by-the-parser"),
        pytest.param(b"POST", b"/auth/refresh",
                     [(b"Cookie", b"refresh_token=" + NOT_UTF8 + b"; id_token=\xe9"),
                      (b"X-XSRF-TOKEN", NOT_UTF8)],
                     401, "missing",
                     id="refresh-cookies-not-utf8"),
        pytest.param(b"POST", b"/auth/logout",
                     [(b"Cookie", b"refresh_token=" + NOT_UTF8 + b"; XSRF-TOKEN=\xe9"),
                      (b"X-XSRF-TOKEN", LATIN1), (b"Origin", NOT_UTF8)], 403, "origin",
                     id="logout-post-origin-not-utf8"),
        pytest.param(b"GET", b"/auth/logout", [(b"Cookie", b"id_token=" + NOT_UTF8), (b"Referer", LATIN1)],
                     200, None, id="logout-referer-latin1-asks-first"),
        pytest.param(b"GET", b"/api/items", [(b"X-Request-Id", NOT_UTF8), (b"Host", LATIN1),
                                             (b"X-Forwarded-For", NOT_UTF8), (b"X-Forwarded-Proto", LATIN1)],
                     401, "missing", id="request-id-host-forwarded-not-utf8"),
        pytest.param(b"GET", b"/api/%FF%FE/items", [(b"Origin", LATIN1)], 401, "missing",
                     id="path-percent-not-utf8"),
    ],
)
async def test_bytes_that_are_not_utf8_get_their_exact_answer(
    stack: Stack, method: bytes, target: bytes, headers: Headers, status: int, reason: str | None
) -> None:
    answer = await send(stack, request_bytes(method, target, [(b"Accept", b"application/json"), *headers]))

    assert answer.status == status, (answer.head, answer.body[:200])
    if reason is not None:
        assert json_body(answer)["reason"] == reason
    assert server_errors(stack) == []
    # Each value ends in a distinctive ASCII tail: any echo of it, however escaped, carries the tail.
    for tail in (b"not-utf8-0123456789", b"latin-1-0123456789"):
        assert tail not in answer.head
        assert tail not in answer.body
        assert tail.decode() not in stack.logs.getvalue()


async def test_a_bearer_token_of_the_wrong_shape_is_counted_and_logged_without_its_value(
    stack: Stack,
) -> None:
    before = stack.metric("authsidecar_auth_decisions_total", outcome="malformed")
    bearer = [(b"Authorization", b"Bearer " + NOT_UTF8)]

    answer = await send(stack, request_bytes(b"GET", b"/api/items", bearer))

    assert answer.status == 401
    assert stack.metric("authsidecar_auth_decisions_total", outcome="malformed") == before + 1
    rejected = [line for line in stack.log_lines() if line["event"] == "auth_rejected"]
    assert rejected[-1]["reason"] == "malformed"
    assert "not-utf8" not in stack.logs.getvalue()


async def test_a_callback_state_of_the_wrong_shape_is_counted_and_never_looked_up(stack: Stack) -> None:
    answer = await send(stack, request_bytes(b"GET", b"/auth/callback?state=%E9t%E9&code=c", []))

    assert answer.status == 400
    assert json_body(answer)["reason"] == "malformed"
    assert stack.metric("authsidecar_flow_events_total", event="callback", outcome="malformed") == 1
    rejected = [line for line in stack.log_lines() if line["event"] == "callback_rejected"]
    assert rejected[-1]["reason"] == "malformed"
    assert stack.provider.calls["token:authorization_code"] == 0


async def test_after_every_hostile_request_the_next_valid_one_succeeds(stack: Stack) -> None:
    token = stack.provider.mint_access_token("alice").encode()
    for junk in (NOT_UTF8, LATIN1, b"\xed\xa0\x80", b"\xc0\xaf"):
        await send(stack, request_bytes(b"GET", b"/api/items", [(b"Cookie", b"access_token=" + junk)]))
        await send(stack, request_bytes(b"GET", b"/api/items", [(b"Authorization", b"Bearer " + junk)]))
        valid = [(b"Authorization", b"Bearer " + token)]
        answer = await send(stack, request_bytes(b"GET", b"/api/items", valid))
        assert answer.status == 200
