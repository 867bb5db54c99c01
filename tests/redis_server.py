"""A real redis-server (Debian's package) for the tests, on a free loopback port, persistence off.

Started once per test session by the ``redis_server`` fixture and ended by its PID. The tests that
need one fail with a clear message when the binary is missing; ``scripts/test.sh`` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Redis alive but answering nothing (SIGSTOP to its own PID, SIGCONT after): connections
        still open (the kernel accepts them), every command times out. Only for a test's own
        server (:func:`start_redis`), never the session-wide one others use."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _spawn(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - Debian's redis-server, fixed arguments
        [REDIS_SERVER, "--dir", str(workdir), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError("redis-server did not start listening")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"), free_port())
    try:
        yield server
    finally:
        server.stop()


def start_redis(workdir: Path, port: int) -> RedisServer:
    """A redis-server of a test's own on ``port`` (stop it with :meth:`RedisServer.stop`)."""
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is missing: `apt-get install redis-server` (scripts/test.sh does)")
    process = _spawn(port, workdir)
    wait_listening(port, process)
    return RedisServer(port, process)
