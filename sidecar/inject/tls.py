"""The webhook's serving certificate, reloaded when its files change.

cert-manager (or a script) renews the certificate by replacing the Secret's files; the kubelet
swaps the whole mounted directory at once. Every ``interval`` the files' stat signatures (mtime,
size, inode) are compared; on a change a fresh ``SSLContext`` is built from them. Only once that
succeeded does it serve: the listener's context hands each new handshake the current context from
its SNI callback (OpenSSL calls it for every ClientHello, with or without a server name). Loading
the new pair into the live context instead (``load_cert_chain`` on it) could leave it half
replaced, a new certificate beside the old key, when the files are caught mid-write.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from sidecar.server import tls_context

Signature = tuple[tuple[int, int, int, int] | None, ...]


def not_after(cert: Path) -> float:
    """The certificate's expiry (seconds since the epoch), for the metric that alerts before it."""
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    return leaf.not_valid_after_utc.timestamp()


class CertReloader:
    """Serves ``cert``/``key``; :meth:`check` picks up new files (raises at start-up if unusable)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._seen = self._signature()
        self._current = tls_context(cert, key)
        self.expires_at = not_after(cert)
        # What the listener is given: every handshake is switched to the current context.
        self.context = tls_context(cert, key)
        self.context.sni_callback = self._select
        self._changed = asyncio.Event()

    def _select(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        connection.context = self._current

    def _signature(self) -> Signature:
        out: list[tuple[int, int, int, int] | None] = []
        for path in (self.cert, self.key):
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        return tuple(out)

    def check(self) -> str | None:
        """``"ok"`` when new files now serve, ``"failed"`` when they could not be loaded (the old
        ones go on serving), None when nothing changed. One attempt per change of the files."""
        signature = self._signature()
        if signature == self._seen:
            return None
        self._seen = signature
        try:
            fresh = tls_context(self.cert, self.key)
            expires_at = not_after(self.cert)
        except (OSError, ssl.SSLError, ValueError):
            return "failed"
        self._current, self.expires_at = fresh, expires_at
        self._changed.set()
        self._changed = asyncio.Event()
        return "ok"

    async def changed(self) -> None:
        """Returns once new files serve (for whoever waits on a renewal, e.g. a test)."""
        await self._changed.wait()

    async def watch(self, interval: float, report: Callable[[str], None]) -> None:
        """Check every ``interval`` seconds until cancelled; ``report`` gets each result."""
        while True:
            await asyncio.sleep(interval)
            result = self.check()
            if result is not None:
                report(result)
