from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_authorize import SESSION_COOKIE
from tests.conftest import FakeClock
from tests.dev._support import (
    REDIRECT,
    authorize_params,
    exchange,
    location,
    read_form,
    sign_in,
    submit_form,
    verify,
)

Served = tuple[DevProvider, TestClient[Any, Any]]


async def _authorize(client: TestClient[Any, Any], **params: str | None) -> Any:
    return await client.get("/oauth2/authorize", params=authorize_params(**params), allow_redirects=False)


async def test_the_form_carries_the_request_in_hidden_fields(served: Served) -> None:
    provider, client = served
    page = await _authorize(client, login_hint="bob", lang="fr")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    form = read_form(html)
    assert form.action == "/login"
    assert form.inputs["username"] == "bob"  # login_hint prefills
    expected = authorize_params(lang="fr")
    assert {k: form.inputs[k] for k in expected} == expected
    assert '<html lang="fr">' in html
    assert provider.calls["authorize"] == 1


async def test_every_reflected_value_is_escaped(served: Served) -> None:
    _, client = served
    evil = '"><script>alert(1)</script>'
    page = await _authorize(client, state=evil, login_hint=evil, lang=evil)
    html = await page.text()
    assert "<script>" not in html
    assert read_form(html).inputs["state"] == evil  # round-trips intact through the hidden field
    assert '<html lang="en">' in html


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"client_id": "unknown-client"}, id="unknown-client"),
        pytest.param({"client_id": None}, id="missing-client"),
        pytest.param({"redirect_uri": "https://evil.example/cb"}, id="unregistered-redirect"),
        pytest.param({"redirect_uri": REDIRECT + "/"}, id="redirect-with-extra-slash"),
        pytest.param({"redirect_uri": REDIRECT.upper()}, id="redirect-other-case"),
        pytest.param({"redirect_uri": None}, id="missing-redirect"),
        pytest.param(
            {"redirect_uri": None, "simulate_error": "access_denied"}, id="simulated-needs-redirect"
        ),
    ],
)
async def test_an_untrusted_client_or_redirect_gets_a_page_never_a_redirect(
    served: Served, change: dict[str, str | None]
) -> None:
    _, client = served
    page = await _authorize(client, **change)
    assert page.status == 400
    assert "Location" not in page.headers
    assert page.content_type == "text/html"


async def test_a_duplicated_redirect_uri_is_refused_with_a_page(served: Served) -> None:
    _, client = served
    query = [*authorize_params().items(), ("redirect_uri", REDIRECT)]
    page = await client.get("/oauth2/authorize", params=query, allow_redirects=False)
    assert page.status == 400
    assert "more than once" in await page.text()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param({"response_type": "token"}, "unsupported_response_type", id="implicit"),
        pytest.param({"response_type": None}, "invalid_request", id="no-response-type"),
        pytest.param({"scope": "openid admin:everything"}, "invalid_scope", id="unknown-scope"),
        pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="plain-pkce"),
        pytest.param({"code_challenge_method": None}, "invalid_request", id="challenge-without-method"),
        pytest.param({"code_challenge": None}, "invalid_request", id="pkce-required"),
        pytest.param({"code_challenge": "too-short"}, "invalid_request", id="malformed-challenge"),
        pytest.param({"prompt": "none login"}, "invalid_request", id="prompt-none-with-others"),
        pytest.param({"prompt": "none"}, "login_required", id="prompt-none-without-session"),
        pytest.param({"simulate_error": "access_denied"}, "access_denied", id="simulated-denial"),
        pytest.param({"simulate_error": "server_error"}, "server_error", id="simulated-server-error"),
    ],
)
async def test_request_errors_go_back_to_the_client_with_state(
    served: Served, change: dict[str, str | None], error: str
) -> None:
    _, client = served
    target = location(await _authorize(client, **change))
    assert target.with_query(None) == URL(REDIRECT)
    assert target.query["error"] == error
    assert target.query["state"] == "state-123"
    assert "code" not in target.query


async def test_a_wrong_password_shows_the_form_again(served: Served) -> None:
    provider, client = served
    page = await _authorize(client)
    answer = await submit_form(client, await page.text(), username="alice", password="nope")
    assert answer.status == 200
    html = await answer.text()
    assert "Incorrect username or password." in html
    assert read_form(html).inputs["username"] == "alice"
    assert read_form(html).inputs["state"] == "state-123"
    assert SESSION_COOKIE not in {c.key for c in client.session.cookie_jar}
    assert provider.calls["login"] == 1


async def test_an_unknown_user_reads_like_a_wrong_password(served: Served) -> None:
    _, client = served
    page = await _authorize(client)
    answer = await submit_form(client, await page.text(), username="mallory", password="alice-dev-password")
    assert answer.status == 200
    assert "Incorrect username or password." in await answer.text()


async def test_cancel_redirects_with_access_denied(served: Served) -> None:
    _, client = served
    page = await _authorize(client)
    answer = await submit_form(client, await page.text(), username="", password="", action="cancel")
    target = location(answer)
    assert (target.query["error"], target.query["state"]) == ("access_denied", "state-123")


async def test_a_tampered_hidden_redirect_uri_is_refused_at_submission(served: Served) -> None:
    _, client = served
    form = read_form(await (await _authorize(client)).text())
    data = {**form.inputs, "redirect_uri": "https://evil.example/cb", "password": "alice-dev-password"}
    answer = await client.post("/login", data=data, allow_redirects=False)
    assert answer.status == 400
    assert "Location" not in answer.headers


async def test_post_to_authorize_works_like_login(served: Served) -> None:
    _, client = served
    form = read_form(await (await _authorize(client)).text())
    data = {**form.inputs, "username": "bob", "password": "bob-dev-password"}
    answer = await client.post("/oauth2/authorize", data=data, allow_redirects=False)
    assert "code" in location(answer).query


async def test_the_login_path_accepts_cognito_style_requests(served: Served) -> None:
    _, client = served
    page = await client.get("/login", params=authorize_params(), allow_redirects=False)
    assert page.status == 200
    assert read_form(await page.text()).action == "/login"


async def test_a_signed_in_browser_gets_a_code_without_the_form(served: Served, clock: FakeClock) -> None:
    _, client = served
    await sign_in(client, username="bob", password="bob-dev-password")
    clock.advance(60)
    target = location(await _authorize(client, state="second", nonce="n2"))
    assert target.query["state"] == "second"
    body = await (await exchange(client, target.query["code"])).json()
    claims = (await verify(client, body["id_token"])).claims
    assert claims["cognito:username"] == "bob"
    assert claims["nonce"] == "n2"
    assert claims["auth_time"] == claims["iat"] - 60  # the original sign-in time


async def test_prompt_none_with_a_session_is_silent(served: Served) -> None:
    _, client = served
    await sign_in(client)
    assert "code" in location(await _authorize(client, prompt="none")).query


async def test_prompt_login_shows_the_form_despite_a_session(served: Served) -> None:
    _, client = served
    await sign_in(client)
    assert (await _authorize(client, prompt="login")).status == 200


async def test_the_session_expires(served: Served, clock: FakeClock) -> None:
    _, client = served
    await sign_in(client)
    clock.advance(3600)
    assert (await _authorize(client)).status == 200
