"""Benchmark authsidecar against the floor of its design and against C proxies, on loopback.

    .venv/bin/python bench/run.py [--quick] [--scenarios cookie,users,...] [--targets authsidecar,bare]
                                  [--profile SECONDS] [--out bench/RESULTS.md]

Starts a raw-asyncio upstream (bench/upstream.py), the dev provider (in this process, real clock),
and in front of the upstream: authsidecar (``authsidecar serve``), the bare aiohttp proxy
(bench/bare_proxy.py), HAProxy with ``jwt_verify`` and nginx when installed. The proxies run pinned
to core 0; the upstream, the load generators, the provider and this harness to core 1. Each
scenario runs rounds of short slices, one per target, the order rotating every round, so targets
are compared under the same background load (A/B/A/B); ratios are medians of per-round ratios.
Writes RESULTS.md. Everything is stopped by PID at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bigupload import upload_rss
from fleet import refresh_storm, sessions_rss
from harness import BENCH, Bench
from procs import LOAD_CORE, TARGET_CORE
from profiling import profile_load, profile_sidecar
from results import machine, render, render_section
from scenarios import BY_KEY, SCENARIOS

# Steps beyond the load scenarios: the 1 GiB upload's memory, and the validator micro-benchmark.
# Fleet mode (needs redis-server): the refresh storm over two replicas, 10,000 cached server sessions.
EXTRA = ("upload-1g", "micro", "refresh-storm", "sessions-rss")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="short slices and fewer rounds (under 2 minutes)"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join([s.key for s in SCENARIOS] + list(EXTRA)),
        help="comma-separated, from: " + ", ".join([s.key for s in SCENARIOS] + list(EXTRA)),
    )
    parser.add_argument(
        "--targets",
        default="authsidecar,authsidecar-quiet,authsidecar-nocache,bare,haproxy-jwt,nginx,apache-oidc,"
        "nginx-verify,nginx-sidecar",
        help="comma-separated subset of the default",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also profile authsidecar under the cookie load with py-spy for SECONDS",
    )
    parser.add_argument(
        "--profile-cold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also profile authsidecar-nocache under the cold load (scenario cold) for SECONDS",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="stop starting new rounds after this")
    parser.add_argument("--append-section", metavar="TITLE", default="",
                        help="append this run to --out as one section under TITLE instead of replacing it")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in BY_KEY and s not in EXTRA]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    args.targets = {t.strip() for t in args.targets.split(",") if t.strip()}
    if args.quick:
        args.targets.discard("authsidecar-quiet")
    if "halfrate" in args.scenarios:
        args.targets.add("bare")
    if {"server-session", "sessions-rss"} & set(args.scenarios):
        args.targets |= {"authsidecar-server", "authsidecar"}
    if "cold-parts" in args.scenarios:  # its stand-ins exist for it alone
        args.targets |= {"authsidecar-nocache-quiet", "floor-none", "floor-rsa", "floor-busy"}
    defaults = parser.get_default("scenarios").split(",")
    if args.quick and args.scenarios == defaults:
        args.scenarios = [s for s in defaults if s not in ("halfrate-sidecar", "cookie-2w")]
    if "cookie-2w" in args.scenarios and not sidecar_has_workers():
        args.scenarios.remove("cookie-2w")
    return args


def sidecar_has_workers() -> bool:
    from sidecar.config import Settings

    return "workers" in Settings.model_fields


def _workers_note(bench: Bench) -> str:
    if not sidecar_has_workers():
        return (
            "One worker (one process, one thread) for every target. 2-worker rows are skipped: "
            "authsidecar has no workers setting (`authsidecar serve --help`, no `workers` config key)."
        )
    if "cookie-2w" not in bench.scenario_keys:
        return "One worker for every target; the 2-worker scenario `cookie-2w` was not run this time."
    return (
        "One worker for every target, except in `cookie-2w`: two workers each, on both cores (shared "
        "with the load side)."
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {LOAD_CORE})
    started, load_start = time.monotonic(), _loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="authsidecar-bench-"))
    bench = Bench(args, workdir)
    run: dict[str, Any] = {"scenarios": {}}
    ok = False
    try:
        wanted = set(args.targets) | {"bare"}
        await bench.setup(wanted)
        for key in bench.scenario_keys:
            sc = BY_KEY[key]
            if sc.kind == "openloop":
                if sc.rate_of not in bench.targets:
                    bench.notes.append(f"{key}: skipped, {sc.rate_of} is not running.")
                    continue
                bench.half_rate = max(50.0, await bench.saturating_rate(run["scenarios"], sc.rate_of) / 2)
            print(f"[bench] {key}: {sc.title}", flush=True)
            run["scenarios"][key] = await bench.scenario(sc)
            for note in run["scenarios"][key]["notes"]:
                print(f"[bench]   note: {note}", flush=True)
            for name, row in run["scenarios"][key]["summary"].items():
                print(
                    f"[bench]   {name:<18} {row['rate']:>9,.0f}/s  p99 {row['p99'] / 1000:7.2f} ms  "
                    f"CPU {row['cpu_us']:7.1f} µs/op  errors {row['errors']}",
                    flush=True,
                )
        if "upload-1g" in args.scenarios and bench.fixture is not None:
            run["upload_1g"] = {}
            for name in ("authsidecar", "bare"):
                if name in bench.targets:
                    target = bench.targets[name]
                    print(f"[bench] upload-1g: {name}", flush=True)
                    got = await upload_rss(target.url, target.pid,
                                           headers={"Authorization": f"Bearer {bench.fixture.bearer}"})
                    run["upload_1g"][name] = got
                    rss = f"{got['rss_before']:.1f} -> peak {got['rss_peak']:.1f} -> {got['rss_after']:.1f}"
                    print(f"[bench]   {name:<18} status {got['status']}  {got['mib_per_s']:,.0f} MiB/s  "
                          f"RSS {rss} MiB", flush=True)
        if "refresh-storm" in args.scenarios and bench.redis is not None:
            run["refresh_storm"] = []
            for mode in ("cookie", "server"):
                print(f"[bench] refresh-storm: two replicas, {mode} sessions", flush=True)
                storm = await refresh_storm(
                    workdir, bench.upstream_url, bench.redis.extra["url"], bench.procs,
                    mode=mode, sessions=100 if args.quick else 500)
                run["refresh_storm"].append(storm)
                print(f"[bench]   {storm['sessions']} sessions, {storm['requests']} requests: "
                      f"{storm['token_requests']} token requests, statuses {storm['statuses']}, "
                      f"{storm['sessions_alive']} still signed in, roles {storm['roles']}", flush=True)
        if "sessions-rss" in args.scenarios and "authsidecar-server" in bench.targets and bench.fixture:
            print("[bench] sessions-rss: 10,000 server sessions through one worker's cache", flush=True)
            run["sessions_rss"] = got = await sessions_rss(
                bench.fixture.provider, bench.targets["authsidecar-server"], bench.targets.get("authsidecar"),
                bench.redis.extra["url"] if bench.redis else "", "bench:")
            for mode in ("server", "cookie"):
                if mode in got:
                    m = got[mode]
                    print(f"[bench]   {mode}: RSS {m['before']:.1f} -> {m['after']:.1f} MiB "
                          f"({m['per_session_kib']:.2f} KiB per session), statuses {m['statuses']}",
                          flush=True)
        if "micro" in args.scenarios and bench.fixture is not None:
            print("[bench] micro: validator alone", flush=True)
            run["micro"] = await bench.micro()
        if args.profile > 0 and "authsidecar" in bench.targets and bench.fixture is not None:
            print(f"[bench] profile: py-spy for {args.profile:.0f}s under the cookie load", flush=True)
            run["profile"] = await profile_sidecar(
                bench.targets["authsidecar"], bench.fixture.cookie, args.profile, workdir, BENCH / "out"
            )
        if args.profile_cold > 0 and "authsidecar-nocache" in bench.targets:
            print(f"[bench] profile: py-spy for {args.profile_cold:.0f}s under the cold load", flush=True)
            run["profile_cold"] = await profile_load(
                bench.targets["authsidecar-nocache"], "cold", "rotate.lua", bench.env_of("cold"),
                args.profile_cold, workdir, BENCH / "out",
            )
        ok = True
    finally:
        await bench.teardown()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"[bench] failed; logs kept in {workdir}", file=sys.stderr)
    run.update(
        command="bench/run.py " + shlex.join(sys.argv[1:]),
        elapsed=time.monotonic() - started,
        machine=machine(),
        load_start=load_start,
        load_end=_loadavg(),
        memory=bench.memory,
        method=_method(bench),
        notes=[*bench.notes, _workers_note(bench), *_versions(bench)],
    )
    return run


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _method(bench: Bench) -> list[str]:
    p = bench.plan
    headline = " and ".join(f"`{s.key}`" for s in SCENARIOS if s.headline)
    return [
        f"Cores: targets pinned to core {TARGET_CORE} (two-worker targets to all cores); upstream, wrk, "
        f"the Python load generators, the dev provider and the harness to core {LOAD_CORE} (`taskset`).",
        f"Each scenario: a {p.warmup} s warm-up per target (not recorded; with --quick only before wrk "
        f"scenarios), then rounds of one {p.seconds} s slice per target ({p.headline_rounds} rounds for "
        f"{headline}, {p.openloop_rounds} for the open-loop ones, {p.rounds} for the others), "
        "the order rotating every round. Throughput and latency: median over slices; CPU per request: "
        "the target's utime+stime (/proc/PID/stat, whole process tree) over all its slices divided by "
        "its completed requests.",
        "Closed-loop load: wrk 4, one thread, keep-alive; latency percentiles from wrk's own histogram "
        "through a Lua `done()` summary (bench/lua/). wrk counts non-2xx answers as errors: a target that "
        "answered errors during its warm-up is left out of that scenario.",
        "*Other load on target core*: how busy the target's core was with other processes during the "
        "slices (from /proc/stat): this machine is shared, and any large figure here taints that row. "
        "*Load core busy* near 100% means the load side, not the target, may have been the limit.",
        "The upstream (bench/upstream.py) is a raw asyncio/uvloop HTTP server: 13-byte body, 1 MiB body, "
        "upload sink, WebSocket echo.",
    ]


def _versions(bench: Bench) -> list[str]:
    return [f"{t.name}: {t.version}" for t in bench.targets.values() if t.version]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if shutil.which("wrk") is None:
        print(
            "bench: wrk is not installed (as root: apt-get install -y --no-install-recommends wrk haproxy "
            "nginx)",
            file=sys.stderr,
        )
        return 2
    try:
        import uvloop
    except ImportError:
        run = asyncio.run(main_async(args))
    else:
        run = uvloop.run(main_async(args))
    if args.append_section:
        args.out.write_text(args.out.read_text() + render_section(run, args.append_section))
    else:
        args.out.write_text(render(run))
    print(f"[bench] wrote {args.out} in {run['elapsed'] / 60:.1f} minutes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
