"""deploy/k8s/injector/make-certs.sh (the path without cert-manager): the injector serves what it
makes, a client trusting its CA accepts it for the Service's name, and a second run renews the
certificate under the same CA."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.inject.server import Injector
from sidecar.inject.settings import parse_injector_settings

from ._support import INJECTOR_DIR, SERVICE_HOST, base_settings

SCRIPT = INJECTOR_DIR / "make-certs.sh"


def make_certs(out: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    result = subprocess.run(["bash", str(SCRIPT), "--no-apply", str(out)],  # noqa: S603, S607 - our script, bash from PATH
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


async def serial_for(port: int, ca: Path, hostname: str) -> Any:
    ctx = ssl.create_default_context(cafile=str(ca))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=hostname)
    serial = writer.get_extra_info("peercert")["serialNumber"]
    writer.close()
    await writer.wait_closed()
    return serial


async def test_the_injector_serves_the_certificate_make_certs_makes_under_one_ca(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    make_certs(out)
    ca_before = (out / "ca.crt").read_bytes()
    settings = parse_injector_settings(base_settings(out / "tls.crt", out / "tls.key"))
    injector = Injector(settings, registry=CollectorRegistry())
    await injector.start()
    try:
        first = await serial_for(injector.port, out / "ca.crt", SERVICE_HOST)
        with pytest.raises(ssl.SSLCertVerificationError):
            await serial_for(injector.port, out / "ca.crt", "elsewhere.example")

        make_certs(out)  # the renewal: same CA, new certificate
        assert (out / "ca.crt").read_bytes() == ca_before
        assert injector.tls.check() == "ok"
        assert await serial_for(injector.port, out / "ca.crt", SERVICE_HOST) != first
    finally:
        await injector.stop()
