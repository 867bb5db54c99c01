"""The injector as it runs: ``Injector`` over real TLS (a trustme CA) on loopback, and a client
that trusts only that CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from prometheus_client import CollectorRegistry

from sidecar.inject.server import Injector
from sidecar.inject.settings import InjectorSettings, parse_injector_settings

from ._support import SERVICE_HOST, base_settings


@dataclass
class Certs:
    ca: trustme.CA
    cert: Path
    key: Path

    def issue(self, *names: str) -> None:
        """Replace the served files with a new certificate (same CA) for ``names``."""
        leaf = self.ca.issue_cert(*names)
        # Written beside, then renamed over: a reader never sees half a file.
        for pem, path in ((leaf.cert_chain_pems[0], self.cert), (leaf.private_key_pem, self.key)):
            fresh = path.with_suffix(".new")
            pem.write_to_path(str(fresh))
            fresh.replace(path)

    def trusting(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = trustme.CA()
    certs = Certs(ca, tmp_path / "tls.crt", tmp_path / "tls.key")
    certs.issue("127.0.0.1", SERVICE_HOST)
    return certs


@dataclass
class Running:
    injector: Injector
    certs: Certs
    log: list[dict[str, Any]]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.injector.port}/mutate"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.injector.admin_port}"


class ListLogger:
    """A Logger that keeps events as dicts (what the JSON line would hold)."""

    def __init__(self, into: list[dict[str, Any]]) -> None:
        self.into = into

    def _add(self, level: str, event: str, **fields: Any) -> None:
        self.into.append({"event": event, "level": level, **fields})

    def debug(self, event: str, /, **fields: Any) -> None:
        self._add("debug", event, **fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self._add("info", event, **fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self._add("warning", event, **fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self._add("error", event, **fields)

    def exception(self, event: str, /, **fields: Any) -> None:
        self._add("exception", event, **fields)


@pytest.fixture
async def start_injector(certs: Certs) -> AsyncIterator[Callable[..., Any]]:
    """Start an injector with ``base_settings`` changed by ``**sections``; stopped after the test."""
    started: list[Injector] = []

    async def start(**sections: Any) -> Running:
        data = base_settings(certs.cert, certs.key)
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        settings: InjectorSettings = parse_injector_settings(data)
        log: list[dict[str, Any]] = []
        injector = Injector(settings, log=ListLogger(log), registry=CollectorRegistry())  # type: ignore[arg-type]
        await injector.start()
        started.append(injector)
        return Running(injector, certs, log)

    yield start
    for injector in started:
        await injector.stop()


@pytest.fixture
async def running(start_injector: Callable[..., Any]) -> Running:
    result: Running = await start_injector()
    return result


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
