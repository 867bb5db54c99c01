"""Access and ID token verification (the validation cache, the forged-token memory, the JOSE).

Signatures are checked by jwcrypto only, with the algorithm pinned from our allowlist before any
verification (RFC 8725 §3.1: ``none``, HMAC keyed with a public key, and alg / key-type mismatches
never reach a verifier). The claims are then checked by :func:`sidecar.oidc.claims.check_claims`.

Every failure is a :class:`~sidecar.errors.TokenRejected` with one of these fixed reasons:
``malformed`` ``bad_algorithm`` ``unknown_kid`` ``bad_signature`` ``expired`` ``not_yet_valid``
``wrong_issuer`` ``wrong_audience`` ``wrong_token_use`` ``nonce_mismatch`` ``missing_claim``.

A cache miss does the JOSE work once (RFC 7515 §5.2): the segments are checked for shape, the header
and the payload are each decoded once, and jwcrypto's algorithm (``JWA.signing_alg``, built once per
allowed algorithm) verifies the signature over the token's own bytes up to the second dot, with the
key converted once per JWKS fetch (``sidecar.oidc.jwks``). Nothing is re-encoded or copied.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
from jwcrypto.common import base64url_decode
from jwcrypto.jwa import JWA

from sidecar.errors import TokenRejected
from sidecar.identity import Clock, Identity
from sidecar.observability import Metrics
from sidecar.oidc import shape
from sidecar.oidc.claims import Kind, TokenPolicy, check_claims, identity_from_claims
from sidecar.oidc.jwks import JwksCache, accepts

MAX_TOKEN_LENGTH = shape.MAX_TOKEN
_ACCESS, _ID, _SIGNED = b"access\0", b"id\0", b"signed\0"
_NOT_MISSED: tuple[str | None, bytes | None] = (None, None)
# Protected headers remembered (alg, kid): one per signing key and algorithm in practice; a flood of
# distinct ones empties the map rather than growing it.
_HEADERS_KEPT = 64
# Tokens remembered as forged (a known kid, a signature that does not verify): a replay flood then
# costs a digest and a lookup, not a verification. An entry is a 32-byte digest in an ordered dict,
# about 150 bytes: 16,384 entries (a flood of 10,000 distinct tokens fits) stay under 2.5 MiB
# (tests/oidc/test_forged_tokens.py measures it).
FORGED_CACHE_SIZE = 16384

def _check_segments(token: str) -> list[str]:
    """The three segments of a compact JWS (RFC 7515 §7.1), each base64url of a possible length."""
    # The whole alphabet first: a stray character would be silently skipped by the base64 decoder,
    # and anything not ASCII (undecodable header bytes) must reach neither it nor a digest.
    if not shape.jws_segments(token):
        raise TokenRejected("malformed")
    parts = token.split(".")
    for part in parts:
        if len(part) % 4 == 1:  # no base64 string has this length
            raise TokenRejected("malformed")
    return parts


def _header(segment: str, policy: TokenPolicy) -> tuple[str, str | None]:
    """``(alg, kid)`` from the protected header segment of a compact JWS, ``alg`` on the allowlist."""
    try:
        header = orjson.loads(base64url_decode(segment))
    except ValueError:  # orjson.JSONDecodeError (bad JSON, invalid UTF-8, nesting over 1024) too
        raise TokenRejected("malformed") from None
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise TokenRejected("malformed")
    # RFC 7515 §4.1.11: we understand no extension, so a "crit" header is refused; "b64" (RFC 7797)
    # is not for JWTs.
    if "crit" in header or "b64" in header:
        raise TokenRejected("malformed")
    alg, kid = header["alg"], header.get("kid")
    if alg not in policy.algorithms:
        raise TokenRejected("bad_algorithm")
    if kid is not None and not isinstance(kid, str):
        raise TokenRejected("malformed")
    return alg, kid


def _payload(segment: str) -> dict[str, Any]:
    """The claims of a verified token's payload segment: a JSON object, else ``malformed``."""
    try:
        claims = orjson.loads(base64url_decode(segment))
    except ValueError:
        raise TokenRejected("malformed") from None
    if not isinstance(claims, dict):
        raise TokenRejected("malformed")
    return claims


@dataclass(slots=True)
class _Entry:
    value: Any  # Identity for access tokens, the claims mapping for ID tokens
    valid_until: float
    kid: str


class TokenValidator:
    """Verifies tokens and remembers the verified ones (LRU by token digest, until ``exp``).

    Only a digest of each token is kept, so the cache holds no credential. Entries are indexed by
    ``kid``: when the provider withdraws a key, everything it signed is forgotten at once.
    """

    def __init__(
        self, policy: TokenPolicy, jwks: JwksCache, clock: Clock, metrics: Metrics, cache_size: int,
        keep_claims: Collection[str] | None = None,
    ) -> None:
        self._policy = policy
        self._keep = None if keep_claims is None else frozenset(keep_claims)
        self._jwks = jwks
        self._clock = clock
        self._metrics = metrics
        self._size = cache_size
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._by_kid: dict[str, set[bytes]] = {}
        # Digests of forged tokens, valid for the key set that refused them only: every JWKS fetch
        # builds a new one, and the first lookup after it forgets them all (a rotation, or a
        # provider re-using a kid for a new key, can make one of them verify).
        self._forged: OrderedDict[bytes, None] = OrderedDict()
        self._forged_under: object = None
        self._headers: dict[str, tuple[str, str | None]] = {}
        self._missed: tuple[str | None, bytes | None] = _NOT_MISSED
        # jwcrypto's verifier of each allowed algorithm (RFC 7518 §3), built once.
        self._engines = {
            alg: JWA.signing_alg(alg) for alg in policy.algorithms if alg in JWA.algorithms_registry
        }
        self._hit = metrics.validation_cache.labels(result="hit")
        self._miss = metrics.validation_cache.labels(result="miss")
        self._known_forged = metrics.validation_cache.labels(result="known_forged")
        self._seconds = metrics.validation_seconds
        jwks.on_keys_removed(self.evict_kid)

    def cached(self, token: str) -> Identity | None:
        """The Identity of an access token verified earlier and still valid, else ``None``."""
        identity = None
        digest = self._digest_if_compact(_ACCESS, token)
        if digest is not None:
            identity = self._lookup(digest)
            if identity is None:
                # verify_access(token) follows a miss: it takes this digest instead of hashing the
                # token again (matched by object identity, so never another token's digest).
                self._missed = (token, digest)
        (self._hit if identity is not None else self._miss).inc()
        return identity

    async def access(self, token: str) -> Identity:
        identity = self.cached(token)
        if identity is not None:
            return identity
        return await self.verify_access(token)

    async def verify_access(self, token: str) -> Identity:
        """Verify and cache, without looking in the cache first (the caller just missed it)."""
        missed, self._missed = self._missed, _NOT_MISSED
        digest = missed[1] if missed[0] is token else self._digest_if_compact(_ACCESS, token)
        claims, kid = await self._verify(token, "access", None, digest)
        identity = identity_from_claims(claims, self._keep)
        self._store(digest, identity, claims["exp"], kid)
        return identity

    async def id_token(
        self, token: str, *, nonce: str | None = None, allow_expired: bool = False
    ) -> Mapping[str, Any]:
        """The verified claims of an ID token (cached only when no nonce is being checked).

        ``allow_expired``: every check but ``exp``, for the session's record of who logged in (the
        CSRF binding on /auth/refresh and ``id_token_hint`` at logout); never cached.
        """
        digest = self._digest_if_compact(_ID, token)
        if allow_expired:
            claims, _kid = await self._verify(token, "id", nonce, digest, allow_expired=True)
            return MappingProxyType(claims)
        if nonce is None and digest is not None:
            hit: Mapping[str, Any] | None = self._lookup(digest)
            if hit is not None:
                return hit
        claims, kid = await self._verify(token, "id", nonce, digest)
        frozen = MappingProxyType(claims)
        if nonce is None:
            self._store(digest, frozen, claims["exp"], kid)
        return frozen

    async def signed_claims(self, token: str) -> dict[str, Any]:
        """The claims of a JWS signed by one of the provider's keys with an allowlisted algorithm,
        none of them checked: for tokens of another kind (a back-channel logout token), whose
        claims the caller checks itself. Never cached."""
        claims, _kid = await self._verify(token, None, None, self._digest_if_compact(_SIGNED, token))
        return claims

    def evict_kid(self, kids: frozenset[str]) -> None:
        """Forget every token signed by one of ``kids`` (they left the provider's JWKS)."""
        for kid in kids:
            for digest in self._by_kid.pop(kid, ()):
                self._cache.pop(digest, None)
        self._forged.clear()

    def evict_if(self, revoked: Callable[[Any], bool]) -> int:
        """Forget every cached token whose value (Identity, or ID token claims) ``revoked`` picks."""
        gone = [(digest, entry) for digest, entry in self._cache.items() if revoked(entry.value)]
        for digest, entry in gone:
            self._forget(digest, entry)
        return len(gone)

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _digest(kind: bytes, token: str) -> bytes:
        # A cryptographic digest: a collision would serve one caller another's identity. The
        # prefix keeps access and ID token entries apart (an ID token is never an access token).
        return hashlib.sha256(kind + token.encode()).digest()

    @classmethod
    def _digest_if_compact(cls, kind: bytes, token: str) -> bytes | None:
        """The digest of a token safe to hash (:func:`shape.jws_compact`), else ``None``."""
        return cls._digest(kind, token) if shape.jws_compact(token) else None

    def _lookup(self, digest: bytes) -> Any:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if self._clock() > entry.valid_until:
            self._forget(digest, entry)
            return None
        self._cache.move_to_end(digest)
        return entry.value

    def _store(self, digest: bytes | None, value: Any, exp: float, kid: str) -> None:
        if self._size <= 0 or digest is None:
            return
        old = self._cache.pop(digest, None)
        if old is not None:
            self._forget(digest, old)
        self._cache[digest] = _Entry(value, exp + self._policy.leeway, kid)
        self._by_kid.setdefault(kid, set()).add(digest)
        while len(self._cache) > self._size:
            evicted, entry = self._cache.popitem(last=False)
            self._forget(evicted, entry)

    def _forget(self, digest: bytes, entry: _Entry) -> None:
        self._cache.pop(digest, None)
        digests = self._by_kid.get(entry.kid)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_kid[entry.kid]

    async def _verify(
        self, token: str, kind: Kind | None, nonce: str | None, digest: bytes | None, *,
        allow_expired: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """``digest``: the token's digest for its ``kind`` (None when the token may not be hashed);
        the forged-token memory is keyed by it too."""
        if digest is None:  # not even the cheap shape (shape.jws_compact)
            raise TokenRejected("malformed")
        keys = self._jwks.keys
        if self._forged_under is not keys:
            self._forged.clear()
            self._forged_under = keys
        if digest in self._forged:
            self._known_forged.inc()
            raise TokenRejected("bad_signature")
        header, payload, signature = _check_segments(token)
        alg, kid = self._header(header)
        if kid is None:
            raise TokenRejected("unknown_kid")
        key = self._jwks.keys.get(kid)
        if key is None:
            key = await self._jwks.key_for(kid)
            if key is None:
                raise TokenRejected("unknown_kid")
        engine = self._engines.get(alg)
        if engine is None or not accepts(key, alg):
            raise TokenRejected("bad_algorithm")
        started = time.perf_counter()
        try:
            # RFC 7515 §5.2: the signing input is the token itself up to the second dot.
            signed = token[: len(header) + 1 + len(payload)]
            try:
                engine.verify(key, signed.encode("ascii"), base64url_decode(signature))
            except Exception:
                if self._forged_under is self._jwks.keys:
                    self._remember_forged(digest)
                raise TokenRejected("bad_signature") from None
            claims = _payload(payload)
            if kind is not None:
                check_claims(claims, self._policy, kind=kind, now=self._clock(), nonce=nonce,
                             allow_expired=allow_expired)
            return claims, kid
        finally:
            self._seconds.observe(time.perf_counter() - started)

    def _header(self, segment: str) -> tuple[str, str | None]:
        """:func:`_header`, remembered per header segment: every token a key signs has the same
        one, so a cache miss decodes only its payload. Only accepted headers are kept, in a bounded
        map, and only segments that passed :func:`_check_segments` are looked up."""
        hit = self._headers.get(segment)
        if hit is not None:
            return hit
        hit = _header(segment, self._policy)
        if len(self._headers) >= _HEADERS_KEPT:
            self._headers.clear()
        self._headers[segment] = hit
        return hit

    def _remember_forged(self, digest: bytes) -> None:
        # Only a signature that does not verify under the current key set is remembered: expired,
        # not yet valid, unknown kid and the like can all become (or have been) a valid token.
        self._forged[digest] = None
        if len(self._forged) > FORGED_CACHE_SIZE:
            self._forged.popitem(last=False)
