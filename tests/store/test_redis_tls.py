"""The Redis store over TLS (``rediss://``, a private CA) with a password: a real redis-server with
``--tls-port`` and ``--requirepass``, certificates from trustme."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from sidecar.config import RedisSettings
from sidecar.store.base import StoreUnavailable
from sidecar.store.redis import RedisStore
from tests.redis_server import REDIS_SERVER, free_port, wait_listening

PASSWORD = "redis-password-0123456789"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    workdir = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(workdir / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "server.crt"))
    ca.cert_pem.write_to_path(str(workdir / "ca.crt"))
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - Debian's redis-server, fixed arguments
        [REDIS_SERVER, "--dir", str(workdir), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(workdir / "server.crt"), "--tls-key-file", str(workdir / "server.key"),
         "--tls-ca-cert-file", str(workdir / "ca.crt"), "--tls-auth-clients", "no",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        yield port, workdir / "ca.crt"
    finally:
        process.terminate()
        process.wait(timeout=10)


def settings(port: int, ca: Path | None, password: str | None) -> RedisSettings:
    return RedisSettings(url=f"rediss://127.0.0.1:{port}/0", tls_ca_file=ca, connect_timeout=2,
                         command_timeout=2, password=SecretStr(password) if password else None)


async def test_the_store_speaks_tls_with_a_private_ca_and_a_password(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    store = RedisStore(settings(port, ca, PASSWORD))
    try:
        await store.ping()
        assert await store.add("tls-key", b"v", ttl=5) is True
        assert await store.get("tls-key") == b"v"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("with_ca", "password"),
    [(True, None), (True, "wrong-password-0123456789"), (False, PASSWORD)],
    ids=["no-password", "wrong-password", "unknown-ca"],
)
async def test_a_wrong_password_or_an_untrusted_certificate_is_store_unavailable(
    tls_redis: tuple[int, Path], with_ca: bool, password: str | None,
) -> None:
    port, ca = tls_redis
    store = RedisStore(settings(port, ca if with_ca else None, password))
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await store.ping()
        # The reason is a class name: never the password or the URL.
        assert PASSWORD not in refused.value.reason
        assert "wrong-password" not in refused.value.reason
    finally:
        await store.close()
