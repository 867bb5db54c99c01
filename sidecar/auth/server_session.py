"""Server-side sessions (``sessions.mode: server``): the browser holds one opaque id, Redis the tokens.

The session cookie is 256 random bits (43 base64url characters, HttpOnly, under 100 bytes with its
name), so a request head stays small whatever the user's groups: API Gateway refuses more than
10,240 bytes of request line and headers. Redis holds the tokens under the SHA-256 digest of the id
(a Redis dump gives no usable cookie), sealed with AES-256-GCM under a key derived from
``cookies.secret`` (nor any token), with the refresh token's lifetime.

The hot path never waits on Redis for a warm request: each process keeps a session it read for
``sessions.cache_seconds`` (≤ 5 s), and every save or clear is published, so the other processes
drop their copy at once. Concurrent requests of one session not in memory share one ``GET``.
A login always starts a new session id (no fixation); a refresh updates the session in place
under the same id. Each session is indexed by its user and its provider
session (digests of ``sub`` and ``sid``), so that a revocation (admin API, back-channel logout)
deletes every session it names, at once, and publishes their invalidation. A forged, truncated
or unknown id is no session (a 401, never a 500); when Redis does not answer and the session is
not in memory, the request gets a 503 ``session_store_unavailable`` — never a login loop, and
nothing is cleared.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from sidecar.auth import cookies as ck
from sidecar.auth.cookies import CookieKind, CookiePolicy
from sidecar.auth.csrf import CsrfTokens
from sidecar.auth.session import ApplyToResponse, CookieCache, Session, Tokens, applier
from sidecar.store.base import StoreUnavailable
from sidecar.store.redis import RedisStore
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch

# secrets.token_urlsafe(32): 43 characters of the base64url alphabet, no padding.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
CHANNEL = "sessions"
_CACHE_MAX = 10_000


class _Head:
    """One Cookie header, parsed once: its session's key, and the Session last built for it."""

    __slots__ = ("empty", "key", "record", "session")

    def __init__(self, key: str | None, xsrf: str | None, *, malformed: bool = False) -> None:
        self.key = key
        # A session id of the wrong shape (forged, truncated, not ASCII) is told apart from none.
        self.empty = Session(xsrf=xsrf, malformed=malformed)
        self.record: dict[str, Any] | None = None
        self.session = self.empty


# No Cookie header at all: no session, nothing to remember.
_NO_HEAD = _Head(None, None)


class ServerStore:
    """A :class:`~sidecar.auth.session.SessionStore` on Redis; the browser holds the id only."""

    def __init__(self, redis: RedisStore, sealer: Sealer, policy: CookiePolicy, csrf: CsrfTokens,
                 cookies: CookieCache, *, lifetime: int, cache_seconds: float, watch: StoreWatch,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.sealer = sealer
        self.policy = policy
        self.csrf = csrf
        self.cookies = cookies
        self.lifetime = lifetime
        self.cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._watch = watch
        self._name = policy.name("session")
        self._xsrf = policy.name("xsrf")
        # Redis key -> (served from memory until, the tokens or None for "no such session").
        self._cache: OrderedDict[str, tuple[float, dict[str, Any] | None]] = OrderedDict()
        # Redis key -> the GET in flight for it (one per key, shared by concurrent misses).
        self._reading: dict[str, asyncio.Future[dict[str, Any] | None]] = {}

    # -- the SessionStore contract ------------------------------------------------------------------

    async def load(self, request: web.Request) -> Session:
        # The hot path: a browser repeats its Cookie header, so its parse (the id's digest included,
        # remembered beside it in the Cookie-header cache) and the Session built from an unchanged
        # record are reused.
        head = self.cookies.derived(request, self._head, _NO_HEAD)
        if head.key is None:
            return head.empty
        record = await self._record(head.key)
        if record is None:
            # Well-formed but unknown (logged out, expired, another deployment's): no session.
            return head.empty
        if head.record is not record:
            head.session = Session(access_token=record.get("access_token"), id_token=record.get("id_token"),
                                   refresh_token=record.get("refresh_token"), xsrf=head.empty.xsrf)
            head.record = record
        return head.session

    def _head(self, pairs: Mapping[str, str]) -> _Head:
        sid = pairs.get(self._name)
        key = _key_of(sid)
        return _Head(key, pairs.get(self._xsrf), malformed=key is None and bool(sid))

    async def save(self, request: web.Request, tokens: Tokens) -> ApplyToResponse:
        pairs = self.cookies.pairs(request)
        sid = pairs.get(self._name)
        brought = _key_of(sid)
        current = await self._record(brought, fresh=True) if brought and not tokens.fresh_login else None
        staged = web.StreamResponse()
        if brought is not None and current is not None:
            key = brought
        else:
            # A login, or a session that is gone: a new id, never one the browser brought along.
            if tokens.fresh_login and brought is not None:
                await self._forget(brought)
            sid = secrets.token_urlsafe(32)
            key = _key(sid)
            staged.set_cookie(self._name, sid, **self.policy.attrs("session"))
            current = {}
        record = {
            "access_token": tokens.access_token,
            "id_token": tokens.id_token or current.get("id_token"),
            "refresh_token": tokens.refresh_token or current.get("refresh_token"),
            "sub": tokens.sub,
        }
        await self.redis.put(key, self.sealer.seal(key, json.dumps(record).encode()), self.lifetime)
        self._remember(key, record)
        await self.redis.publish(CHANNEL, key)
        until = time.time() + self.lifetime
        await self.redis.append(_index("sub", tokens.sub), key, until)
        if tokens.sid is not None:
            await self.redis.append(_index("sid", tokens.sid), key, until)
        held = pairs.get(self._xsrf)
        if held is None or self.csrf.verify(held, held, tokens.sub) is not None:
            staged.set_cookie(self._xsrf, self.csrf.issue(tokens.sub), **self.policy.attrs("xsrf"))
        # Token cookies of cookie mode the browser may still hold (a switch of modes): gone.
        for kind in ("access", "id", "refresh"):
            for old in ck.stale(self.policy.name(kind), pairs, 0):
                staged.set_cookie(old, "", **self.policy.clear_attrs(kind))
        return applier(staged)

    async def clear(self, request: web.Request) -> ApplyToResponse:
        pairs = self.cookies.pairs(request)
        key = _key_of(pairs.get(self._name))
        if key is not None:
            await self._forget(key)
        staged = web.StreamResponse()
        kinds: tuple[CookieKind, ...] = ("session", "xsrf", "tx", "access", "id", "refresh")
        for kind in kinds:
            name = self.policy.name(kind)
            for old in dict.fromkeys([name, *ck.stale(name, pairs, 0)]):
                staged.set_cookie(old, "", **self.policy.clear_attrs(kind))
        return applier(staged)

    async def end_sessions(self, kind: str, value: str) -> int:
        """Delete every session of a user (``sub``) or a provider session (``sid``); how many."""
        if kind not in ("sub", "sid"):
            return 0
        keys = await self.redis.members(_index(kind, value))
        for key in keys:
            await self._forget(key)
        return len(keys)

    # -- the in-process copy ------------------------------------------------------------------------

    def invalidate(self, key: str) -> None:
        """Drop this process's copy (another process saved or cleared the session)."""
        self._cache.pop(key, None)
        # A read begun before the change may bring the old record: later callers read anew.
        self._reading.pop(key, None)

    async def _record(self, key: str, *, fresh: bool = False) -> dict[str, Any] | None:
        now = self._monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        if fresh:
            # A save reads what is there now: it does not take a read that began earlier.
            record = await self._read(key)
            self._remember(key, record)
            return record
        # The parallel requests of one page whose session is not in memory make one GET, not one
        # each (a burst of them on a slow Redis would otherwise queue N commands behind each other).
        flight = self._reading.get(key)
        if flight is None:
            flight = self._reading[key] = asyncio.ensure_future(self._read(key))
            flight.add_done_callback(lambda done: self._landed(key, done))
        # shield: one caller going away (a closed connection) must not cancel the others' read.
        return await asyncio.shield(flight)

    def _landed(self, key: str, flight: asyncio.Future[dict[str, Any] | None]) -> None:
        current = self._reading.get(key) is flight
        if current:
            del self._reading[key]
        # exception() also marks it retrieved: a failed read nobody waits for logs nothing.
        if flight.cancelled() or flight.exception() is not None:
            return
        if current:
            # Not invalidated while it was read: no newer record is known to this process.
            self._remember(key, flight.result())

    async def _read(self, key: str) -> dict[str, Any] | None:
        try:
            sealed = await self.redis.get(key)
        except StoreUnavailable as exc:
            self._watch.failed(exc.reason, exc.kind)
            raise
        self._watch.answered()
        opened = self.sealer.open(key, sealed) if sealed is not None else None
        record = json.loads(opened) if opened is not None else None
        return record if isinstance(record, dict) else None

    def _remember(self, key: str, record: dict[str, Any] | None) -> None:
        if self.cache_seconds <= 0:
            return
        self._cache[key] = (self._monotonic() + self.cache_seconds, record)
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)

    async def _forget(self, key: str) -> None:
        self.invalidate(key)
        await self.redis.delete(key)
        await self.redis.publish(CHANNEL, key)


def _key_of(session_id: str | None) -> str | None:
    """The Redis key of a well-formed session id (its digest), None for anything else."""
    if session_id is None or SESSION_ID.fullmatch(session_id) is None:
        return None
    return _key(session_id)


def _key(session_id: str) -> str:
    return "session:" + hashlib.sha256(session_id.encode("ascii")).hexdigest()


def _index(kind: str, value: str) -> str:
    """The index of the sessions of one ``sub`` or ``sid`` (a digest: no personal data as a key)."""
    return f"sessions-of-{kind}:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
