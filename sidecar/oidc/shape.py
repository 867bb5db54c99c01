"""Shape checks for what a client sends, run before anything hashes, decodes or looks it up.

Pure predicates over ``str | None``: true when the value has the shape its kind always has. aiohttp
hands undecodable header bytes over as lone surrogates (``surrogateescape``), so a value may hold
anything; a check here is the first thing that touches it, and a value that fails is refused with
the fixed reason ``malformed`` (401 for a credential, 400 for a login-flow parameter), never passed
on to ``str.encode``, a digest, a base64 decoder or a cache.

The checks are as cheap as their position needs. :func:`jws_compact` runs on every request (its cost
is a few C calls, whatever the token's length); the full alphabet check of each segment runs on a
validation-cache miss only (:func:`jws_segments`, called by ``sidecar.oidc.tokens``), before the
header is decoded.
"""

from __future__ import annotations

import re
from typing import TypeGuard

# Longest token looked at (bytes): far beyond any provider's, small enough to hash for nothing.
MAX_TOKEN = 16 * 1024
# Fernet tokens (the login transaction cookie): URL-safe base64 (RFC 4648 §5) with padding. The
# cookie is kept under 4 KB when it is written (sidecar.auth.transaction).
MAX_FERNET = 4096
# ``state`` is ours: 32 random bytes in base64url, 43 characters. Generous, never unbounded.
MAX_STATE = 128
# RFC 6749 Appendix A.11: ``code = 1*VSCHAR``; no provider's code is near this long.
MAX_CODE = 4096

_SEGMENT = r"[A-Za-z0-9_-]"
# RFC 7515 §7.1: BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature), unpadded.
_JWS = re.compile(rf"{_SEGMENT}+\.{_SEGMENT}+\.{_SEGMENT}*")
_FERNET = re.compile(rf"[A-Za-z0-9_=-]{{1,{MAX_FERNET}}}")
_STATE = re.compile(rf"{_SEGMENT}{{1,{MAX_STATE}}}")
_CODE = re.compile(rf"[\x20-\x7e]{{1,{MAX_CODE}}}")


def jws_compact(token: str | None) -> TypeGuard[str]:
    """Cheap: ASCII, at most :data:`MAX_TOKEN` long, three dot-separated parts, the first two non-empty.

    Enough to make hashing and a cache lookup safe; :func:`jws_segments` checks the alphabet.
    """
    return (
        token is not None
        and len(token) <= MAX_TOKEN
        and token.isascii()
        and token.count(".") == 2
        and not token.startswith(".")
        and ".." not in token
    )


def jws_segments(token: str) -> bool:
    """The whole compact serialization: three base64url segments (RFC 7515 §7.1), bounded."""
    return len(token) <= MAX_TOKEN and _JWS.fullmatch(token) is not None


def fernet_token(value: str) -> bool:
    """A value the transaction cookie's decryptor may be given (URL-safe base64, bounded)."""
    return _FERNET.fullmatch(value) is not None


def state(value: str) -> bool:
    """An OAuth ``state`` the sidecar could have issued (base64url, bounded)."""
    return _STATE.fullmatch(value) is not None


def auth_code(value: str) -> bool:
    """An authorization ``code`` as RFC 6749 allows it (visible ASCII and space, bounded)."""
    return _CODE.fullmatch(value) is not None
