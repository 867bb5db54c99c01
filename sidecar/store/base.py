"""The shared store: what the processes and replicas of one deployment share.

Three implementations behind one protocol, each passing the same contract suite
(``tests/store/test_contract.py``):

* :class:`~sidecar.store.memory.MemoryStore` — one process (the default), or the host store's
  back end;
* :class:`~sidecar.store.host.HostStoreClient` — the workers of ``serve --workers N`` on one host,
  through the supervisor over a private Unix socket (no Redis needed);
* :class:`~sidecar.store.redis.RedisStore` — every replica of a deployment (``store.backend: redis``).

Values are bytes the caller has already sealed (:mod:`sidecar.store.sealed`) when they hold anything
secret: a Redis dump alone reveals no token. Keys are digests and fixed names, never a credential.
A store that cannot answer raises :class:`StoreUnavailable`; callers decide what to fall back to.
One that is there but too slow raises :class:`StoreTimeout`: what the command did is then unknown
(a ``SET NX`` may have been applied), so a caller that coordinates through it must not act as if
nobody else could (``sidecar.auth.refresh`` waits, then answers 503, rather than refresh alone).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

from sidecar.errors import SidecarError


class StoreUnavailable(SidecarError):
    """The shared store did not answer (down, refused, connection lost, or too slow: see
    :class:`StoreTimeout`). ``reason`` is a fixed identifier; ``kind`` the metric label."""

    kind = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StoreTimeout(StoreUnavailable):
    """The store is reachable but did not answer in time: the command's outcome is unknown."""

    kind = "timeout"


class Lease(Protocol):
    """Exclusive right to do one piece of work for a key, until released or expired."""

    async def renew(self) -> bool:
        """Extend the lease by its TTL; False when it was lost (expired and taken by another)."""
        ...

    async def release(self) -> None:
        """Give it up, only if still held by this holder (fencing value compared in the store)."""
        ...


class Fenced(Protocol):
    """What a store offers a :class:`FencedLease`: set-if-absent and fence-checked renew / delete."""

    async def add(self, key: str, value: bytes, ttl: float) -> bool: ...

    async def renew_if(self, key: str, fence: bytes, ttl: float) -> bool:
        """Extend ``key`` by ``ttl`` while it still holds ``fence`` (atomically in the store)."""
        ...

    async def delete_if(self, key: str, fence: bytes) -> None:
        """Delete ``key`` only while it still holds ``fence`` (atomically in the store)."""
        ...


class FencedLease:
    """A lease held by a random fence value: a lapsed lease taken over by another holder is
    neither renewed nor released by the first."""

    def __init__(self, store: Fenced, key: str, fence: bytes, ttl: float) -> None:
        self._store = store
        self._key = key
        self._fence = fence
        self._ttl = ttl

    async def renew(self) -> bool:
        return await self._store.renew_if(self._key, self._fence, self._ttl)

    async def release(self) -> None:
        await self._store.delete_if(self._key, self._fence)


def new_fence() -> bytes:
    """A fence value no other holder will have."""
    return secrets.token_hex(16).encode()


async def take_lease(store: Fenced, key: str, ttl: float, fence: bytes | None = None) -> FencedLease | None:
    """The lease on ``key`` for ``ttl`` seconds (SET NX with a fence), or None while another holds it.

    ``fence``: the caller's own, kept across its attempts: an attempt whose answer was lost (a
    timeout) may have set it, so a lease found holding it is the caller's and is returned, renewed,
    rather than waited out as somebody else's. None: a fresh fence, one command.
    """
    mine = fence is not None
    fence = fence if fence is not None else new_fence()
    if await store.add(key, fence, ttl) or (mine and await store.renew_if(key, fence, ttl)):
        return FencedLease(store, key, fence, ttl)
    return None


class SharedStore(Protocol):
    """Bytes under keys with a time to live, set-if-absent, leases with fencing, timed collections
    of strings, and publish/subscribe."""

    # "memory", "host" or "redis": the metric label and log field.
    kind: str

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Set ``key`` only if absent; True when this call set it."""
        ...

    async def delete(self, key: str) -> None: ...

    async def lease(self, key: str, ttl: float, fence: bytes | None = None) -> Lease | None:
        """Take the lease on ``key`` for ``ttl`` seconds, or None while another holds it.

        ``fence``: the caller's own across its attempts (see :func:`take_lease`)."""
        ...

    async def append(self, collection: str, member: str, until: float) -> None:
        """Add ``member`` to ``collection`` until the wall-clock time ``until`` (then it leaves)."""
        ...

    async def members(self, collection: str) -> list[str]:
        """Every member of ``collection`` whose time has not passed (what a starting process loads)."""
        ...

    async def publish(self, channel: str, message: str) -> None:
        """Push ``message`` to every process listening on ``channel`` (this one included)."""
        ...

    async def listen(self, channel: str, on_message: Callable[[str], None], *,
                     on_failure: Callable[[str, str], None], on_answer: Callable[[], None]) -> None:
        """Call ``on_message`` for every message on ``channel`` until cancelled.

        ``on_answer`` runs each time the subscription is (re)established: what was published while
        it was down is lost, so a listener reloads from :meth:`members` then. A lost connection is
        reported to ``on_failure`` (reason, and ``timeout`` or ``unavailable`` as
        :attr:`StoreUnavailable.kind`) and retried with backoff.
        """
        ...

    async def close(self) -> None: ...
