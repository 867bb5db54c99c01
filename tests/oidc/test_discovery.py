import asyncio
import dataclasses
import json
import socket
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from aiohttp import web

from sidecar.config import OidcSettings
from sidecar.errors import ProviderError
from sidecar.oidc.discovery import (
    MAX_BODY,
    ProviderMetadata,
    authorize_url,
    cognito_metadata,
    discover,
    logout_redirect,
    parse_discovery,
)

POOL_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"


def cognito(issuer=POOL_ISSUER, domain="auth.example.test", provider="auto"):
    return OidcSettings(issuer=issuer, client_id="client", cognito_domain=domain, provider=provider)


# --- Cognito: derived, no network --------------------------------------------------------------------

@pytest.mark.parametrize(
    "domain",
    [
        pytest.param("auth.example.test", id="bare-host"),
        pytest.param("https://auth.example.test", id="full-url"),
        pytest.param("https://auth.example.test/", id="full-url-trailing-slash"),
    ],
)
def test_cognito_endpoints_come_from_the_hosted_ui_domain_and_the_pool_issuer(domain):
    meta = cognito_metadata(cognito(domain=domain))
    assert meta == ProviderMetadata(
        issuer=POOL_ISSUER,
        authorization_endpoint="https://auth.example.test/oauth2/authorize",
        token_endpoint="https://auth.example.test/oauth2/token",
        jwks_uri=f"{POOL_ISSUER}/.well-known/jwks.json",
        kind="cognito",
        revocation_endpoint="https://auth.example.test/oauth2/revoke",
        end_session_endpoint=None,
        userinfo_endpoint="https://auth.example.test/oauth2/userInfo",
        logout_endpoint="https://auth.example.test/logout",
        global_sign_out_endpoint="https://cognito-idp.eu-west-1.amazonaws.com/",
        region="eu-west-1",
    )


def test_cognito_shaped_dev_provider_gets_global_sign_out_at_its_issuer():
    meta = cognito_metadata(cognito(issuer="http://127.0.0.1:5555/local_pool", domain="http://127.0.0.1:5555",
                                    provider="cognito"))
    assert meta.token_endpoint == "http://127.0.0.1:5555/oauth2/token"
    assert meta.jwks_uri == "http://127.0.0.1:5555/local_pool/.well-known/jwks.json"
    assert meta.global_sign_out_endpoint == "http://127.0.0.1:5555/local_pool/"
    assert meta.region is None
    assert meta.kind == "cognito"


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        pytest.param(None, "cognito_domain is not set", id="missing"),
        pytest.param("", "cognito_domain is not set", id="empty"),
        pytest.param("ftp://auth.example.test", "not a host", id="not-http"),
        pytest.param("https://", "not a host", id="no-host"),
    ],
)
def test_cognito_without_a_usable_domain_is_a_discovery_error(domain, message):
    with pytest.raises(ProviderError, match=message) as info:
        cognito_metadata(cognito(domain=domain))
    assert info.value.reason == "discovery"


async def test_discover_for_cognito_makes_no_request():
    closed = aiohttp.ClientSession()
    await closed.close()  # any request on it would raise
    meta = await discover(closed, cognito(), timeout=1)
    assert meta.kind == "cognito"


# --- generic OIDC: fetched ---------------------------------------------------------------------------

class FakeIssuer:
    """Serves /.well-known/openid-configuration as told; counts and records the requests."""

    def __init__(self) -> None:
        self.url = ""
        self.document: object = None
        self.status = 200
        self.raw: bytes | None = None
        self.hang = False
        self.release = asyncio.Event()
        self.requests: list[web.Request] = []

    def doc(self, **changes):
        document = {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "revocation_endpoint": f"{self.url}/revoke",
            "end_session_endpoint": f"{self.url}/logout",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "code_challenge_methods_supported": ["plain", "S256"],
        }
        document.update(changes)
        return {k: v for k, v in document.items() if v is not None}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if self.hang:
            await self.release.wait()
        body = self.raw if self.raw is not None else json.dumps(self.document).encode()
        return web.Response(status=self.status, body=body, content_type="application/json")


@pytest.fixture
async def fake(aiohttp_server):
    issuer = FakeIssuer()
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", issuer.handle)
    server = await aiohttp_server(app)
    issuer.url = str(server.make_url("")).rstrip("/")
    issuer.document = issuer.doc()
    yield issuer
    issuer.release.set()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def generic(url):
    return OidcSettings(issuer=url, client_id="client", provider="oidc")


async def test_discover_fetches_and_validates_the_document(fake, session):
    meta = await discover(session, generic(fake.url), timeout=5)
    assert meta == ProviderMetadata(
        issuer=fake.url,
        authorization_endpoint=f"{fake.url}/authorize",
        token_endpoint=f"{fake.url}/token",
        jwks_uri=f"{fake.url}/jwks",
        kind="oidc",
        revocation_endpoint=f"{fake.url}/revoke",
        end_session_endpoint=f"{fake.url}/logout",
        userinfo_endpoint=f"{fake.url}/userinfo",
    )
    assert len(fake.requests) == 1
    assert fake.requests[0].headers["Accept"] == "application/json"


async def test_optional_endpoints_may_be_absent(fake, session):
    fake.document = fake.doc(revocation_endpoint=None, end_session_endpoint=None, userinfo_endpoint=None,
                             code_challenge_methods_supported=None)
    meta = await discover(session, generic(fake.url), timeout=5)
    assert (meta.revocation_endpoint, meta.end_session_endpoint, meta.userinfo_endpoint) == (None, None, None)


async def test_a_trailing_slash_dropped_by_settings_is_tolerated_and_the_exact_issuer_kept(fake, session):
    fake.document = fake.doc(issuer=fake.url + "/")
    meta = await discover(session, generic(fake.url), timeout=5)
    assert meta.issuer == fake.url + "/"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"issuer": "https://evil.test"}, "issuer", id="issuer-other-host"),
        pytest.param({"issuer": "HTTP://127.0.0.1"}, "issuer", id="issuer-other-scheme-case-no-port"),
        pytest.param({"issuer": "{url}/tenant"}, "issuer", id="issuer-other-path"),
        pytest.param({"issuer": "{url}//"}, "issuer", id="issuer-two-trailing-slashes"),
        pytest.param({"issuer": 42}, "issuer", id="issuer-not-a-string"),
        pytest.param({"authorization_endpoint": None}, "authorization_endpoint is missing",
                     id="no-authorize"),
        pytest.param({"token_endpoint": None}, "token_endpoint is missing", id="no-token-endpoint"),
        pytest.param({"jwks_uri": None}, "jwks_uri is missing", id="no-jwks"),
        pytest.param({"token_endpoint": "/token"}, "token_endpoint", id="relative-endpoint"),
        pytest.param({"jwks_uri": ["{url}/jwks"]}, "jwks_uri", id="endpoint-not-a-string"),
        pytest.param({"revocation_endpoint": "javascript:x"}, "revocation_endpoint",
                     id="bad-optional-endpoint"),
        pytest.param({"end_session_endpoint": "http://[::1"}, "end_session_endpoint",
                     id="unparsable-endpoint"),
        pytest.param({"code_challenge_methods_supported": ["plain"]}, "S256", id="no-s256"),
        pytest.param({"code_challenge_methods_supported": "S256"}, "S256", id="methods-not-a-list"),
    ],
)
async def test_an_unusable_document_is_a_discovery_error(fake, session, changes, message):
    fixed = {k: (v.format(url=fake.url) if isinstance(v, str) else v) for k, v in changes.items()}
    fake.document = fake.doc(**fixed)
    with pytest.raises(ProviderError, match=message) as info:
        await discover(session, generic(fake.url), timeout=5)
    assert info.value.reason == "discovery"


async def test_missing_issuer_is_a_discovery_error(fake, session):
    document = fake.doc()
    del document["issuer"]
    fake.document = document
    with pytest.raises(ProviderError, match="issuer None"):
        await discover(session, generic(fake.url), timeout=5)


def test_endpoints_of_an_https_issuer_must_be_https():
    document = {"issuer": "https://idp.test", "authorization_endpoint": "https://idp.test/a",
                "token_endpoint": "http://idp.test/t", "jwks_uri": "https://idp.test/k"}
    with pytest.raises(ProviderError, match=r"token_endpoint .* is not https"):
        parse_discovery(document, "https://idp.test")


@pytest.mark.parametrize(
    ("status", "raw", "message"),
    [
        pytest.param(404, None, "HTTP 404", id="not-found"),
        pytest.param(500, None, "HTTP 500", id="server-error"),
        pytest.param(200, b"<html>", "not JSON", id="not-json"),
        pytest.param(200, b"[1, 2]", "not a JSON object", id="json-array"),
        pytest.param(200, b"x" * (MAX_BODY + 1), "larger than", id="too-large"),
    ],
)
async def test_a_bad_answer_is_a_discovery_error(fake, session, status, raw, message):
    fake.status, fake.raw = status, raw
    with pytest.raises(ProviderError, match=message) as info:
        await discover(session, generic(fake.url), timeout=5)
    assert info.value.reason == "discovery"


async def test_no_answer_within_the_timeout_is_a_discovery_error(fake, session):
    fake.hang = True
    with pytest.raises(ProviderError, match="no answer within") as info:
        await discover(session, generic(fake.url), timeout=0.05)
    assert info.value.reason == "discovery"


async def test_an_unreachable_issuer_is_a_discovery_error(session):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    with pytest.raises(ProviderError, match="ClientConnectorError") as info:
        await discover(session, generic(f"http://127.0.0.1:{port}"), timeout=5)
    assert info.value.reason == "discovery"


# --- URL builders ------------------------------------------------------------------------------------

META = ProviderMetadata(
    issuer="https://idp.test", authorization_endpoint="https://idp.test/authorize",
    token_endpoint="https://idp.test/token", jwks_uri="https://idp.test/jwks", kind="oidc",
    end_session_endpoint="https://idp.test/logout",
)
COGNITO = cognito_metadata(cognito())


def authorize(meta=META, extra=None):
    return authorize_url(
        meta, client_id="my client", redirect_uri="https://api.example.test/auth/callback",
        scopes=("openid", "email"), state="st", nonce="no", code_challenge="ch", extra=extra or {},
    )


def test_authorize_url_carries_every_parameter_properly_encoded():
    url = authorize()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://idp.test/authorize"
    assert parse_qsl(parts.query) == [
        ("response_type", "code"),
        ("client_id", "my client"),
        ("redirect_uri", "https://api.example.test/auth/callback"),
        ("scope", "openid email"),
        ("state", "st"),
        ("nonce", "no"),
        ("code_challenge", "ch"),
        ("code_challenge_method", "S256"),
    ]
    assert "scope=openid%20email" in parts.query
    assert "redirect_uri=https%3A%2F%2Fapi.example.test%2Fauth%2Fcallback" in parts.query
    assert "client_id=my%20client" in parts.query


def test_authorize_url_appends_extra_parameters_encoded():
    url = authorize(extra={"identity_provider": "Google", "login_hint": "a+b@x.test&state=evil"})
    query = parse_qsl(urlsplit(url).query)
    assert query[-2:] == [("identity_provider", "Google"), ("login_hint", "a+b@x.test&state=evil")]
    assert [k for k, _ in query].count("state") == 1


@pytest.mark.parametrize("key", ["state", "redirect_uri", "code_challenge_method", "scope", "client_id"])
def test_extra_parameters_cannot_override_the_flow(key):
    with pytest.raises(ValueError, match=key):
        authorize(extra={key: "x"})


def test_authorize_url_keeps_a_query_the_endpoint_already_has():
    url = authorize(dataclasses.replace(META, authorization_endpoint="https://idp.test/a?tenant=t1"))
    assert url.startswith("https://idp.test/a?tenant=t1&response_type=code&")


def test_cognito_logout_uses_logout_uri_and_client_id():
    url = logout_redirect(COGNITO, client_id="client", post_logout_uri="https://app.example.test/",
                          id_token_hint="x")
    assert url == (
        "https://auth.example.test/logout?client_id=client&logout_uri=https%3A%2F%2Fapp.example.test%2F"
    )


@pytest.mark.parametrize(
    ("hint", "expected_query"),
    [
        pytest.param("h.i.nt", [("id_token_hint", "h.i.nt"),
                                ("post_logout_redirect_uri", "https://app.example.test/"),
                                ("client_id", "client")], id="with-id-token-hint"),
        pytest.param(None, [("post_logout_redirect_uri", "https://app.example.test/"),
                            ("client_id", "client")], id="without-id-token-hint"),
    ],
)
def test_oidc_logout_uses_rp_initiated_logout(hint, expected_query):
    url = logout_redirect(META, client_id="client", post_logout_uri="https://app.example.test/",
                          id_token_hint=hint)
    assert url is not None
    assert url.startswith("https://idp.test/logout?")
    assert parse_qsl(urlsplit(url).query) == expected_query


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param(ProviderMetadata("https://i", "https://i/a", "https://i/t", "https://i/k", "oidc"),
                     id="oidc-without-end-session"),
        pytest.param(ProviderMetadata("https://i", "https://i/a", "https://i/t", "https://i/k", "cognito"),
                     id="cognito-without-logout"),
    ],
)
def test_no_logout_redirect_when_the_provider_has_none(meta):
    assert logout_redirect(meta, client_id="c", post_logout_uri="https://a/", id_token_hint=None) is None
