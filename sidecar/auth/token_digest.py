"""A refresh token's one digest: what every record of it holds instead of the token.

A refresh is keyed three times by the same digest, computed once per refresh and handed down: the
in-process single flight (:mod:`sidecar.auth.refresh`), the shared store's lease and result keys
(every replica of one version derives the same key), and the deny-list (:mod:`sidecar.auth.revocation`),
which is consulted before any token request is made with the token. A plain SHA-256: a refresh token
carries far more than 128 bits of entropy, so no key is needed to keep it unguessable from its
digest, and a Redis dump or a deny-list entry never holds the token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RefreshDigest:
    """SHA-256 of one refresh token (32 bytes); equal digests mean the same token."""

    sha256: bytes

    @property
    def hex(self) -> str:
        """The store's keys (``refresh:<hex>:lease`` and ``refresh:<hex>:tokens``)."""
        return self.sha256.hex()

    @property
    def listed(self) -> str:
        """The deny-list's entry: the first 128 bits in hex, as entries have always been written, so
        a refresh token revoked by an earlier release (kept for the refresh token's lifetime) is
        still refused, and the 100,000-session memory budget holds."""
        return self.sha256[:16].hex()


def refresh_digest(refresh_token: str) -> RefreshDigest:
    """The digest of ``refresh_token``. Total and injective on every ``str`` (a lone surrogate is
    encoded as itself, never replaced or refused); an ASCII token hashes as its bytes."""
    return RefreshDigest(hashlib.sha256(refresh_token.encode("utf-8", "surrogatepass")).digest())
