"""Keys, a token minter and a stateful fake JWKS server for the OIDC tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jwcrypto.common import base64url_encode
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from prometheus_client import CollectorRegistry

from sidecar.errors import TokenRejected
from sidecar.observability import Metrics
from sidecar.oidc.claims import TokenPolicy
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.tokens import TokenValidator
from tests.conftest import START, FakeClock

ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Test1234"
CLIENT_ID = "client-123"
NOW = START
LEEWAY = 60.0
COOLDOWN = 30.0


class RecordingLogger:
    """Any object with .info/.warning will do for JwksCache; this one keeps every line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, /, **kw: Any) -> None:
        self.lines.append(("info", event, kw))

    def warning(self, event: str, /, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def warnings(self) -> list[tuple[str, dict[str, Any]]]:
        return [(event, kw) for level, event, kw in self.lines if level == "warning"]


class FakeSleep:
    """Stands in for asyncio.sleep in the refresh loop: records each delay and waits for ``release``."""

    def __init__(self) -> None:
        self.delays: asyncio.Queue[float] = asyncio.Queue()
        self._go = asyncio.Semaphore(0)

    async def __call__(self, delay: float) -> None:
        await self.delays.put(delay)
        await self._go.acquire()

    async def next_delay(self) -> float:
        return await self.delays.get()

    def release(self) -> None:
        self._go.release()


@dataclass
class FakeJwks:
    """The provider's JWKS endpoint. ``mode``: ok | error | hang | garbage | not_object | custom."""

    keys: list[JWK]
    mode: str = "ok"
    custom: Any = None
    requests: int = 0
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    # While cleared, every request waits here (lets a test line up concurrent callers first).
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    # "hang" requests wait for this; set at teardown so the server can stop.
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    def __post_init__(self) -> None:
        self.gate.set()

    def document(self) -> dict[str, Any]:
        return {"keys": [k.export_public(as_dict=True) for k in self.keys]}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.requested.set()
        await self.gate.wait()
        if self.mode == "error":
            return web.Response(status=500, text="upstream exploded")
        if self.mode == "hang":
            await self.released.wait()
            return web.Response(status=504)
        if self.mode == "garbage":
            return web.Response(body=b"\x00<html>not json", content_type="application/json")
        if self.mode == "not_object":
            return web.json_response([self.document()])
        if self.mode == "custom":
            return web.Response(text=json.dumps(self.custom), content_type="application/json")
        return web.json_response(self.document())


def _generate(kid: str, **params: Any) -> JWK:
    key = JWK.generate(**params)
    key["kid"] = kid
    key["use"] = "sig"
    return key


@pytest.fixture(scope="session")
def rsa_a() -> JWK:
    return _generate("key-a", kty="RSA", size=2048)


@pytest.fixture(scope="session")
def rsa_b() -> JWK:
    return _generate("key-b", kty="RSA", size=2048)


@pytest.fixture(scope="session")
def ec_key() -> JWK:
    return _generate("key-ec", kty="EC", crv="P-256")


async def reason_of(pending: Awaitable[object]) -> str:
    """The fixed reason ``pending`` is refused with (it must be refused)."""
    with pytest.raises(TokenRejected) as caught:
        await pending
    return caught.value.reason


def b64json(value: Any) -> str:
    encoded: str = base64url_encode(json.dumps(value).encode())
    return encoded


def mint(
    claims: dict[str, Any] | bytes,
    *,
    key: JWK,
    alg: str = "RS256",
    kid: str | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """A compact JWS signed with ``key``. ``kid`` defaults to the key's; ``header`` overrides fields
    (a value of None removes one). ``claims`` may be raw bytes to sign a non-JSON payload."""
    protected: dict[str, Any] = {"alg": alg, "kid": kid or key["kid"], "typ": "JWT"}
    for name, value in (header or {}).items():
        if value is None:
            protected.pop(name, None)
        else:
            protected[name] = value
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    jws = JWS(payload)
    jws.allowed_algs = [alg]
    jws.add_signature(key, alg=alg, protected=json.dumps(protected))
    compact: str = jws.serialize(compact=True)
    return compact


def access_claims(now: float = NOW, **overrides: Any) -> dict[str, Any]:
    """A Cognito access token's claims, valid at ``now``; an override of None removes a claim."""
    claims: dict[str, Any] = {
        "sub": "1b2c3d4e-user",
        "iss": ISSUER,
        "client_id": CLIENT_ID,
        "token_use": "access",
        "scope": "openid email profile",
        "auth_time": int(now) - 10,
        "iat": int(now) - 10,
        "exp": int(now) + 3600,
        "jti": "jti-1",
        "username": "alice",
        "cognito:groups": ["admins", "ops"],
    }
    return _apply(claims, overrides)


def id_claims(now: float = NOW, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "1b2c3d4e-user",
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "token_use": "id",
        "iat": int(now) - 10,
        "exp": int(now) + 3600,
        "email": "alice@example.com",
        "cognito:username": "alice",
    }
    return _apply(claims, overrides)


def _apply(claims: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for name, value in overrides.items():
        name = name.replace("__", ":")  # cognito__groups -> cognito:groups
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


@pytest.fixture
def logger() -> RecordingLogger:
    return RecordingLogger()


@pytest.fixture
def policy() -> TokenPolicy:
    return TokenPolicy(
        issuer=ISSUER,
        client_id=CLIENT_ID,
        cognito=True,
        access_audience=None,
        algorithms=frozenset({"RS256", "ES256"}),
        leeway=LEEWAY,
    )


@pytest.fixture
async def jwks_server(
    aiohttp_server: Callable[..., Any], rsa_a: JWK, ec_key: JWK
) -> AsyncIterator[FakeJwks]:
    fake = FakeJwks(keys=[rsa_a, ec_key])
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", fake.handle)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    fake.url = str(server.make_url("/.well-known/jwks.json"))
    yield fake
    fake.gate.set()
    fake.released.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def make_jwks(
    jwks_server: FakeJwks,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    metrics: Metrics,
    logger: RecordingLogger,
) -> AsyncIterator[Callable[..., JwksCache]]:
    """Build JwksCache objects against the fake server; each is closed at teardown."""
    made: list[JwksCache] = []

    def make(**overrides: Any) -> JwksCache:
        options: dict[str, Any] = {
            "algorithms": ("RS256", "ES256"),
            "refresh_interval": 3600.0,
            "unknown_kid_cooldown": COOLDOWN,
            "timeout": 5.0,
            "clock": clock,
            "metrics": metrics,
            "logger": logger,
            "sleep": FakeSleep(),
        }
        options.update(overrides)
        cache = JwksCache(options.pop("uri", jwks_server.url), session, **options)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


@pytest.fixture
async def jwks(make_jwks: Callable[..., JwksCache]) -> JwksCache:
    cache = make_jwks()
    await cache.start()
    return cache


@pytest.fixture
def validator(policy: TokenPolicy, jwks: JwksCache, clock: FakeClock, metrics: Metrics) -> TokenValidator:
    return TokenValidator(policy, jwks, clock, metrics, cache_size=100)
