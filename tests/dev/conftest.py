from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from sidecar.dev.provider import DevProvider, ProviderConfig
from tests.conftest import FakeClock
from tests.dev._support import LOGOUT, REDIRECT

ProviderFactory = Callable[..., Awaitable[tuple[DevProvider, TestClient[Any, Any]]]]


@pytest.fixture
def make_provider(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, clock: FakeClock
) -> ProviderFactory:
    """Start a provider on loopback with the given config fields; returns (provider, client)."""

    async def start(**config: Any) -> tuple[DevProvider, TestClient[Any, Any]]:
        config.setdefault("redirect_uris", (REDIRECT,))
        config.setdefault("logout_uris", (LOGOUT,))
        provider = DevProvider(ProviderConfig(**config), clock)
        server: TestServer = await aiohttp_server(provider.app(), host="127.0.0.1")
        provider.issuer = str(server.make_url(""))
        client: TestClient[Any, Any] = await aiohttp_client(server)
        return provider, client

    return start


@pytest.fixture
async def served(make_provider: ProviderFactory) -> tuple[DevProvider, TestClient[Any, Any]]:
    return await make_provider()
