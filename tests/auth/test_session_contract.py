"""The contract every SessionStore keeps, run against each store over real HTTP with a real cookie jar.

A store is judged only by what a browser-like client sees across requests: what ``load`` gives back
after ``save`` and ``clear``, that sessions stay apart, that long tokens survive, and that garbage
never raises. A new store (server-side sessions) joins the ``STORES`` table and passes the same tests.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sidecar.auth.cookies import CookiePolicy
from sidecar.auth.csrf import CsrfTokens
from sidecar.auth.server_session import ServerStore
from sidecar.auth.session import CookieCache, CookieStore, SessionStore, Tokens
from sidecar.config import CookieSettings, CsrfSettings, RedisSettings
from sidecar.observability import Metrics, make_logger
from sidecar.store.redis import RedisStore
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch
from tests.conftest import FakeClock
from tests.redis_server import RedisServer

SECRET = b"s" * 32
EMPTY = {"access_token": None, "id_token": None, "refresh_token": None, "xsrf": None, "malformed": False}
APPLY: web.RequestKey[Callable[[web.StreamResponse], None]] = web.RequestKey("apply")


POLICY = CookiePolicy(CookieSettings(secure=False), CsrfSettings())
_prefixes = itertools.count()


def cookie_store(clock: FakeClock, _request: pytest.FixtureRequest) -> SessionStore:
    return CookieStore(POLICY, CsrfTokens(SECRET), CookieCache(POLICY.names.pattern.match), clock,
                       session_max_age=3600)


def server_store(_clock: FakeClock, request: pytest.FixtureRequest) -> SessionStore:
    """Server sessions on a real redis-server, under a key prefix of the test's own."""
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisStore(RedisSettings(url=redis_server.url, key_prefix=f"contract{next(_prefixes)}:"))
    watch = StoreWatch("redis", "127.0.0.1", Metrics(CollectorRegistry()), make_logger(stream=io.StringIO()))
    return ServerStore(redis, Sealer(SECRET), POLICY, CsrfTokens(SECRET),
                       CookieCache(POLICY.names.pattern.match), lifetime=3600, cache_seconds=5, watch=watch)


Browser = Callable[[], TestClient[Any, Any]]
STORES: dict[str, Callable[[FakeClock, pytest.FixtureRequest], SessionStore]] = {
    "cookie": cookie_store, "server": server_store,
}


def app_for(store: SessionStore, clock: FakeClock) -> web.Application:
    async def load(request: web.Request) -> web.Response:
        return web.json_response(asdict(await store.load(request)))

    async def save(request: web.Request) -> web.Response:
        body = await request.json()
        apply = await store.save(request, Tokens(access_exp=clock() + 300, **body))
        response = web.Response(text="saved")
        apply(response)
        return response

    async def save_streamed(request: web.Request) -> web.StreamResponse:
        # A transparent refresh learns its tokens while the app's answer is on its way: the
        # store's answer must still reach the client from on_response_prepare.
        body = await request.json()
        apply = await store.save(request, Tokens(access_exp=clock() + 300, **body))
        response = web.StreamResponse()
        request[APPLY] = apply
        await response.prepare(request)
        await response.write(b"streamed")
        return response

    async def clear(request: web.Request) -> web.Response:
        response = web.Response(text="cleared")
        (await store.clear(request))(response)
        return response

    async def run_hooks(request: web.Request, response: web.StreamResponse) -> None:
        apply = request.get(APPLY)
        if apply is not None:
            apply(response)

    app = web.Application()
    app.on_response_prepare.append(run_hooks)
    app.router.add_get("/auth/load", load)
    app.router.add_post("/auth/save", save)
    app.router.add_post("/auth/save-streamed", save_streamed)
    app.router.add_post("/auth/clear", clear)
    return app


@pytest.fixture(params=sorted(STORES))
async def browser(request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    clock = FakeClock()
    store = STORES[request.param](clock, request)
    server = TestServer(app_for(store, clock), host="127.0.0.1")
    await server.start_server()
    clients: list[TestClient[Any, Any]] = []

    def new_client() -> TestClient[Any, Any]:
        client = TestClient(server, cookie_jar=aiohttp.CookieJar(unsafe=True))
        clients.append(client)
        return client

    yield new_client
    for client in clients:
        await client.close()
    await server.close()
    if isinstance(store, ServerStore):
        await store.redis.close()


async def load(client: TestClient[Any, Any]) -> dict[str, Any]:
    async with client.get("/auth/load") as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def save(client: TestClient[Any, Any], path: str = "/auth/save", **tokens: Any) -> None:
    tokens.setdefault("sub", "user-1")
    async with client.post(path, data=json.dumps(tokens)) as resp:
        assert resp.status == 200
        await resp.read()


async def test_a_new_browser_has_no_session(browser: Browser) -> None:
    assert await load(browser()) == EMPTY


async def test_what_was_saved_is_loaded_back(browser: Browser) -> None:
    client = browser()
    await save(client, access_token="a1", id_token="i1", refresh_token="r1")
    got = await load(client)
    assert (got["access_token"], got["id_token"], got["refresh_token"]) == ("a1", "i1", "r1")


async def test_saving_without_a_refresh_token_keeps_the_one_the_session_has(
    browser: Browser,
) -> None:
    client = browser()
    await save(client, access_token="a1", id_token="i1", refresh_token="r1")
    await save(client, access_token="a2")
    got = await load(client)
    assert (got["access_token"], got["id_token"], got["refresh_token"]) == ("a2", "i1", "r1")


async def test_a_rotated_refresh_token_replaces_the_old_one(browser: Browser) -> None:
    client = browser()
    await save(client, access_token="a1", refresh_token="r1")
    await save(client, access_token="a2", refresh_token="r2")
    assert (await load(client))["refresh_token"] == "r2"


async def test_long_tokens_survive_and_shrinking_leaves_nothing_stale(
    browser: Browser,
) -> None:
    client = browser()
    # Two chunks: aiohttp's client jar sends at most ~8 KB of cookies (browsers send more).
    long_id = "i" * 6000
    await save(client, access_token="a1", id_token=long_id)
    assert (await load(client))["id_token"] == long_id
    await save(client, access_token="a1", id_token="short")
    assert (await load(client))["id_token"] == "short"


async def test_tokens_saved_while_a_response_streams_still_reach_the_browser(
    browser: Browser,
) -> None:
    client = browser()
    await save(client, "/auth/save-streamed", access_token="a1", refresh_token="r1")
    got = await load(client)
    assert (got["access_token"], got["refresh_token"]) == ("a1", "r1")


async def test_clear_ends_the_session(browser: Browser) -> None:
    client = browser()
    await save(client, access_token="a1", id_token="i" * 6000, refresh_token="r1")
    async with client.post("/auth/clear") as resp:
        assert resp.status == 200
    assert await load(client) == EMPTY


async def test_two_browsers_never_see_each_others_session(browser: Browser) -> None:
    alice, bob = browser(), browser()
    await save(alice, access_token="alice-token", sub="alice")
    await save(bob, access_token="bob-token", sub="bob")
    assert (await load(alice))["access_token"] == "alice-token"
    assert (await load(bob))["access_token"] == "bob-token"


async def test_a_csrf_token_for_the_user_is_issued_and_kept_across_saves(
    browser: Browser,
) -> None:
    client = browser()
    await save(client, access_token="a1")
    first = (await load(client))["xsrf"]
    assert first is not None
    assert CsrfTokens(SECRET).verify(first, first, "user-1") is None
    await save(client, access_token="a2")
    assert (await load(client))["xsrf"] == first
    await save(client, access_token="a3", sub="someone-else")
    other = (await load(client))["xsrf"]
    assert other != first
    assert CsrfTokens(SECRET).verify(other, other, "someone-else") is None


@pytest.mark.parametrize(
    "cookie",
    ["access_token=\udcff\udcfe", "access_token=caf\u00e9", "id_token.0=a; id_token.2=c",
     "refresh_token=; x=1", "access_token", ";;;=;"],
    ids=["undecodable-bytes", "latin-1", "chunk-gap", "empty", "no-value", "separators-only"],
)
async def test_garbage_in_the_cookie_header_is_no_session_and_never_an_error(
    browser: Browser, cookie: str,
) -> None:
    client = browser()
    # Sent raw, past the jar: what a hostile client can put in the header.
    async with client.get("/auth/load", headers={"Cookie": cookie.encode("utf-8", "surrogateescape")
                                                  .decode("latin-1")}) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert (got["access_token"], got["id_token"], got["refresh_token"]) == (None, None, None)
