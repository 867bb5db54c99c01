"""PKCE (RFC 7636), ``state`` and ``nonce`` values for the authorization code flow.

Every value comes from :mod:`secrets`; nothing here keeps state or reads the clock.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

# RFC 7636 §4.1: code-verifier = 43*128unreserved, unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~".
# Always used with fullmatch: "$" also matches before a trailing newline.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")

# Bytes of randomness in state and nonce: 256 bits, well past the 128 bits RFC 6749 §10.10 asks for.
_RANDOM_BYTES = 32


def new_verifier() -> str:
    """A fresh code verifier: 64 random bytes, base64url without padding (86 characters)."""
    # RFC 7636 §7.1: the verifier needs enough entropy to be impractical to guess; 512 bits is plenty.
    return secrets.token_urlsafe(64)


def challenge_s256(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier``: BASE64URL(SHA256(ASCII(verifier))), unpadded (§4.2).

    Raises :class:`ValueError` for a verifier outside RFC 7636 §4.1's alphabet or length.
    """
    if _VERIFIER.fullmatch(verifier) is None:
        raise ValueError("a PKCE code verifier is 43 to 128 characters of [A-Za-z0-9-._~]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable ``state`` binding the callback to this browser's login (RFC 6749 §10.12)."""
    return secrets.token_urlsafe(_RANDOM_BYTES)


def new_nonce() -> str:
    """An unguessable ``nonce`` that the ID token must echo (OpenID Connect Core §3.1.2.1, §15.5.2)."""
    return secrets.token_urlsafe(_RANDOM_BYTES)
