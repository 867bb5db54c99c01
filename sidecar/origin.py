"""The origin of a URL (RFC 6454 §4), normalized: the one definition the schema and the policies share.

Pure and a leaf: the settings schema checks every configured origin with it, and the return-to and
Origin/Referer policies compare what a browser sent with it, so a value the schema accepts is always
one the policies can use.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 §2: unreserved, reserved and "%". Browsers percent-encode everything else, so a raw
# space, tab, backslash, quote or non-ASCII character means a crafted value: refuse it outright
# (parsers disagree about exactly these, WHATWG URL §4.4 vs urllib).
URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, normalized; None when it has no usable origin.

    Lower-cases scheme and host, drops the scheme's default port, keeps IPv6 brackets. Refuses
    userinfo, a bad port and any character outside RFC 3986 (``urlsplit`` silently deletes tabs and
    newlines, so ``https://ap\\tp.example`` must not get the chance to become ``app.example``).
    """
    if not URI_CHARS.fullmatch(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
