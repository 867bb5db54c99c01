"""The in-process store: aiocache's memory cache (TTL by the event loop), leases with a fence value."""

from __future__ import annotations

import secrets

from aiocache import SimpleMemoryCache


class MemoryLease:
    def __init__(self, store: MemoryStore, key: str, fence: bytes, ttl: float) -> None:
        self._store = store
        self._key = key
        self.fence = fence
        self._ttl = ttl

    async def renew(self) -> bool:
        return await self._store.renew_if(self._key, self.fence, self._ttl)

    async def release(self) -> None:
        await self._store.delete_if(self._key, self.fence)


class MemoryStore:
    """One process's store. Also what the host store serves to the workers of one host."""

    kind = "memory"

    def __init__(self) -> None:
        self._cache = SimpleMemoryCache()

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

    async def lease(self, key: str, ttl: float) -> MemoryLease | None:
        fence = secrets.token_hex(16).encode()
        if not await self.add(key, fence, ttl):
            return None
        return MemoryLease(self, key, fence, ttl)

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

    async def close(self) -> None:
        await self._cache.clear()
