"""Server sessions across processes: a change on one reaches the others' in-memory copies by pub/sub."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from sidecar.auth.cookies import CookiePolicy
from sidecar.auth.csrf import CsrfTokens
from sidecar.auth.server_session import CHANNEL, ServerStore
from sidecar.auth.session import CookieCache, Tokens
from sidecar.config import CookieSettings, CsrfSettings, RedisSettings
from sidecar.observability import Metrics, make_logger
from sidecar.store.base import StoreTimeout
from sidecar.store.redis import RedisStore
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch
from tests.redis_server import RedisServer, free_port, start_redis

SECRET = b"k" * 32
POLICY = CookiePolicy(CookieSettings(secure=False), CsrfSettings())
_prefixes = itertools.count()


def request(cookie: str | None = None) -> web.Request:
    return make_mocked_request("GET", "/", headers={"Cookie": cookie} if cookie else {})


async def process(redis_server: RedisServer, prefix: str,
                  timeout: float = 1.0) -> tuple[ServerStore, RedisStore, StoreWatch]:
    redis = RedisStore(RedisSettings(url=redis_server.url, key_prefix=prefix, command_timeout=timeout,
                                     connect_timeout=timeout))
    watch = StoreWatch("redis", "127.0.0.1", Metrics(CollectorRegistry()), make_logger(stream=io.StringIO()))
    cookies = CookieCache(POLICY.names.pattern.match)
    store = ServerStore(redis, Sealer(SECRET), POLICY, CsrfTokens(SECRET), cookies,
                        lifetime=3600, cache_seconds=5, watch=watch)
    return store, redis, watch


@pytest.fixture
async def two_processes(redis_server: RedisServer) -> AsyncIterator[tuple[ServerStore, ServerStore]]:
    prefix = f"pubsub{next(_prefixes)}:"
    a, redis_a, _ = await process(redis_server, prefix)
    b, redis_b, watch_b = await process(redis_server, prefix)
    subscribed = asyncio.Event()

    def answered() -> None:
        watch_b.answered()
        subscribed.set()

    listener = asyncio.create_task(redis_b.listen(CHANNEL, b.invalidate, on_failure=watch_b.failed,
                                                  on_answer=answered))
    await asyncio.wait_for(subscribed.wait(), timeout=5)
    yield a, b
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    await redis_a.close()
    await redis_b.close()


def session_cookie(apply: object, response: web.StreamResponse) -> str:
    apply(response)  # type: ignore[operator]
    jar: SimpleCookie = SimpleCookie()
    for line in response.headers.getall("Set-Cookie"):
        jar.load(line)
    return f"authsidecar_session={jar['authsidecar_session'].value}"


async def test_a_logout_on_one_process_reaches_another_that_holds_the_session_in_memory(
    two_processes: tuple[ServerStore, ServerStore],
) -> None:
    a, b = two_processes
    cookie = session_cookie(await a.save(request(), Tokens("access", 1e12, "user-1", "id", "refresh",
                                                           fresh_login=True)), web.Response())
    assert (await b.load(request(cookie))).access_token == "access"  # now in b's memory for 5 s
    await a.clear(request(cookie))
    for _ in range(100):
        if (await b.load(request(cookie))).access_token is None:
            break
        await asyncio.sleep(0.01)
    assert (await b.load(request(cookie))).access_token is None


async def test_a_refresh_on_one_process_is_what_another_serves_next(
    two_processes: tuple[ServerStore, ServerStore],
) -> None:
    a, b = two_processes
    cookie = session_cookie(await a.save(request(), Tokens("old", 1e12, "user-1", "id", "r1",
                                                           fresh_login=True)), web.Response())
    assert (await b.load(request(cookie))).access_token == "old"
    await a.save(request(cookie), Tokens("new", 1e12, "user-1", None, "r2"))
    for _ in range(100):
        if (await b.load(request(cookie))).access_token == "new":
            break
        await asyncio.sleep(0.01)
    session = await b.load(request(cookie))
    assert (session.access_token, session.refresh_token, session.id_token) == ("new", "r2", "id")


async def test_nothing_in_redis_is_a_token_or_a_session_id(
    two_processes: tuple[ServerStore, ServerStore], redis_server: RedisServer,
) -> None:
    a, _ = two_processes
    tokens = Tokens("eyJaccess.token.x", 1e12, "user-1", "eyJid.token.y", "refresh-secret-value",
                    fresh_login=True)
    cookie = session_cookie(await a.save(request(), tokens), web.Response())
    sid = cookie.split("=", 1)[1]
    # What an operator's dump of the whole Redis shows.
    dump = b""
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        for key in await raw.keys("*"):
            if await raw.type(key) == b"zset":  # the sessions of one user (or provider session)
                dump += key + b"".join(await raw.zrange(key, 0, -1))
            else:
                dump += key + (await raw.get(key) or b"")
    finally:
        await raw.aclose()
    assert b"session:" in dump
    assert b"sessions-of-sub:" in dump
    for secret in (b"eyJaccess", b"eyJid", b"refresh-secret-value", sid.encode(), b"user-1"):
        assert secret not in dump


async def _gets(raw: aioredis.Redis) -> int:
    """GET commands Redis has served so far (its own accounting, INFO commandstats)."""
    stats = await raw.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_concurrent_requests_of_a_session_not_in_memory_make_one_redis_get(
    redis_server: RedisServer,
) -> None:
    prefix = f"coalesce{next(_prefixes)}:"
    writer, redis_w, _ = await process(redis_server, prefix)
    reader, redis_r, _ = await process(redis_server, prefix)  # another process: nothing in memory
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        cookie = session_cookie(await writer.save(request(), Tokens("access", 1e12, "user-1", "id", "r",
                                                                    fresh_login=True)), web.Response())
        before = await _gets(raw)
        sessions = await asyncio.gather(*(reader.load(request(cookie)) for _ in range(20)))
        assert await _gets(raw) - before == 1
        assert [s.access_token for s in sessions] == ["access"] * 20
    finally:
        await raw.aclose()
        await redis_w.close()
        await redis_r.close()


async def test_concurrent_requests_on_a_slow_redis_each_get_store_timeout_and_nothing_is_cleared(
    tmp_path: Path,
) -> None:
    own = start_redis(tmp_path, free_port())
    try:
        writer, redis_w, _ = await process(own, "slow:")
        reader, reader_redis, _ = await process(own, "slow:", timeout=0.1)
        cookie = session_cookie(await writer.save(request(), Tokens("access", 1e12, "user-1", "id", "r",
                                                                    fresh_login=True)), web.Response())
        with own.paused():
            failed = await asyncio.gather(*(reader.load(request(cookie)) for _ in range(5)),
                                          return_exceptions=True)
        assert [type(f) for f in failed] == [StoreTimeout] * 5
        # Fast again: the session is there, untouched.
        assert (await reader.load(request(cookie))).access_token == "access"
        await redis_w.close()
        await reader_redis.close()
    finally:
        own.stop()
