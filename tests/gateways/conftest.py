"""Fixtures of the gateway tests (see :mod:`tests.gateways.support` for the topology)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateways.support import GatewayFactory, gateways


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    async with gateways(tmp_path) as start:
        yield start
