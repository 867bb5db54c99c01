"""``serve --workers N``: N sidecar processes sharing the proxied and admin ports (SO_REUSEPORT).

The supervisor only starts, signals and reaps workers; it serves nothing itself. Metrics of all
workers are written to one ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode), so
whichever worker answers a scrape reports the sum over all of them: one target, as if one process.
SIGTERM/SIGINT are passed on to every worker, each drains its in-flight requests, and the supervisor
exits 0 once all have. A worker that dies on its own takes the others down (exit 1) so the
orchestrator restarts the container rather than running it short-handed unnoticed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType

WORKER_FLAG = "--worker"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def supervise(workers: int, serve_args: Sequence[str], *, host_store: bool = False) -> int:
    """Run ``workers`` copies of ``authsidecar serve`` until a signal (0) or a worker failure (1).

    ``host_store``: serve the workers one shared store (refresh single-flight, spent login states)
    on a Unix socket in a private directory, for deployments without Redis.
    """
    own_dir = MULTIPROC_ENV not in os.environ
    metrics_dir = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="authsidecar-metrics-")
    for stale in os.listdir(metrics_dir):
        if stale.endswith(".db"):
            os.unlink(os.path.join(metrics_dir, stale))
    env = {**os.environ, MULTIPROC_ENV: metrics_dir}
    store_dir = store = None
    if host_store:
        from sidecar.store.host import HOST_STORE_ENV, HostStoreServer

        # mkdtemp makes the directory 0700: only this user's processes reach the socket.
        store_dir = tempfile.mkdtemp(prefix="authsidecar-store-")
        store = HostStoreServer(os.path.join(store_dir, "store.sock"))
        store.start()
        env[HOST_STORE_ENV] = store.path
    command = [sys.executable, "-m", "sidecar", "serve", *serve_args, WORKER_FLAG]
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        for _ in range(workers):
            proc = subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter and module
            procs[proc.pid] = proc
        while procs:
            pid, status = os.waitpid(-1, 0)
            if pid not in procs:
                continue
            proc = procs.pop(pid)
            proc.returncode = os.waitstatus_to_exitcode(status)
            _mark_dead(pid, metrics_dir)
            if not stopping:
                # A worker ended without being asked: stop the rest and report failure.
                print(f"authsidecar: worker {pid} exited with {proc.returncode}; stopping", file=sys.stderr)
                failed = True
                forward(signal.SIGTERM, None)
            elif proc.returncode != 0:
                failed = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if store is not None:
            store.stop()
        if store_dir is not None:
            shutil.rmtree(store_dir, ignore_errors=True)
    return 1 if failed else 0


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Drop a finished worker's live gauges (in-flight requests) from the aggregate."""
    from prometheus_client import multiprocess

    # The directory is passed: it may be one this supervisor made, set only in its workers' env.
    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
