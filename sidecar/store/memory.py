"""The in-process store: aiocache's memory cache (TTL by the event loop), leases with a fence value,
timed collections in a dict, and publish/subscribe to this process's own listeners."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiocache import SimpleMemoryCache

from sidecar.store.base import FencedLease, take_lease


class MemoryStore:
    """One process's store. Also what the host store serves to the workers of one host."""

    kind = "memory"

    def __init__(self) -> None:
        self._cache = SimpleMemoryCache()
        self._collections: dict[str, dict[str, float]] = {}
        # Collection -> its size after the last sweep: sweeping again once it doubled keeps an
        # append O(1) amortized and the collection within twice its live size.
        self._swept: dict[str, int] = {}
        self._listeners: dict[str, list[Callable[[str], None]]] = {}

    async def get(self, key: str) -> bytes | None:
        value = await self._cache.get(key)
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._cache.set(key, value, ttl=ttl)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        try:
            await self._cache.add(key, value, ttl=ttl)
        except ValueError:  # aiocache: the key exists
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._cache.delete(key)

    async def lease(self, key: str, ttl: float, fence: bytes | None = None) -> FencedLease | None:
        return await take_lease(self, key, ttl, fence)

    # One event loop: nothing runs between each read and write below (no await suspends there).
    async def renew_if(self, key: str, fence: bytes, ttl: float) -> bool:
        """Extend ``key`` by ``ttl`` while it still holds ``fence``."""
        if await self._cache.get(key) != fence:
            return False
        return bool(await self._cache.expire(key, ttl))

    async def delete_if(self, key: str, fence: bytes) -> None:
        """Delete ``key`` only while it still holds ``fence``."""
        if await self._cache.get(key) == fence:
            await self._cache.delete(key)

    async def append(self, collection: str, member: str, until: float) -> None:
        members = self._collections.setdefault(collection, {})
        members[member] = max(until, members.get(member, until))
        if len(members) >= 2 * self._swept.get(collection, 16):
            self._sweep(collection, members)

    async def members(self, collection: str) -> list[str]:
        members = self._collections.get(collection)
        if members is None:
            return []
        self._sweep(collection, members)
        return list(members)

    def _sweep(self, collection: str, members: dict[str, float]) -> None:
        now = time.time()
        for gone in [m for m, until in members.items() if until <= now]:
            del members[gone]
        self._swept[collection] = max(16, len(members))

    async def publish(self, channel: str, message: str) -> None:
        for listener in list(self._listeners.get(channel, ())):
            listener(message)

    async def listen(self, channel: str, on_message: Callable[[str], None], *,
                     on_failure: Callable[[str, str], None], on_answer: Callable[[], None]) -> None:
        listeners = self._listeners.setdefault(channel, [])
        listeners.append(on_message)
        try:
            on_answer()
            await asyncio.Event().wait()  # until cancelled
        finally:
            with contextlib.suppress(ValueError):
                listeners.remove(on_message)

    async def close(self) -> None:
        self._collections.clear()
        await self._cache.clear()
