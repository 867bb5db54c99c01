"""Processes of the benchmark: start pinned to a core, measure CPU and memory from /proc, stop by PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = sorted(os.sched_getaffinity(0))
# The proxy under test gets core 0; the upstream, the load generators, the provider and this
# harness share the other one. On a one-core machine everything shares it.
TARGET_CORE = CORES[0]
LOAD_CORE = CORES[1] if len(CORES) > 1 else CORES[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ALL_CORES = ",".join(str(c) for c in CORES)


def pinned(cmd: Sequence[str], core: int | str) -> list[str]:
    """``cmd`` run under ``taskset`` on ``core`` (or a list like "0,1"); taskset execs the command,
    so the PID stays the command's, and children inherit the affinity."""
    if shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", str(core), *cmd]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx's workers, for one)."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` (each a whole thread group), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / CLK_TCK


def rss_mib(pids: Sequence[int]) -> float:
    """Resident memory (VmRSS) of ``pids``, summed, in MiB."""
    total_kib = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


CoreTimes = dict[int, tuple[int, int]]


def core_times() -> CoreTimes:
    """Per core, (busy, total) jiffies from /proc/stat; busy is everything but idle and iowait.

    Interrupt and softirq time count as busy: on loopback much of it is network work done for the
    process that was running (and partly charged to that process's own system time already).
    """
    out: CoreTimes = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            nums = [int(v) for v in values[:8]]
            out[int(name[3:])] = (sum(nums) - nums[3] - nums[4], sum(nums))
    return out


def busy_fraction(before: CoreTimes, after: CoreTimes, core: int) -> float:
    """Share of ``core`` in use between two readings."""
    total = after[core][1] - before[core][1]
    return (after[core][0] - before[core][0]) / total if total > 0 else 0.0


@dataclass
class Proc:
    """One started process, its log file, and how to stop it (SIGTERM, then SIGKILL, by PID only)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            await asyncio.to_thread(self.popen.wait, 5)

    async def wait(self, within: float) -> bool:
        """Whether the process exited within ``within`` seconds."""
        try:
            await asyncio.to_thread(self.popen.wait, within)
        except subprocess.TimeoutExpired:
            return False
        return True


async def output(cmd: Sequence[str], within: float = 30.0) -> tuple[int, str]:
    """Run ``cmd`` to completion: (exit code, stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{cmd[0]}: no answer within {within:.0f}s"
    return proc.returncode or 0, out.decode(errors="replace")


def spawn(
    name: str, cmd: Sequence[str], core: int | str, workdir: Path, env: dict[str, str] | None = None
) -> Proc:
    """Start ``cmd`` pinned to ``core``; stdout and stderr go to ``workdir/name.log``."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            pinned(cmd, core),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=workdir,
        )
    return Proc(name, popen, log)
