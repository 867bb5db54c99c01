"""The deny-list: a revoked session is refused by every process and replica within a second.

What a revocation names (:class:`Revoked`):

* ``jti`` — one access token; ``origin_jti`` — every token of one Cognito sign-in (refreshed ones
  keep it); ``sid`` — every token of one provider session (OIDC Front/Back-Channel Logout);
* ``sub`` — every token of one user issued at or before the revocation (``iat`` ≤ ``at``): a login
  after it works (one second later at most: ``iat`` counts whole seconds);
* ``refresh`` — a refresh token's digest: refused before any token request is made with it.

Each entry leaves at ``until``, when every token it can refuse has expired anyway: memory stays
bounded by the revocations of one token lifetime.

The hot path (:meth:`DenyList.refuses`) reads the in-process copy only: a few dict lookups on the
claims the validator kept (:data:`CLAIMS`), one boolean test while nothing is revoked. The copy is
fed by the shared store: a revocation is applied here at once, added to the store's ``revoked``
collection (which a starting process loads) and published on the ``revoked`` channel that every
process listens to — Redis for a fleet, the supervisor's host store for the workers of one host, this
process alone otherwise. Entries are sealed (AES-GCM, :mod:`sidecar.store.sealed`) before they leave
the process: a ``sub`` is personal data.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from sidecar.auth.token_digest import RefreshDigest, refresh_digest
from sidecar.errors import TokenRejected
from sidecar.identity import Clock, Identity
from sidecar.observability import Logger, Metrics
from sidecar.oidc.provider import ProviderLink
from sidecar.store.base import SharedStore, StoreUnavailable
from sidecar.store.sealed import Sealer
from sidecar.store.watch import StoreWatch

Kind = Literal["jti", "origin_jti", "sid", "sub", "refresh"]
KINDS: tuple[Kind, ...] = get_args(Kind)
Source = Literal["logout", "admin", "backchannel"]
# The store's collection and channel (the store prefixes them).
CHANNEL = "revoked"
# What the hot path reads from an access token: the validator keeps these in Identity.claims.
CLAIMS = ("jti", "origin_jti", "sid", "iat")
# What the session check reads from an ID token (its ``sub`` too): all ``refuses_claims`` looks at.
ID_CLAIMS = (*CLAIMS, "sub")
# Claims looked up as they are (their presence alone refuses the token).
_BY_PRESENCE: tuple[Kind, ...] = ("jti", "origin_jti", "sid")


class SessionEnder(Protocol):
    """Server-side sessions that a revocation deletes (``sessions.mode: server``)."""

    async def end_sessions(self, kind: str, value: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Revoked:
    """One deny-list entry."""

    kind: Kind
    value: str
    # Wall-clock time the entry may leave: everything it refuses has expired by then.
    until: float
    # ``sub`` only: tokens issued at or before this time are refused.
    at: float = 0.0


class DenyList:
    """The in-process copy: one dict per kind, value -> until (``sub``: also the revocation time)."""

    def __init__(self) -> None:
        self._tables: dict[Kind, dict[str, float]] = {kind: {} for kind in KINDS}
        self._sub_at: dict[str, float] = {}
        self._size = 0
        self._swept_size = 1024

    def __len__(self) -> int:
        return self._size

    def add(self, entry: Revoked, now: float) -> bool:
        """Add (or extend) ``entry``; True when it refuses more than before."""
        if entry.until <= now:
            return False
        table = self._tables[entry.kind]
        old = table.get(entry.value)
        grew = old is None
        if old is None:
            self._size += 1
        table[entry.value] = entry.until if old is None else max(old, entry.until)
        if entry.kind == "sub":
            before = self._sub_at.get(entry.value, 0.0)
            if entry.at > before:
                self._sub_at[entry.value] = entry.at
                grew = True
        if self._size >= 2 * self._swept_size:
            self.sweep(now)
        return grew

    def sweep(self, now: float) -> None:
        """Forget the entries whose time has passed."""
        for kind, table in self._tables.items():
            for gone in [value for value, until in table.items() if until <= now]:
                del table[gone]
                if kind == "sub":
                    self._sub_at.pop(gone, None)
        self._size = sum(len(table) for table in self._tables.values())
        self._swept_size = max(1024, self._size)

    def refuses(self, identity: Identity) -> bool:
        """Whether an access token's identity is revoked (the hot path)."""
        if not self._size:
            return False
        return self.refuses_claims(identity.claims, identity.sub)

    def refuses_claims(self, claims: Mapping[str, Any], sub: object = None) -> bool:
        """Whether a token with these claims is revoked (``sub``: when ``claims`` lack it)."""
        if not self._size:
            return False
        tables = self._tables
        for kind in _BY_PRESENCE:
            table = tables[kind]
            if table:
                value = claims.get(kind)
                if isinstance(value, str) and value in table:
                    return True
        if self._sub_at:
            sub = claims.get("sub", sub)
            at = self._sub_at.get(sub) if isinstance(sub, str) else None
            if at is not None:
                iat = claims.get("iat")
                # Without an iat the token cannot show it is newer than the revocation.
                if not isinstance(iat, (int, float)) or isinstance(iat, bool) or iat <= at:
                    return True
        return False

    def refuses_refresh(self, digest: RefreshDigest) -> bool:
        """Whether the refresh token of ``digest`` is revoked (checked before any token request)."""
        table = self._tables["refresh"]
        return bool(table) and digest.listed in table


class Revocation:
    """The deny-list of this process, kept in step with every other through the shared store."""

    def __init__(self, store: SharedStore, sealer: Sealer, *, clock: Clock, provider: ProviderLink,
                 metrics: Metrics, log: Logger, watch: StoreWatch, max_lifetime: float,
                 refresh_lifetime: float, leeway: float, sessions: SessionEnder | None = None) -> None:
        self.deny = DenyList()
        self.max_lifetime = max_lifetime
        self._refresh_lifetime = refresh_lifetime
        self._leeway = leeway
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self._provider = provider
        self._metrics = metrics
        self._log = log
        self._watch = watch
        self._evict_pending = False
        self._loading: asyncio.Task[None] | None = None
        # Server-side sessions (sessions.mode: server), deleted by a revocation that names them.
        self.sessions = sessions

    # -- the hot path ---------------------------------------------------------------------------

    def refuses(self, identity: Identity) -> bool:
        return self.deny.refuses(identity)

    def refuses_claims(self, claims: Mapping[str, Any]) -> bool:
        return self.deny.refuses_claims(claims)

    def refuses_refresh(self, digest: RefreshDigest) -> bool:
        return self.deny.refuses_refresh(digest)

    # -- what to revoke ------------------------------------------------------------------------------

    async def of_session(self, access_token: str | None, id_token: str | None,
                         refresh_token: str | None) -> list[Revoked]:
        """The identifiers of a session ending here: its tokens verified (the ID token even
        expired, as for ``id_token_hint``), never taken on trust — a forged cookie revokes nothing."""
        now = self._clock()
        entries: list[Revoked] = []
        provider = self._provider.current
        if provider is not None:
            until = now + self.max_lifetime
            if access_token and access_token.isascii():
                try:
                    identity = await provider.validator.access(access_token)
                except TokenRejected:
                    identity = None
                if identity is not None:
                    claims = identity.claims
                    jti = claims.get("jti")
                    if isinstance(jti, str):
                        entries.append(Revoked("jti", jti, identity.expires_at + self._leeway))
                    entries.extend(Revoked(kind, value, until) for kind in ("origin_jti", "sid")
                                   if isinstance(value := claims.get(kind), str))
            if id_token and id_token.isascii():
                try:
                    id_claims = await provider.validator.id_token(id_token, allow_expired=True)
                except TokenRejected:
                    id_claims = {}
                entries.extend(Revoked(kind, value, until) for kind in ("origin_jti", "sid")
                               if isinstance(value := id_claims.get(kind), str))
        if refresh_token and refresh_token.isascii():
            entries.append(Revoked("refresh", refresh_digest(refresh_token).listed,
                                   now + self._refresh_lifetime))
        return list(dict.fromkeys(entries))

    def of_subject(self, kind: Kind, value: str) -> Revoked:
        """An admin's or the provider's revocation of a user (``sub``), a session (``sid``) or a
        token (``jti``): kept for the longest token lifetime."""
        now = self._clock()
        return Revoked(kind, value, now + self.max_lifetime, at=now if kind == "sub" else 0.0)

    # -- adding -----------------------------------------------------------------------------------

    async def revoke(self, entries: Iterable[Revoked], source: Source) -> int:
        """Refuse ``entries`` here at once, then on every other process; returns how many tokens
        this process had cached that are now refused (the sessions it knew).

        A store that does not answer leaves the revocation to this process (logged, counted):
        logout still completes, and the tokens still expire.
        """
        entries = list(entries)
        now = self._clock()
        for entry in entries:
            self.deny.add(entry, now)
        evicted = self._evict()
        self._metrics.revocations.labels(source=source).inc()
        try:
            for entry in entries:
                member = self._seal(entry)
                await self._store.append(CHANNEL, member, entry.until)
                await self._store.publish(CHANNEL, member)
            if self.sessions is not None:
                # Server sessions: deleted outright (and dropped from every process's cache).
                deleted = 0
                for entry in entries:
                    deleted += await self.sessions.end_sessions(entry.kind, entry.value)
                evicted = max(evicted, deleted)
        except StoreUnavailable as exc:
            self._watch.failed(exc.reason, exc.kind)
            self._log.warning("revocation_not_shared", store=self._store.kind, reason=exc.reason)
        return evicted

    def receive(self, message: str) -> None:
        """A revocation published by any process (this one included): into the local copy."""
        entry = self._open(message)
        if entry is not None and self.deny.add(entry, self._clock()):
            self._evict_soon()

    async def listen(self) -> None:
        """Follow the ``revoked`` channel until cancelled; reload everything at each (re)subscribe."""
        try:
            await self._store.listen(CHANNEL, self.receive, on_failure=self._watch.failed,
                                     on_answer=self._subscribed)
        finally:
            if self._loading is not None:
                self._loading.cancel()

    def _subscribed(self) -> None:
        self._watch.answered()
        # Subscribed first, loaded second: nothing published in between is missed.
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self.load(), name="revocation-load")

    async def load(self) -> None:
        """Everything still revoked in the shared store (a process that starts or reconnects)."""
        try:
            members = await self._store.members(CHANNEL)
        except StoreUnavailable as exc:
            self._watch.failed(exc.reason, exc.kind)
            return
        for member in members:
            self.receive(member)

    # -- the validation cache -----------------------------------------------------------------------

    def _evict_soon(self) -> None:
        """Drop revoked identities from the validation cache, once per burst of revocations."""
        if not self._evict_pending:
            self._evict_pending = True
            asyncio.get_running_loop().call_soon(self._evict)

    def _evict(self) -> int:
        """Evict; returns how many access tokens (sessions, as this process knew them) went."""
        self._evict_pending = False
        provider = self._provider.current
        if provider is None:
            return 0
        sessions = 0

        def refused(value: object) -> bool:
            nonlocal sessions
            if isinstance(value, Identity):
                gone = self.deny.refuses(value)
                sessions += gone
                return gone
            return isinstance(value, Mapping) and self.deny.refuses_claims(value)

        provider.validator.evict_if(refused)
        return sessions

    # -- on the wire ----------------------------------------------------------------------------------

    def _seal(self, entry: Revoked) -> str:
        data = json.dumps([entry.kind, entry.value, entry.until, entry.at]).encode()
        return base64.urlsafe_b64encode(self._sealer.seal(CHANNEL, data)).decode("ascii")

    def _open(self, message: str) -> Revoked | None:
        try:
            opened = self._sealer.open(CHANNEL, base64.urlsafe_b64decode(message))
            kind, value, until, at = json.loads(opened) if opened is not None else (None,) * 4
        except (ValueError, TypeError):
            return None
        if kind not in KINDS or not isinstance(value, str) or not isinstance(until, (int, float)) \
                or not isinstance(at, (int, float)):
            return None
        return Revoked(kind, value, float(until), float(at))
