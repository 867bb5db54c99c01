import asyncio
import base64
import dataclasses
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.auth.pkce import challenge_s256
from sidecar.errors import ProviderError, RefreshFailed
from sidecar.observability import Metrics
from sidecar.oidc.client import (
    OidcClient,
    TokenSet,
    basic_credentials,
    code_request,
    parse_token_response,
)
from sidecar.oidc.discovery import MAX_BODY, ProviderMetadata

CLIENT_ID = "my client"
SECRET = "a:b+c/="
VERIFIER = "v" * 43
REDIRECT = "https://api.example.test/auth/callback"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(pair.split("=", 1) for pair in self.body.decode().split("&")) if self.body else {}

    @property
    def decoded_form(self) -> dict[str, str]:
        return {k: unquote_plus(v) for k, v in self.form.items()}


@dataclass
class FakeProvider:
    """A small stateful token endpoint, revocation endpoint and GlobalSignOut API."""

    secret: str | None = None
    url: str = ""
    codes: dict[str, str] = field(default_factory=dict)  # code -> S256 challenge
    refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    # Next answers to give instead of the real behaviour, per path: a callable returning a response.
    script: dict[str, list[Callable[[], Any]]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    issued: int = 0

    def meta(self, **changes: Any) -> ProviderMetadata:
        meta = ProviderMetadata(
            issuer=f"{self.url}/pool", authorization_endpoint=f"{self.url}/oauth2/authorize",
            token_endpoint=f"{self.url}/oauth2/token", jwks_uri=f"{self.url}/pool/.well-known/jwks.json",
            kind="cognito", revocation_endpoint=f"{self.url}/oauth2/revoke",
            global_sign_out_endpoint=f"{self.url}/",
        )
        return dataclasses.replace(meta, **changes)

    def new_code(self, verifier: str = VERIFIER) -> str:
        code = f"code-{len(self.codes)}"
        self.codes[code] = challenge_s256(verifier)
        return code

    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        auth = request.headers.get("Authorization")
        if self.secret is None:
            return auth is None and form.get("client_id") == CLIENT_ID
        if auth is None or not auth.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        return (unquote_plus(user), unquote_plus(password)) == (CLIENT_ID, self.secret)

    def _tokens(self, *, with_refresh: bool) -> dict[str, Any]:
        self.issued += 1
        access = f"access-{self.issued}"
        self.access_tokens.add(access)
        body: dict[str, Any] = {"access_token": access, "id_token": f"id-{self.issued}",
                                "token_type": "Bearer", "expires_in": 3600}
        if with_refresh:
            body["refresh_token"] = f"refresh-{self.issued}"
            self.refresh_tokens.add(body["refresh_token"])
        return body

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.path, dict(request.headers), body))
        scripted = self.script.get(request.path)
        if scripted:
            answer = scripted.pop(0)()
            return await answer if asyncio.iscoroutine(answer) else answer
        if request.path == "/":
            return self._global_sign_out(request, body)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        if request.path == "/oauth2/revoke":
            self.refresh_tokens.discard(form.get("token", ""))
            return web.Response(status=200)
        if form.get("grant_type") == "authorization_code":
            challenge = self.codes.pop(form.get("code", ""), None)
            if challenge is None or challenge != challenge_s256(form.get("code_verifier", "x" * 43)):
                return web.json_response({"error": "invalid_grant"}, status=400)
            return web.json_response(self._tokens(with_refresh=True))
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                error = {"error": "invalid_grant", "error_description": "revoked"}
                return web.json_response(error, status=400)
            return web.json_response(self._tokens(with_refresh=False))
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    def _global_sign_out(self, request: web.Request, body: bytes) -> web.Response:
        token = json.loads(body).get("AccessToken")
        if token not in self.access_tokens:
            return web.json_response(
                {"__type": "NotAuthorizedException", "message": f"Access Token {token} has been revoked"},
                status=400, content_type="application/x-amz-json-1.1",
            )
        self.access_tokens.clear()
        return web.json_response({}, content_type="application/x-amz-json-1.1")

    async def hang(self) -> web.Response:
        await self.release.wait()
        return web.json_response({})


@pytest.fixture
async def provider(aiohttp_server):
    fake = FakeProvider()
    app = web.Application()
    app.router.add_post("/oauth2/token", fake.handle)
    app.router.add_post("/oauth2/revoke", fake.handle)
    app.router.add_post("/", fake.handle)
    app.router.add_get("/elsewhere", fake.handle)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    fake.release.set()  # lets a hung handler finish so the server can close


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def metrics():
    return Metrics(CollectorRegistry())


def client_for(provider, session, metrics, *, secret=None, timeout=5.0, **meta_changes):
    provider.secret = secret
    return OidcClient(session, provider.meta(**meta_changes), CLIENT_ID, secret, timeout, metrics)


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0


def token_requests(metrics, grant, outcome):
    return sample(metrics, "authsidecar_token_endpoint_requests_total", grant=grant, outcome=outcome)


def provider_errors(metrics, endpoint):
    return sample(metrics, "authsidecar_provider_errors_total", endpoint=endpoint)


# --- request shapes ----------------------------------------------------------------------------------

async def test_public_client_exchange_sends_client_id_in_the_body_and_no_authorization(
    provider, session, metrics
):
    client = client_for(provider, session, metrics)
    tokens = await client.exchange_code(provider.new_code(), VERIFIER, REDIRECT)
    assert tokens == TokenSet("access-1", "id-1", "refresh-1", 3600, "Bearer")
    seen = provider.seen[-1]
    assert seen.path == "/oauth2/token"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["Accept"] == "application/json"
    assert "Authorization" not in seen.headers
    assert seen.decoded_form == {
        "grant_type": "authorization_code", "code": "code-0", "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER, "client_id": CLIENT_ID,
    }


async def test_confidential_client_form_urlencodes_id_and_secret_inside_basic_auth(
    provider, session, metrics
):
    client = client_for(provider, session, metrics, secret=SECRET)
    await client.exchange_code(provider.new_code(), VERIFIER, REDIRECT)
    seen = provider.seen[-1]
    # RFC 6749 §2.3.1: "my client" -> my+client, "a:b+c/=" -> a%3Ab%2Bc%2F%3D, then base64.
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"my+client:a%3Ab%2Bc%2F%3D").decode()
    assert "client_id" not in seen.form
    assert "client_secret" not in seen.form


def test_basic_credentials_round_trip_through_form_decoding():
    header = basic_credentials("id with spaces/é", "s%e:c r+e/t=")
    user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
    assert (unquote_plus(user), unquote_plus(password)) == ("id with spaces/é", "s%e:c r+e/t=")


def test_request_bodies_are_kept_out_of_repr():
    meta = ProviderMetadata("https://i", "https://i/a", "https://i/t", "https://i/k", "oidc")
    request = code_request(meta, client_id="c", client_secret="s3cr3t", code="the-code", verifier=VERIFIER,
                           redirect_uri=REDIRECT)
    assert "the-code" not in repr(request)
    assert "s3cr3t" not in repr(request)


def test_token_values_are_kept_out_of_repr():
    text = repr(TokenSet("at-secret", "it-secret", "rt-secret", 60, "Bearer"))
    assert "secret" not in text
    assert "Bearer" in text


async def test_refresh_sends_the_refresh_grant_and_may_get_no_new_refresh_token(provider, session, metrics):
    client = client_for(provider, session, metrics, secret=SECRET)
    first = await client.exchange_code(provider.new_code(), VERIFIER, REDIRECT)
    assert first.refresh_token is not None
    tokens = await client.refresh(first.refresh_token)
    assert (tokens.access_token, tokens.id_token, tokens.refresh_token) == ("access-2", "id-2", None)
    assert provider.seen[-1].decoded_form == {"grant_type": "refresh_token", "refresh_token": "refresh-1"}
    assert token_requests(metrics, "refresh_token", "ok") == 1
    assert token_requests(metrics, "authorization_code", "ok") == 1
    assert sample(metrics, "authsidecar_token_endpoint_request_seconds_count", grant="refresh_token") == 1


# --- failures ----------------------------------------------------------------------------------------

async def test_refresh_after_revocation_is_refresh_failed_not_a_provider_outage(provider, session, metrics):
    client = client_for(provider, session, metrics)
    tokens = await client.exchange_code(provider.new_code(), VERIFIER, REDIRECT)
    await client.revoke(tokens.refresh_token)
    with pytest.raises(RefreshFailed) as info:
        await client.refresh(tokens.refresh_token)
    assert info.value.reason == "invalid_grant"
    assert token_requests(metrics, "refresh_token", "invalid_grant") == 1
    assert provider_errors(metrics, "token") == 0


async def test_a_replayed_code_is_a_provider_error_carrying_only_the_error_code(provider, session, metrics):
    client = client_for(provider, session, metrics)
    code = provider.new_code()
    await client.exchange_code(code, VERIFIER, REDIRECT)
    with pytest.raises(ProviderError) as info:
        await client.exchange_code(code, VERIFIER, REDIRECT)
    assert not isinstance(info.value, RefreshFailed)
    assert (info.value.reason, info.value.detail) == ("token_http_400", "invalid_grant")
    assert token_requests(metrics, "authorization_code", "http_4xx") == 1


async def test_a_wrong_verifier_is_refused_by_the_provider(provider, session, metrics):
    client = client_for(provider, session, metrics)
    with pytest.raises(ProviderError, match="invalid_grant"):
        await client.exchange_code(provider.new_code(), "w" * 43, REDIRECT)


async def test_a_server_error_never_repeats_the_response_body(provider, session, metrics):
    provider.script["/oauth2/token"] = [
        lambda: web.json_response({"error": "server_error", "echo": "refresh-SECRET"}, status=500)
    ]
    client = client_for(provider, session, metrics)
    with pytest.raises(ProviderError) as info:
        await client.refresh("refresh-SECRET")
    assert info.value.reason == "token_http_500"
    assert info.value.detail == "server_error"
    assert "SECRET" not in str(info.value)
    assert "SECRET" not in repr(info.value)
    assert token_requests(metrics, "refresh_token", "http_5xx") == 1
    assert provider_errors(metrics, "token") == 1


async def test_no_answer_within_the_timeout_is_token_timeout(provider, session, metrics):
    provider.script["/oauth2/token"] = [provider.hang]
    client = client_for(provider, session, metrics, timeout=0.05)
    with pytest.raises(ProviderError) as info:
        await client.refresh("rt")
    assert info.value.reason == "token_timeout"
    assert token_requests(metrics, "refresh_token", "timeout") == 1
    assert provider_errors(metrics, "token") == 1
    assert sample(metrics, "authsidecar_token_endpoint_request_seconds_count", grant="refresh_token") == 1


async def test_an_unreachable_provider_is_token_unreachable(session, metrics):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    meta = ProviderMetadata(url, f"{url}/a", f"{url}/t", f"{url}/k", "oidc")
    client = OidcClient(session, meta, CLIENT_ID, None, 5.0, metrics)
    with pytest.raises(ProviderError) as info:
        await client.refresh("rt")
    assert info.value.reason == "token_unreachable"
    assert token_requests(metrics, "refresh_token", "unreachable") == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda: web.Response(text="not json{", content_type="application/json"),
                     id="garbage-json"),
        pytest.param(lambda: web.Response(text="<html>oops</html>", content_type="text/html"), id="html"),
        pytest.param(lambda: web.json_response(["access_token"]), id="json-array"),
        pytest.param(lambda: web.Response(body=b"x" * (MAX_BODY + 1)), id="endless-body"),
    ],
)
async def test_an_unreadable_success_is_token_invalid_response(provider, session, metrics, answer):
    provider.script["/oauth2/token"] = [answer]
    client = client_for(provider, session, metrics)
    with pytest.raises(ProviderError) as info:
        await client.refresh("rt")
    assert info.value.reason == "token_invalid_response"
    assert token_requests(metrics, "refresh_token", "invalid_response") == 1


async def test_a_redirect_from_the_token_endpoint_is_not_followed(provider, session, metrics):
    provider.script["/oauth2/token"] = [
        lambda: web.Response(status=302, headers={"Location": f"{provider.url}/elsewhere"})
    ]
    client = client_for(provider, session, metrics, secret=SECRET)
    with pytest.raises(ProviderError) as info:
        await client.refresh("rt")
    assert info.value.reason == "token_http_302"
    assert [s.path for s in provider.seen] == ["/oauth2/token"]


# --- response parsing (pure) -------------------------------------------------------------------------

def body(**fields):
    base = {"access_token": "at", "id_token": "it", "token_type": "Bearer", "expires_in": 3600}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("payload", "grant", "message"),
    [
        pytest.param(body(access_token=None), "refresh_token", "access_token is missing",
                     id="no-access-token"),
        pytest.param(body(access_token=""), "refresh_token", "access_token", id="empty-access-token"),
        pytest.param(body(access_token=7), "refresh_token", "access_token", id="access-token-not-string"),
        pytest.param(body(token_type=None), "refresh_token", "Bearer", id="no-token-type"),
        pytest.param(body(token_type="mac"), "refresh_token", "Bearer", id="not-bearer"),
        pytest.param(body(id_token=None), "authorization_code", "id_token is missing",
                     id="code-without-id-token"),
        pytest.param(body(id_token=["x"]), "refresh_token", "id_token", id="id-token-not-string"),
        pytest.param(body(refresh_token=1), "refresh_token", "refresh_token", id="refresh-token-not-string"),
        pytest.param(body(expires_in="soon"), "refresh_token", "expires_in", id="expires-in-words"),
        pytest.param(body(expires_in=-1), "refresh_token", "expires_in", id="expires-in-negative"),
        pytest.param(body(expires_in=True), "refresh_token", "expires_in", id="expires-in-bool"),
        pytest.param(body(expires_in=1.5), "refresh_token", "expires_in", id="expires-in-fraction"),
        pytest.param(b"\xff\xfe", "refresh_token", "not JSON", id="not-utf8"),
        pytest.param(b"null", "refresh_token", "not a JSON object", id="json-null"),
    ],
)
def test_a_success_without_usable_tokens_is_invalid_response(payload, grant, message):
    with pytest.raises(ProviderError, match=message) as info:
        parse_token_response(200, payload, grant=grant)
    assert info.value.reason == "token_invalid_response"


@pytest.mark.parametrize(
    ("payload", "grant", "expected"),
    [
        pytest.param(body(), "authorization_code", TokenSet("at", "it", None, 3600, "Bearer"), id="code"),
        pytest.param(body(id_token=None), "refresh_token", TokenSet("at", None, None, 3600, "Bearer"),
                     id="refresh-without-id-token"),
        pytest.param(body(expires_in="3600"), "refresh_token", TokenSet("at", "it", None, 3600, "Bearer"),
                     id="expires-in-numeric-string"),
        pytest.param(body(expires_in=None), "refresh_token", TokenSet("at", "it", None, None, "Bearer"),
                     id="expires-in-absent"),
        pytest.param(body(token_type="bearer", refresh_token="rt"), "refresh_token",
                     TokenSet("at", "it", "rt", 3600, "bearer"), id="lower-case-bearer-and-rotation"),
    ],
)
def test_a_usable_success_becomes_a_token_set(payload, grant, expected):
    assert parse_token_response(200, payload, grant=grant) == expected


@pytest.mark.parametrize(
    ("status", "payload", "grant", "error", "reason", "detail"),
    [
        pytest.param(400, b'{"error":"invalid_grant"}', "refresh_token", RefreshFailed, "invalid_grant", "",
                     id="refresh-invalid-grant"),
        pytest.param(401, b'{"error":"invalid_grant"}', "refresh_token", RefreshFailed, "invalid_grant", "",
                     id="refresh-invalid-grant-401"),
        pytest.param(400, b'{"error":"invalid_grant"}', "authorization_code", ProviderError, "token_http_400",
                     "invalid_grant", id="code-invalid-grant"),
        pytest.param(500, b'{"error":"invalid_grant"}', "refresh_token", ProviderError, "token_http_500",
                     "invalid_grant", id="invalid-grant-with-500-is-an-outage"),
        pytest.param(401, b'{"error":"invalid_client"}', "refresh_token", ProviderError, "token_http_401",
                     "invalid_client", id="invalid-client"),
        pytest.param(400, b'{"error":"eyJhbGciOi.token.echo with spaces"}', "refresh_token", ProviderError,
                     "token_http_400", "", id="odd-error-code-not-repeated"),
        pytest.param(400, b'{"error":"' + b"a" * 65 + b'"}', "refresh_token", ProviderError,
                     "token_http_400", "", id="long-error-code-not-repeated"),
        pytest.param(503, b"<html>down</html>", "refresh_token", ProviderError, "token_http_503", "",
                     id="html-error"),
        pytest.param(429, b'{"error":{"nested":1}}', "refresh_token", ProviderError, "token_http_429", "",
                     id="error-not-a-string"),
    ],
)
def test_error_answers_map_to_fixed_reasons(status, payload, grant, error, reason, detail):
    with pytest.raises(error) as info:
        parse_token_response(status, payload, grant=grant)
    assert type(info.value) is error
    assert (info.value.reason, info.value.detail) == (reason, detail)


# --- revocation and GlobalSignOut --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("secret", "expected_form", "basic"),
    [
        pytest.param(None, {"token": "refresh-1", "token_type_hint": "refresh_token", "client_id": CLIENT_ID},
                     False, id="public-client-names-itself"),
        pytest.param(SECRET, {"token": "refresh-1", "token_type_hint": "refresh_token"}, True,
                     id="confidential-client-uses-basic"),
    ],
)
async def test_revoke_posts_rfc7009_form(provider, session, metrics, secret, expected_form, basic):
    client = client_for(provider, session, metrics, secret=secret)
    tokens = await client.exchange_code(provider.new_code(), VERIFIER, REDIRECT)
    await client.revoke(tokens.refresh_token)
    seen = provider.seen[-1]
    assert seen.path == "/oauth2/revoke"
    assert seen.decoded_form == expected_form
    assert ("Authorization" in seen.headers) is basic
    assert provider.refresh_tokens == set()


async def test_revoke_failure_is_a_revocation_error(provider, session, metrics):
    provider.script["/oauth2/revoke"] = [
        lambda: web.json_response({"error": "unsupported_token_type"}, status=400)
    ]
    client = client_for(provider, session, metrics)
    with pytest.raises(ProviderError) as info:
        await client.revoke("rt")
    assert (info.value.reason, info.value.detail) == ("revocation_http_400", "unsupported_token_type")
    assert provider_errors(metrics, "revocation") == 1


async def test_revoke_timeout_is_a_revocation_timeout(provider, session, metrics):
    provider.script["/oauth2/revoke"] = [provider.hang]
    client = client_for(provider, session, metrics, timeout=0.05)
    with pytest.raises(ProviderError, match="revocation_timeout"):
        await client.revoke("rt")


async def test_global_sign_out_posts_the_aws_json_call(provider, session, metrics):
    client = client_for(provider, session, metrics)
    tokens = await client.exchange_code(provider.new_code(), VERIFIER, REDIRECT)
    await client.global_sign_out(tokens.access_token)
    seen = provider.seen[-1]
    assert seen.path == "/"
    assert seen.headers["X-Amz-Target"] == "AWSCognitoIdentityProviderService.GlobalSignOut"
    assert seen.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert "Authorization" not in seen.headers
    assert json.loads(seen.body) == {"AccessToken": "access-1"}
    assert provider.access_tokens == set()


async def test_global_sign_out_error_names_only_the_aws_error_type(provider, session, metrics):
    client = client_for(provider, session, metrics)
    with pytest.raises(ProviderError) as info:
        await client.global_sign_out("access-unknown")
    assert (info.value.reason, info.value.detail) == ("global_sign_out_http_400", "NotAuthorizedException")
    assert "access-unknown" not in str(info.value)
    assert provider_errors(metrics, "global_sign_out") == 1


@pytest.mark.parametrize(
    ("call", "changes"),
    [
        pytest.param("revoke", {"revocation_endpoint": None}, id="no-revocation-endpoint"),
        pytest.param("global_sign_out", {"global_sign_out_endpoint": None}, id="no-global-sign-out"),
    ],
)
async def test_calls_the_provider_does_not_offer_send_nothing(provider, session, metrics, call, changes):
    client = client_for(provider, session, metrics, **changes)
    await getattr(client, call)("token")
    assert provider.seen == []
