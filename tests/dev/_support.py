"""Shared pieces of the dev provider tests: PKCE, the browser part of a sign-in."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jwcrypto import jwk, jwt
from yarl import URL

CLIENT_ID = "authsidecar-dev"
REDIRECT = "http://app.test:8080/auth/callback"
LOGOUT = "http://app.test:8080/signed-out"
VERIFIER = "v" * 20 + "-._~" + "0123456789abcdefghijklmnop"  # 50 chars of RFC 7636's alphabet
ALL_SCOPES = "openid email profile aws.cognito.signin.user.admin"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def basic(client_id: str, secret: str) -> str:
    raw = f"{client_id}:{secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class FormReader(HTMLParser):
    """Collects the sign-in form's action and inputs, as a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.inputs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = values.get("action")
        elif tag == "input" and "name" in values:
            self.inputs[values["name"]] = values.get("value", "")


def read_form(html: str) -> FormReader:
    reader = FormReader()
    reader.feed(html)
    return reader


def authorize_params(**overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "scope": ALL_SCOPES,
        "state": "state-123",
        "nonce": "nonce-456",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


async def submit_form(
    client: TestClient[Any, Any], html: str, *, username: str, password: str, action: str = "signin"
) -> ClientResponse:
    form = read_form(html)
    assert form.action is not None
    data = {**form.inputs, "username": username, "password": password, "action": action}
    return await client.post(form.action, data=data, allow_redirects=False)


def location(response: ClientResponse) -> URL:
    assert response.status == 302, response.status
    return URL(response.headers["Location"])


async def sign_in(
    client: TestClient[Any, Any],
    *,
    username: str = "alice",
    password: str = "alice-dev-password",  # noqa: S107 - a documented dev-only password
    **params: str | None,
) -> str:
    """The browser's part: authorize, fill in the form, follow nothing; returns the code."""
    query = authorize_params(**params)
    page = await client.get("/oauth2/authorize", params=query, allow_redirects=False)
    assert page.status == 200, await page.text()
    answer = await submit_form(client, await page.text(), username=username, password=password)
    target = location(answer)
    assert target.with_query(None) == URL(REDIRECT)
    assert target.query.get("state") == query.get("state")
    return target.query["code"]


async def exchange(
    client: TestClient[Any, Any],
    code: str,
    *,
    verifier: str | None = VERIFIER,
    redirect_uri: str = REDIRECT,
    headers: dict[str, str] | None = None,
    **extra: str,
) -> ClientResponse:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, **extra}
    if "client_id" not in data and not headers:
        data["client_id"] = CLIENT_ID
    if verifier is not None:
        data["code_verifier"] = verifier
    return await client.post("/oauth2/token", data=data, headers=headers)


async def refresh(
    client: TestClient[Any, Any], refresh_token: str, *, headers: dict[str, str] | None = None
) -> ClientResponse:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if not headers:
        data["client_id"] = CLIENT_ID
    return await client.post("/oauth2/token", data=data, headers=headers)


@dataclass(frozen=True)
class Verified:
    header: dict[str, Any]
    claims: dict[str, Any]


async def verify(client: TestClient[Any, Any], token: str) -> Verified:
    """Check a token's signature against the provider's published JWKS, as a relying party would."""
    keyset = jwk.JWKSet.from_json(await (await client.get("/.well-known/jwks.json")).text())
    parsed = jwt.JWT(jwt=token, key=keyset, algs=["RS256"], check_claims=False, expected_type="JWS")
    return Verified(header=json.loads(parsed.header), claims=json.loads(parsed.claims))
