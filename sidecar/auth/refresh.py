"""One refresh per refresh token at a time: per process, and across processes through the shared store.

Twenty tabs (or parallel XHRs) noticing an expired access token at once must not send twenty
refresh requests: with rotation the provider accepts only the first and would end the session for
the rest. Callers with the same refresh token share one in-flight request, and callers arriving
shortly after it finished (their cookie still holds the old refresh token) get the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from sidecar.auth.token_digest import RefreshDigest
from sidecar.errors import ProviderError, RefreshFailed
from sidecar.identity import Clock
from sidecar.oidc.client import TokenSet
from sidecar.store.base import Lease, SharedStore, StoreTimeout, StoreUnavailable, new_fence
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Deduplicates concurrent calls by key and remembers each result for ``linger`` seconds.

    At most ``max_entries`` results are remembered (the oldest go first): a renewal holds a session's
    new tokens (about 3.5 KB), so the bound keeps a refresh storm at 1,024 x 3.5 KB = 3.5 MiB. Only
    above ~100 refreshes per second per worker does an entry leave before ``linger``, and then after
    ``max_entries / rate`` seconds (5 s at 200/s, 1 s at 1,000/s), still longer than a browser's
    parallel requests take to arrive.
    """

    def __init__(self, clock: Clock, linger: float = 10.0, max_entries: int = 1024) -> None:
        self._clock = clock
        self._linger = linger
        self._max = max_entries
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}
        self._recent: dict[Hashable, tuple[float, T]] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``'s result, shared with every caller of the same ``key`` (for a refresh, the
        token's :class:`~sidecar.auth.token_digest.RefreshDigest`: never the token itself)."""
        now = self._clock()
        recent = self._recent.get(key)
        if recent is not None and recent[0] > now:
            return recent[1]
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(call())
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._settle(key, f))
        # shield: one impatient caller being cancelled must not cancel the others' refresh.
        return await asyncio.shield(future)

    def _settle(self, key: Hashable, future: asyncio.Future[T]) -> None:
        self._inflight.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return
        now = self._clock()
        # Every entry lingers equally long, so insertion order is expiry order: drop expired ones
        # from the front (they hold tokens; nothing should keep them past the window).
        recent = self._recent
        while recent:
            oldest = next(iter(recent))
            if recent[oldest][0] > now and len(recent) < self._max:
                break
            del recent[oldest]
        recent.pop(key, None)
        recent[key] = (now + self._linger, future.result())

    async def close(self) -> None:
        for future in list(self._inflight.values()):
            future.cancel()
        self._inflight.clear()
        self._recent.clear()


class RefreshFlight:
    """One token request per refresh token across every process that shares ``store``.

    First the in-process :class:`SingleFlight` (callers of this process share one attempt), then
    the shared store: a lease per refresh-token digest (SET NX PX with a fence value), renewed every
    third of its TTL while the token request runs so it never lapses mid-request; the new tokens,
    sealed, under the digest for ``linger`` seconds, so a late request on any process gets the same
    ones. Waiters poll for them (``poll`` seconds) until the leader's lease is gone; then they lead.
    A refused refresh (``invalid_grant``) is shared too, so nobody retries a dead token.

    When the store is down (refused, connection lost) the process refreshes alone (the per-process
    flight still holds). When it is there but slow (:class:`StoreTimeout`), what it did is unknown
    (our ``SET NX`` may have taken the lease; another process may hold it and be refreshing), and a
    second use of a rotating refresh token ends the sign-in: the process never refreshes alone
    then. It keeps looking for the result and for the lease while the store stays silent for up to
    ``patience`` seconds; past that the :class:`StoreTimeout` goes to the caller (a 503 with
    ``Retry-After``, the session's cookies untouched, no token request made). A leader that has
    its tokens keeps trying to share them for up to ``patience`` too, its lease renewed meanwhile,
    so the others' retries find them rather than refreshing the same token again.
    """

    def __init__(self, clock: Clock, store: SharedStore | None, sealer: Sealer | None, *,
                 watch: StoreWatch | None, coordination: Any, wait: float,
                 linger: float = 10.0, lease_ttl: float = 3.0, poll: float = 0.02,
                 patience: float = 3.0) -> None:
        self._local: SingleFlight[TokenSet] = SingleFlight(clock, linger=linger)
        self._store = store
        self._sealer = sealer
        self._watch = watch
        self._coordination = coordination
        self._wait = wait
        self._linger = linger
        self._lease_ttl = lease_ttl
        self._poll = poll
        self._patience = patience

    async def run(self, digest: RefreshDigest, call: Callable[[], Awaitable[TokenSet]]) -> TokenSet:
        """The tokens ``call()`` gets for the refresh token of ``digest``, shared by every caller
        of this process and, through the store, of every other."""
        if self._store is None:
            return await self._local.run(digest, call)
        return await self._local.run(digest, lambda: self._across(digest, call))

    async def _across(self, digest: RefreshDigest, call: Callable[[], Awaitable[TokenSet]]) -> TokenSet:
        store, watch = self._store, self._watch
        assert store is not None
        assert watch is not None
        result_key, lease_key = f"refresh:{digest.hex}:tokens", f"refresh:{digest.hex}:lease"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        # Since when the store has not answered (its commands time out), None while it answers.
        silent_since: float | None = None
        # One fence for every attempt: a lease attempt that timed out may still have been applied,
        # and the next attempt then finds its own fence in the store and goes on as the leader
        # instead of waiting the lease out as somebody else's.
        fence = new_fence()
        try:
            while True:
                attempt = loop.time()
                try:
                    found = await self._result(store, result_key)
                    if found is not None:
                        watch.answered()
                        self._coordination.labels(role="joined").inc()
                        return found
                    lease = await store.lease(lease_key, self._lease_ttl, fence)
                    watch.answered()
                    silent_since = None
                    if lease is not None:
                        # A timeout out of here comes from its look for a result, made before
                        # any token request (the lease is released): look again.
                        return await self._lead(store, lease, result_key, call)
                except StoreTimeout as exc:
                    watch.failed(exc.reason, exc.kind)
                    silent_since = attempt if silent_since is None else silent_since
                    if loop.time() - silent_since >= self._patience:
                        self._coordination.labels(role="timeout").inc()
                        raise
                if loop.time() > deadline:
                    raise ProviderError("refresh_timeout", "another process holds the refresh")
                await asyncio.sleep(self._poll)
        except StoreTimeout:
            raise
        except StoreUnavailable as exc:
            watch.failed(exc.reason, exc.kind)
            self._coordination.labels(role="alone").inc()
            return await call()

    async def _lead(self, store: SharedStore, lease: Lease, result_key: str,
                    call: Callable[[], Awaitable[TokenSet]]) -> TokenSet:
        keeper = asyncio.create_task(self._keep(lease))
        try:
            # Another process may have finished between our look and our lease.
            found = await self._result(store, result_key)
            if found is not None:
                self._coordination.labels(role="joined").inc()
                return found
            self._coordination.labels(role="led").inc()
            try:
                tokens = await call()
            except RefreshFailed:
                await self._share(store, result_key, {"error": "invalid_grant"})
                raise
            await self._share(store, result_key, _token_fields(tokens))
            return tokens
        finally:
            keeper.cancel()
            with contextlib.suppress(StoreUnavailable, asyncio.CancelledError):
                await keeper
            with contextlib.suppress(StoreUnavailable):
                await lease.release()

    async def _keep(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                if not await lease.renew():
                    return
            except StoreTimeout:
                continue  # slow, not lost: two thirds of the TTL are left to try again

    async def _share(self, store: SharedStore, key: str, fields: dict[str, Any]) -> None:
        assert self._sealer is not None
        sealed = self._sealer.seal(key, json.dumps(fields).encode())
        # The tokens are in hand: a store that fails now must not fail the refresh. A slow one is
        # tried again (a put is idempotent) while the lease keeps the others from refreshing the
        # same token: their retries must find these tokens.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._patience
        while True:
            try:
                await store.put(key, sealed, self._linger)
                return
            except StoreTimeout:
                if loop.time() >= give_up:
                    return
                await asyncio.sleep(self._poll)
            except StoreUnavailable:
                return

    async def _result(self, store: SharedStore, key: str) -> TokenSet | None:
        assert self._sealer is not None
        sealed = await store.get(key)
        opened = self._sealer.open(key, sealed) if sealed is not None else None
        if opened is None:
            return None
        fields = json.loads(opened)
        if fields.get("error") == "invalid_grant":
            raise RefreshFailed("invalid_grant")
        return TokenSet(**fields)

    async def close(self) -> None:
        await self._local.close()


def _token_fields(tokens: TokenSet) -> dict[str, Any]:
    return {"access_token": tokens.access_token, "id_token": tokens.id_token,
            "refresh_token": tokens.refresh_token, "expires_in": tokens.expires_in,
            "token_type": tokens.token_type}
