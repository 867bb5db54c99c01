"""Values sealed before they leave the process: AES-256-GCM under a key derived from cookies.secret.

The store's key is the associated data, so a sealed value moved to another key does not open. A
Redis dump, a replica's memory or a stray log of a value reveals no token without the secret.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12


class Sealer:
    def __init__(self, secret: bytes, label: bytes = b"authsidecar/store/v1") -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)
        self._aead = AESGCM(key)

    def seal(self, key: str, value: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, value, key.encode())

    def open(self, key: str, sealed: bytes) -> bytes | None:
        """The value, or None when it was not sealed for ``key`` with this secret (or is damaged)."""
        if len(sealed) <= _NONCE:
            return None
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], key.encode())
        except InvalidTag:
            return None
