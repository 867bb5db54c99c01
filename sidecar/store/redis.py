"""The Redis store: every replica of a deployment shares it (``store.backend: redis``).

redis-py's asyncio client directly, not aiocache's Redis back end: leases need two small Lua scripts
(renew and release only while the fence value still matches, atomically in Redis), the pool size and
both timeouts must be ours to set, and TLS (``rediss://``) with a private CA must be configurable;
one client with one pool serves every operation. Every failure becomes :class:`StoreUnavailable`;
one that ran out of time (``command_timeout`` reading an answer, connecting, or waiting for a
pooled connection) becomes :class:`StoreTimeout`: Redis may be alive and busy, and the command may
have been applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from sidecar.config import RedisSettings
from sidecar.store.base import FencedLease, StoreTimeout, StoreUnavailable, take_lease

T = TypeVar("T")

# Extend / delete the lease only while it still holds our fence value (a lapsed lease taken over
# by another holder must not be extended or released by the first).
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _failure(exc: BaseException) -> StoreUnavailable:
    """Slow (a timeout: outcome unknown) or down (refused, reset, auth failed): told apart for the
    callers and the metrics. redis-py reports a pool wait that ran out of time as a
    ``ConnectionError`` caused by the timeout: that is a busy client, not a lost Redis."""
    reason = type(exc).__name__
    if isinstance(exc, (RedisTimeout, TimeoutError)) or isinstance(exc.__cause__, TimeoutError):
        return StoreTimeout(reason)
    return StoreUnavailable(reason)


class RedisStore:
    kind = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        self._prefix = settings.key_prefix
        kwargs: dict[str, Any] = {
            "max_connections": settings.pool_size,
            "timeout": settings.command_timeout,  # waiting for a free pooled connection
            "socket_connect_timeout": settings.connect_timeout,
            "socket_timeout": settings.command_timeout,
            "username": settings.username,
            "password": settings.password.get_secret_value() if settings.password else None,
        }
        if settings.url.startswith("rediss://"):
            kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
            if settings.tls_ca_file is not None:
                kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
        pool = aioredis.BlockingConnectionPool.from_url(settings.url, **kwargs)
        self._redis = aioredis.Redis(connection_pool=pool)
        # Where it is, for log lines: never the password.
        self.where = pool.connection_kwargs.get("host", "?")

    async def _call(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        try:
            return await op(self._redis)
        except (RedisError, OSError) as exc:
            raise _failure(exc) from None

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def ping(self) -> None:
        await self._call(lambda r: r.ping())

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda r: r.get(self._key(key)))
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._call(lambda r: r.set(self._key(key), value, px=_ms(ttl)))

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self._call(lambda r: r.set(self._key(key), value, px=_ms(ttl), nx=True)))

    async def delete(self, key: str) -> None:
        await self._call(lambda r: r.delete(self._key(key)))

    async def lease(self, key: str, ttl: float, fence: bytes | None = None) -> FencedLease | None:
        return await take_lease(self, key, ttl, fence)

    async def renew_if(self, key: str, fence: bytes, ttl: float) -> bool:
        return bool(await self._call(lambda r: r.eval(_RENEW, 1, self._key(key), fence, _ms(ttl))))

    async def delete_if(self, key: str, fence: bytes) -> None:
        await self._call(lambda r: r.eval(_RELEASE, 1, self._key(key), fence))

    async def append(self, collection: str, member: str, until: float) -> None:
        """A sorted set scored by ``until``: the passed ones are swept on every append, and the key
        itself lives as long as its latest member (``PEXPIREAT ... GT``, Redis 7)."""
        key = self._key(collection)

        async def run(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {member: until}, gt=True)  # GT still adds a new member
                pipe.zremrangebyscore(key, "-inf", time.time())
                # GT counts a key without expiry as infinite: NX gives a new key its first one.
                pipe.pexpireat(key, int(until * 1000) + 1, nx=True)
                pipe.pexpireat(key, int(until * 1000) + 1, gt=True)
                await pipe.execute()

        await self._call(run)

    async def members(self, collection: str) -> list[str]:
        found = await self._call(
            lambda r: r.zrangebyscore(self._key(collection), f"({time.time()}", "+inf"))
        return [m.decode("ascii", "replace") for m in found if isinstance(m, bytes)]

    async def publish(self, channel: str, message: str) -> None:
        await self._call(lambda r: r.publish(self._key(channel), message))

    async def listen(self, channel: str, on_message: Callable[[str], None], *,
                     on_failure: Callable[[str, str], None], on_answer: Callable[[], None],
                     retry: float = 1.0, max_retry: float = 30.0) -> None:
        """Call ``on_message`` for every message on ``channel`` until cancelled; reconnect with
        backoff when the connection is lost (what was missed meanwhile, the callers' short cache
        lifetime covers)."""
        delay = retry
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._key(channel))
                on_answer()
                delay = retry
                while True:
                    # Below the socket timeout: an idle channel is not a failure.
                    message = await pubsub.get_message(timeout=0.25)
                    if message is not None and isinstance(message.get("data"), bytes):
                        on_message(message["data"].decode("ascii", "replace"))
            except (RedisError, OSError) as exc:
                failure = _failure(exc)
                on_failure(failure.reason, failure.kind)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry)

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
