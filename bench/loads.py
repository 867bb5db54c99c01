"""Load generators, each run as a subprocess pinned to the load core and parsed into one dict.

Every result has ``count`` (requests or messages), ``seconds``, ``rate``, ``errors`` and the
latency percentiles ``p50``/``p99``/``p999`` in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from procs import LOAD_CORE, pinned

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "lua"


async def _run(cmd: Sequence[str], env: Mapping[str, str] | None, within: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        *pinned(cmd, LOAD_CORE),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=BENCH,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{cmd[0]} did not finish within {within:.0f}s") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:2])} failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}"
        )
    return out.decode(errors="replace")


async def wrk(
    url: str, script: str, *, seconds: float, connections: int, env: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Closed-loop load with wrk (one thread: it shares its core with the upstream)."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA / script),
        url,
    ]
    out = await _run(cmd, env, seconds + 30)
    line = next((x for x in out.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out[-800:]}")
    r = json.loads(line.removeprefix("BENCHJSON "))
    secs = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
    return {
        "count": r["requests"],
        "seconds": secs,
        "rate": r["requests"] / secs,
        "errors": errors,
        "bad_status": r["status"],
        "p50": r["p50"],
        "p99": r["p99"],
        "p999": r["p999"],
        "mbytes_per_s": r["bytes"] / secs / 1e6,
    }


async def openloop(
    url: str, *, rate: float, seconds: float, headers: Sequence[str] = (), connections: int = 64
) -> dict[str, float]:
    """Fixed-rate load (bench/openloop.py): latency includes time spent waiting to be sent."""
    cmd = [
        sys.executable,
        str(BENCH / "openloop.py"),
        "--url",
        url,
        "--rate",
        f"{rate:.1f}",
        "--duration",
        f"{seconds}",
        "--connections",
        str(connections),
        "--warmup",
        "0.3",
    ]
    for h in headers:
        cmd += ["-H", h]
    r = json.loads((await _run(cmd, None, seconds + 30)).strip().splitlines()[-1])
    return {
        "count": r["completed"],
        "seconds": seconds,
        "rate": r["achieved_rps"],
        "errors": r["errors"] + r["unfinished"] + r["bad_status"],
        "bad_status": r["bad_status"],
        "p50": r["p50"],
        "p99": r["p99"],
        "p999": r["p999"],
        "target_rate": rate,
        "sender_lag_p99": r["sender_lag_p99"],
    }


async def websocket(
    url: str, *, seconds: float, headers: Sequence[str] = (), connections: int = 8, size: int = 64
) -> dict[str, float]:
    """Echo round trips (bench/wsclient.py)."""
    cmd = [
        sys.executable,
        str(BENCH / "wsclient.py"),
        "--url",
        url,
        "--duration",
        f"{seconds}",
        "--connections",
        str(connections),
        "--size",
        str(size),
    ]
    for h in headers:
        cmd += ["-H", h]
    r = json.loads((await _run(cmd, None, seconds + 30)).strip().splitlines()[-1])
    return {
        "count": r["messages"],
        "seconds": r["seconds"],
        "rate": r["msgs_per_s"],
        "errors": 0,
        "bad_status": 0,
        "p50": r["p50"],
        "p99": r["p99"],
        "p999": r["p999"],
    }
