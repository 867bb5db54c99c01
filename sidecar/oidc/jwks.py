"""The provider's signing keys: an immutable :class:`KeySet` and the :class:`JwksCache` that keeps it fresh.

The request path reads ``JwksCache.keys`` synchronously: a dict lookup by ``kid``. Only a token whose
``kid`` is unknown awaits the network, and then at most once per ``unknown_kid_cooldown`` for the whole
process: concurrent callers share one in-flight fetch, later callers inside the cooldown get ``None``
at once. A fetch that fails, or that yields no usable key, never replaces the last good set.

Why this module keeps its state in plain attributes rather than in aiocache: the state is one
immutable snapshot swapped by reference, read synchronously on every request, and one timestamp for
the unknown-kid cooldown. aiocache's API is coroutine-only (each call runs under ``asyncio.wait_for``),
its TTLs run on the event loop's timer rather than the injected clock, a negative cache *per kid*
would not bound fetches against a client inventing a new kid per request (one global cooldown does),
and keeping signing keys in a shared backend would let whoever can write to that backend mint tokens.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

import aiohttp
from jwcrypto.jwk import JWK

from sidecar.identity import Clock
from sidecar.observability import Metrics

# RFC 7518 §3.1: the key type (and curve) each JWS algorithm needs. HS* is deliberately absent: an
# HMAC "key" taken from a JWKS is public, so accepting one would let anyone sign tokens.
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"P-256": frozenset({"ES256"}), "P-384": frozenset({"ES384"}), "P-521": frozenset({"ES512"})}
# Only these members are read from a JWKS entry: private parts ("d", "p", ...) never reach a JWK.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}
MIN_RSA_BITS = 2048  # NIST SP 800-131A; a smaller provider key is refused, not silently accepted
MAX_JWKS_BYTES = 1024 * 1024


def _capable(kty: object, crv: object) -> frozenset[str]:
    if kty == "RSA":
        return _RSA_ALGS
    if kty == "EC" and isinstance(crv, str):
        return _EC_ALGS.get(crv, frozenset())
    return frozenset()


def accepts(key: JWK, alg: str) -> bool:
    """Whether ``key`` may verify a signature made with ``alg``: right key type and curve, and the
    key's own ``alg`` (RFC 7517 §4.4), if it names one."""
    return key.get("alg", alg) == alg and alg in _capable(key.get("kty"), key.get("crv"))


def _usable_key(entry: object, allowed: frozenset[str]) -> JWK | None:
    """The public verification key for one JWKS entry, or ``None`` if it cannot serve ``allowed``."""
    if not isinstance(entry, Mapping):
        return None
    kid, kty, alg = entry.get("kid"), entry.get("kty"), entry.get("alg")
    if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
        return None
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    algs = _capable(kty, entry.get("crv")) & allowed
    if alg is not None:
        algs = algs & {alg} if isinstance(alg, str) else frozenset()
    if not algs:
        return None
    params = {name: entry[name] for name in _PUBLIC_MEMBERS[str(kty)] if name in entry}
    if alg is not None:
        params["alg"] = alg
    try:
        key = JWK(kty=kty, kid=kid, use="sig", **params)
        # Builds the public key object once: validates it (EC point on the curve, ...) and leaves
        # it cached inside the JWK, so the first verification pays nothing extra.
        public = key.get_op_key("verify", entry.get("crv"))
    except Exception:  # untrusted input to a third-party parser: one bad entry must not spoil the rest
        return None
    if kty == "RSA" and public.key_size < MIN_RSA_BITS:
        return None
    return key


class KeySet:
    """An immutable snapshot of the provider's usable signing keys, indexed by ``kid``."""

    __slots__ = ("_keys", "_kids")

    def __init__(self, keys: Mapping[str, JWK]) -> None:
        self._keys: dict[str, JWK] = dict(keys)
        self._kids = frozenset(self._keys)

    @classmethod
    def from_jwks(cls, doc: Mapping[str, Any], algorithms: Collection[str]) -> KeySet:
        """Keep the entries that can verify one of ``algorithms`` (RFC 7517 §5): signing keys only,
        public parts only, first of duplicate kids; anything unusable is skipped, never fatal."""
        entries = doc.get("keys")
        if not isinstance(entries, list):
            return EMPTY_KEYS
        allowed = frozenset(algorithms)
        keys: dict[str, JWK] = {}
        for entry in entries:
            key = _usable_key(entry, allowed)
            if key is not None:
                keys.setdefault(key["kid"], key)
        return cls(keys) if keys else EMPTY_KEYS

    def get(self, kid: str) -> JWK | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return self._kids

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeySet(kids={sorted(self._kids)})"


EMPTY_KEYS = KeySet({})


class Logger(Protocol):
    def info(self, event: str, /, **kw: Any) -> Any: ...
    def warning(self, event: str, /, **kw: Any) -> Any: ...


class _FetchFailed(Exception):
    """A JWKS fetch that cannot be used; the message is a short description safe to log."""


class JwksCache:
    """The current :class:`KeySet` of one provider, refreshed in the background.

    ``start()`` never raises: until a first fetch succeeds ``ready`` is false and the background task
    retries with exponential backoff (1 s, 2 s, 4 s, ... capped, plus jitter); afterwards it refreshes
    every ``refresh_interval`` and backs off the same way on failure, keeping the last good keys.
    ``sleep`` is the test seam for that schedule.
    """

    def __init__(
        self,
        jwks_uri: str,
        session: aiohttp.ClientSession,
        *,
        algorithms: Collection[str],
        refresh_interval: float,
        unknown_kid_cooldown: float,
        timeout: float,
        clock: Clock,
        metrics: Metrics,
        logger: Logger,
        max_backoff: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._uri = jwks_uri
        self._session = session
        self._algorithms = frozenset(algorithms)
        self._interval = refresh_interval
        self._cooldown = unknown_kid_cooldown
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._metrics = metrics
        self._log = logger
        self._max_backoff = max(1.0, min(max_backoff, refresh_interval))
        self._sleep = sleep
        self._keys = EMPTY_KEYS
        self._ready = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._last_unknown_fetch: float | None = None
        self._removed_callbacks: list[Callable[[frozenset[str]], None]] = []

    @property
    def ready(self) -> bool:
        """Keys have been loaded at least once."""
        return self._ready

    @property
    def keys(self) -> KeySet:
        """The current snapshot; the hot path reads it without awaiting anything."""
        return self._keys

    def on_keys_removed(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call ``callback(kids)`` after a successful refresh dropped the keys ``kids``."""
        self._removed_callbacks.append(callback)

    async def start(self) -> None:
        """Fetch once, then keep refreshing in a background task (started even if the fetch failed)."""
        if self._task is not None:
            return
        await self._shared_fetch("startup")
        self._task = asyncio.create_task(self._run(), name="jwks-refresh")

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._inflight) if t is not None and not t.done()]
        self._task = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def refresh(self, reason: str = "manual") -> bool:
        """Fetch now (joining a fetch already in flight); true if the keys were replaced."""
        return await self._shared_fetch(reason)

    async def key_for(self, kid: str) -> JWK | None:
        """The key for ``kid``, fetching the JWKS at most once per cooldown if it is unknown.

        A provider rotating keys publishes the new one before signing with it, so an unknown kid
        is worth one fetch; a client inventing kids must not turn that into a fetch per request.
        """
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._inflight is None or self._inflight.done():
            now = self._clock()
            last = self._last_unknown_fetch
            if last is not None and 0 <= now - last < self._cooldown:
                return None
            self._last_unknown_fetch = now
        await self._shared_fetch("unknown_kid")
        return self._keys.get(kid)

    async def _shared_fetch(self, reason: str) -> bool:
        task = self._inflight
        if task is None or task.done():
            task = asyncio.create_task(self._fetch_and_swap(reason), name="jwks-fetch")
            self._inflight = task
        # shield: a caller that goes away (client disconnect) does not cancel everyone's fetch.
        return await asyncio.shield(task)

    async def _run(self) -> None:
        failures = 0 if self._ready else 1
        while True:
            await self._sleep(self._delay(failures))
            ok = await self._shared_fetch("scheduled" if self._ready else "startup")
            failures = 0 if ok else failures + 1

    def _delay(self, failures: int) -> float:
        if failures == 0:
            return self._interval
        base = min(2.0 ** min(failures - 1, 16), self._max_backoff)
        # Jitter spreads the retries of many replicas after a provider outage.
        return base + random.uniform(0, base / 4)  # noqa: S311 - scheduling, not security

    async def _fetch_and_swap(self, reason: str) -> bool:
        try:
            keys = KeySet.from_jwks(await self._get_document(), self._algorithms)
            if not keys:
                raise _FetchFailed("no usable signing key")
        except Exception as exc:  # a refresh must never take the process (or the last good keys) down
            error = str(exc) if isinstance(exc, _FetchFailed) else type(exc).__name__
            self._metrics.jwks_refreshes.labels(reason=reason, result="error").inc()
            self._log.warning(
                "jwks_refresh_failed",
                reason=reason, error=error, jwks_uri=self._uri, keys_kept=len(self._keys),
            )
            return False
        old, self._keys, self._ready = self._keys, keys, True
        self._metrics.jwks_refreshes.labels(reason=reason, result="ok").inc()
        self._metrics.jwks_last_success.set(self._clock())
        self._metrics.jwks_keys.set(len(keys))
        added, removed = keys.kids - old.kids, old.kids - keys.kids
        if added or removed:
            self._log.info("jwks_keys_changed", reason=reason, added=sorted(added), removed=sorted(removed))
        if removed:
            for callback in self._removed_callbacks:
                try:
                    callback(removed)
                except Exception as exc:
                    self._log.warning("jwks_removed_callback_failed", error=type(exc).__name__)
        return True

    async def _get_document(self) -> Mapping[str, Any]:
        """GET the JWK Set (RFC 7517 §5); any answer but 200 + a JSON object with a ``keys`` list fails."""
        try:
            async with self._session.get(
                self._uri, timeout=self._timeout, headers={"Accept": "application/json"}
            ) as resp:
                if resp.status != 200:
                    raise _FetchFailed(f"HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise _FetchFailed("document too large")
        except TimeoutError:
            raise _FetchFailed("timeout") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _FetchFailed(type(exc).__name__) from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _FetchFailed("not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise _FetchFailed("not a JWK Set (a JSON object with a 'keys' list)")
        return doc
