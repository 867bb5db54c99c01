"""Login transactions: state, PKCE verifier, nonce and return_to between /auth/login and /callback.

They travel in one encrypted, HttpOnly cookie (aiohttp-session's ``EncryptedCookieStorage``, Fernet:
AES-128-CBC + HMAC-SHA256), so any replica holding ``cookies.secret`` can finish a login begun on
another. Entries are keyed by ``state`` so logins started in several tabs each complete; the oldest
entries are dropped when the cookie would grow too large. A state used once is remembered (by its
digest) in the shared store — set-if-absent, so exactly one callback wins on any process or replica —
and a replayed callback is refused even with the old cookie. When the shared store does not answer,
this process's own memory still refuses replays it saw.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypedDict

from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sidecar.auth.cookies import CookiePolicy
from sidecar.errors import FlowRejected
from sidecar.identity import Clock
from sidecar.oidc import shape
from sidecar.store.base import SharedStore, StoreUnavailable
from sidecar.store.memory import MemoryStore
from sidecar.store.watch import StoreWatch

# Keep the encrypted cookie well under the browser's 4 KB (Fernet adds ~35% plus 57 bytes).
_MAX_JSON = 2400
_MAX_PENDING = 4


class Transaction(TypedDict):
    verifier: str
    nonce: str
    return_to: str
    created: float


def derive_key(secret: bytes, label: bytes) -> bytes:
    """A 32-byte subkey of ``cookies.secret`` for one purpose (RFC 5869 HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


class TransactionStore:
    """Begin and take login transactions in the encrypted transaction cookie."""

    def __init__(self, secret: bytes, policy: CookiePolicy, max_age: int, clock: Clock, *,
                 spent: SharedStore | None = None, watch: StoreWatch | None = None) -> None:
        attrs = policy.attrs("tx")
        self.name = policy.name("tx")
        self.clear_attrs = policy.clear_attrs("tx")
        self.max_age = max_age
        self.clock = clock
        self.storage = EncryptedCookieStorage(
            derive_key(secret, b"authsidecar/transaction/v1"),
            cookie_name=policy.name("tx"),
            max_age=max_age,
            path=attrs.get("path", "/"),
            domain=attrs.get("domain"),
            secure=attrs.get("secure"),
            httponly=True,
            samesite=attrs.get("samesite"),
        )
        # Spent states: the shared store, and this process's own memory behind it.
        self._local = MemoryStore()
        self._shared = spent if spent is not None and spent is not self._local else None
        self._watch = watch

    def _well_formed(self, request: web.Request) -> bool:
        """False when the cookie is there but cannot be a Fernet token (the decryptor would choke)."""
        value = request.cookies.get(self.name)
        return value is None or shape.fernet_token(value)

    async def begin(self, request: web.Request, response: web.StreamResponse, state: str,
                    tx: Transaction) -> None:
        # A cookie of the wrong shape is no pending login: this one starts afresh and replaces it.
        well_formed = self._well_formed(request)
        session = await (self.storage.load_session(request) if well_formed else self.storage.new_session())
        pending: dict[str, Any] = dict(session.get("tx") or {})
        pending[state] = tx
        # Oldest first (insertion order); drop the oldest while too many or too large.
        while len(pending) > 1 and (len(pending) > _MAX_PENDING or len(json.dumps(pending)) > _MAX_JSON):
            pending.pop(next(iter(pending)))
        session["tx"] = pending
        await self.storage.save_session(request, response, session)

    async def take(self, request: web.Request, response: web.StreamResponse, state: str) -> Transaction:
        """The transaction for ``state``, removed from the cookie (written to ``response``)."""
        key = "spent:" + hashlib.sha256(state.encode()).hexdigest()
        if await self._is_spent(key):
            raise FlowRejected("replayed_callback")
        if not self._well_formed(request):
            # As for a cookie that does not decrypt: there is no transaction to finish.
            raise FlowRejected("missing_transaction")
        session = await self.storage.load_session(request)
        pending: dict[str, Any] = dict(session.get("tx") or {})
        if not pending:
            raise FlowRejected("missing_transaction")
        tx = pending.pop(state, None)
        if not isinstance(tx, dict):
            raise FlowRejected("state_mismatch")
        if not await self._spend(key):
            # Another callback with this state won the race on another process or replica.
            raise FlowRejected("replayed_callback")
        if pending:
            session["tx"] = pending
            await self.storage.save_session(request, response, session)
        else:
            # Not session.invalidate(): aiohttp-session then deletes the cookie without Secure and
            # SameSite, and browsers ignore a `__Host-` cookie set without Secure (RFC 6265bis
            # §4.1.3.2), so the spent transaction would stay. Clear it with the attributes it had.
            response.set_cookie(self.name, "", **self.clear_attrs)
        if self.clock() - float(tx.get("created", 0)) > self.max_age:
            raise FlowRejected("expired_transaction")
        return Transaction(verifier=str(tx["verifier"]), nonce=str(tx["nonce"]),
                           return_to=str(tx["return_to"]), created=float(tx["created"]))

    async def _is_spent(self, key: str) -> bool:
        if await self._local.get(key) is not None:
            return True
        if self._shared is None:
            return False
        try:
            spent = await self._shared.get(key) is not None
        except StoreUnavailable as exc:
            self._failed(exc)
            return False
        self._answered()
        return spent

    async def _spend(self, key: str) -> bool:
        """Mark the state used; False when someone else already did (set-if-absent)."""
        first = await self._local.add(key, b"1", self.max_age)
        if self._shared is None:
            return first
        try:
            won = await self._shared.add(key, b"1", self.max_age)
        except StoreUnavailable as exc:
            self._failed(exc)
            return first
        self._answered()
        return won and first

    def _failed(self, exc: StoreUnavailable) -> None:
        if self._watch is not None:
            self._watch.failed(exc.reason, exc.kind)

    def _answered(self) -> None:
        if self._watch is not None:
            self._watch.answered()

    async def close(self) -> None:
        await self._local.close()
