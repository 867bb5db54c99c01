"""Slices in, RESULTS.md out: medians per target, A/B ratios per round, the machine, the notes."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fleet
from scenarios import BY_KEY

# Ratios reported when both sides ran: (numerator, denominator).
PAIRS = (
    ("authsidecar-2w", "bare-2w"),
    ("authsidecar-2w", "haproxy-jwt-2w"),
    ("authsidecar-2w", "nginx-2w"),
    ("authsidecar-2w", "authsidecar"),
    ("authsidecar", "bare"),
    ("authsidecar", "haproxy-jwt"),
    ("authsidecar", "nginx"),
    ("authsidecar", "authsidecar-quiet"),
    ("authsidecar", "apache-oidc"),
    ("authsidecar-nocache", "bare"),
    ("authsidecar-nocache", "haproxy-jwt"),
    ("authsidecar-nocache", "apache-oidc"),
    ("authsidecar-nocache-quiet", "apache-oidc"),
    ("floor-rsa", "floor-none"),
    ("floor-busy", "floor-none"),
    ("floor-rsa", "apache-oidc"),
    ("floor-none", "apache-oidc"),
    ("nginx-verify", "nginx-sidecar"),
    ("nginx-verify", "haproxy-jwt"),
    ("nginx-sidecar", "haproxy-jwt"),
    ("nginx-verify", "nginx"),
    ("nginx-sidecar", "authsidecar"),
    ("authsidecar-server", "authsidecar"),
    ("authsidecar-server", "bare"),
)
BAD_ERRORS = 0.01  # a slice with more than 1% failed requests is flagged


@dataclass
class Slice:
    scenario: str
    target: str
    round: int
    rate: float
    p50: float
    p99: float
    p999: float
    count: int
    errors: int
    cpu_s: float
    wall_s: float
    foreign: float  # share of the target's core used by other processes during the slice
    load_busy: float  # share of the load core in use during the slice
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_us(self) -> float:
        return self.cpu_s * 1e6 / self.count if self.count else float("nan")


def _med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def summarize(slices: list[Slice]) -> dict[str, dict[str, float]]:
    """Per target: medians over slices, CPU per request over all slices together."""
    by_target: dict[str, list[Slice]] = defaultdict(list)
    for s in slices:
        by_target[s.target].append(s)
    out = {}
    for name, group in by_target.items():
        count = sum(s.count for s in group)
        row = {
            "rate": _med([s.rate for s in group]),
            "rate_min": min(s.rate for s in group),
            "rate_max": max(s.rate for s in group),
            "p50": _med([s.p50 for s in group]),
            "p99": _med([s.p99 for s in group]),
            "p999": _med([s.p999 for s in group]),
            "cpu_us": sum(s.cpu_s for s in group) * 1e6 / count if count else float("nan"),
            "count": count,
            "errors": sum(s.errors for s in group),
            "slices": len(group),
            "foreign": _med([s.foreign for s in group]),
            "load_busy": _med([s.load_busy for s in group]),
        }
        for key in sorted({k for s in group for k in s.extra}):
            row[key] = _med([s.extra[key] for s in group if key in s.extra])
        # authsidecar's own CPU (behind a gateway), per request as cpu_us: over all slices together.
        if "sidecar_cpu_s" in row:
            spent = sum(s.extra["sidecar_cpu_s"] for s in group)
            row["sidecar_cpu_us"] = spent * 1e6 / count if count else float("nan")
        out[name] = row
    return out


def ratios(slices: list[Slice]) -> dict[tuple[str, str], dict[str, float]]:
    """Median over rounds of per-round ratios a/b (throughput and CPU per request)."""
    rounds: dict[int, dict[str, Slice]] = defaultdict(dict)
    for s in slices:
        rounds[s.round][s.target] = s
    out = {}
    for a, b in PAIRS:
        rate, cpu = [], []
        for r in rounds.values():
            if a in r and b in r and r[b].rate > 0:
                rate.append(r[a].rate / r[b].rate)
                cpu.append(r[a].cpu_us / r[b].cpu_us if r[b].cpu_us > 0 else float("nan"))
        if rate:
            out[(a, b)] = {
                "rate": _med(rate),
                "rate_min": min(rate),
                "rate_max": max(rate),
                "cpu": _med(cpu),
                "rounds": len(rate),
            }
    return out


def added_p99(slices: list[Slice]) -> dict[str, float]:
    """Per target, the median over rounds of its p99 minus the direct upstream's p99 (µs)."""
    rounds: dict[int, dict[str, Slice]] = defaultdict(dict)
    for s in slices:
        rounds[s.round][s.target] = s
    per: dict[str, list[float]] = defaultdict(list)
    for r in rounds.values():
        if "direct" in r:
            for name, s in r.items():
                if name != "direct":
                    per[name].append(s.p99 - r["direct"].p99)
    return {name: _med(v) for name, v in per.items()}


def _cmd(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def _interpreter_ms() -> float:
    """A fixed pure-Python workload, best of 15 (ms): how fast this interpreter build runs Python.

    Builds differ: CPython without PGO/LTO (pyenv's default) took 2.4 ms on the benchmark machine
    where Debian's python3.11 (PGO and LTO, like the image's) took 1.9 ms.
    """
    def work() -> int:
        table = {str(i): [i, i * 2, {"a": i}] for i in range(2000)}
        json.loads(json.dumps(table))
        return sum(len(k) for k in table)

    best = float("inf")
    for _ in range(15):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def machine() -> dict[str, str]:
    from importlib.metadata import version

    import aiohttp
    import uvloop

    jwcrypto_version = version("jwcrypto")
    cpuinfo = Path("/proc/cpuinfo").read_text()
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    mem_kib = int(
        next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
    )
    return {
        "CPU": f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')}), {os.cpu_count()} cores visible",
        "Memory": f"{mem_kib / 2**20:.1f} GiB",
        "Kernel": platform.release(),
        "Python": f"{platform.python_version()} ({os.path.realpath(sys.executable)}; the same for every "
        f"Python target), pure-Python index {_interpreter_ms():.2f} ms (lower is faster)",
        "aiohttp / uvloop / jwcrypto": f"{aiohttp.__version__} / {uvloop.__version__} / {jwcrypto_version}",
        "wrk": _cmd(["wrk", "-v"]).split(" [")[0],
        "HAProxy": " ".join(_cmd(["haproxy", "-v"]).split()[:3]),
        "nginx": _cmd(["nginx", "-v"]).split(": ")[-1],
        "Commit": _cmd(
            ["git", "-C", str(Path(__file__).resolve().parent.parent), "describe", "--always", "--dirty"]
        ),
    }


def _us(v: float) -> str:
    if v != v:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def _mib(v: float) -> str:
    return "-" if v != v else f"{v:.1f} MiB"


def _n(v: float, digits: int = 0) -> str:
    return "-" if v != v else f"{v:,.{digits}f}"


def render(run: dict[str, Any]) -> str:
    """The whole RESULTS.md as text."""
    lines = ["# Benchmark results", ""]
    lines.append(
        f"Produced by `{run['command']}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"in {run['elapsed'] / 60:.1f} minutes. Figures from one run on a shared machine: "
        "compare ratios measured in the same run, not absolute numbers across runs."
    )
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in run["machine"].items()]
    lines.append(f"| Load average at start / end | {run['load_start']} / {run['load_end']} |")
    lines += ["", "## Method", ""]
    lines += [f"- {m}" for m in run["method"]]
    lines += [
        "",
        "## Ratios (A/B alternation in this run)",
        "",
        "Median over rounds of the per-round ratio; in brackets the range over rounds. Throughput "
        "ratio below 1 and CPU ratio above 1 mean authsidecar costs more.",
        "",
        "| scenario | ratio | throughput | CPU per request | rounds |",
        "|---|---|---|---|---|",
    ]
    for key, sc in run["scenarios"].items():
        for (a, b), r in sc.get("ratios", {}).items():
            lines.append(
                f"| {key} | {a} / {b} | {r['rate']:.2f} ({r['rate_min']:.2f}-{r['rate_max']:.2f}) | "
                f"{r['cpu']:.2f} | {r['rounds']} |"
            )
    for key, sc in run["scenarios"].items():
        lines += _scenario(key, sc)
    lines += _memory(run)
    if run.get("upload_1g"):
        lines += [
            "",
            "## One 1 GiB upload (bench/bigupload.py)",
            "",
            "A single POST /upload of 1 GiB (`Content-Length`, Bearer token) through each target, RSS of "
            "the target sampled every 50 ms while the body streams: a proxy that buffered bodies would "
            "grow by the body's size.",
            "",
            "| target | status | MiB/s | RSS before | RSS peak during | RSS after |",
            "|---|---|---|---|---|---|",
        ]
        for name, u in run["upload_1g"].items():
            lines.append(
                f"| {name} | {u['status']} | {u['mib_per_s']:,.0f} | {_mib(u['rss_before'])} | "
                f"{_mib(u['rss_peak'])} | {_mib(u['rss_after'])} |"
            )
    if run.get("micro"):
        m = run["micro"]
        lines += [
            "",
            "## Validator micro-benchmark (bench/micro.py)",
            "",
            f"`TokenValidator` alone, {m['tokens']:,} distinct RS256 access tokens of "
            f"{m['token_bytes']:.0f} bytes, JWKS fetched from the dev provider, run on the target core.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| cache-cold `access()` (verify + claims + insert), median | {m['cold_us_median']:.1f} µs |",
            f"| cache-cold `access()`, mean / p99 | {m['cold_us_mean']:.1f} / {m['cold_us_p99']:.1f} µs |",
            f"| cache-hit `cached()` | {m['hit_cached_us']:.2f} µs |",
            f"| cache-hit `access()` (coroutine) | {m['hit_access_us']:.2f} µs |",
            f"| memory per cached token (tracemalloc) | {m['bytes_per_entry']:,.0f} bytes |",
            f"| memory for 10,000 cached tokens | {m['mib_per_10k']:.1f} MiB |",
        ]
    if run.get("profile"):
        lines += ["", "## Profile of authsidecar under the cookie load (py-spy)", ""] + run["profile"]
    if run.get("profile_cold"):
        title = "## Profile of authsidecar-nocache under the cold load (py-spy)"
        lines += ["", title, ""] + run["profile_cold"]
    lines += fleet.render(run)
    lines += ["", "## Notes", ""] + [f"- {n}" for n in run["notes"]]
    return "\n".join(lines) + "\n"


def render_section(run: dict[str, Any], title: str) -> str:
    """The same report as one section to append to an existing RESULTS.md (headings one level down)."""
    body = render(run).split("\n", 2)[2]
    return f"\n## {title}\n\n" + re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)


def _scenario(key: str, sc: dict[str, Any]) -> list[str]:
    spec = BY_KEY[key]
    unit = "msgs/s" if spec.kind == "ws" else "req/s"
    lines = ["", f"## {spec.title} (`{key}`)", "", sc["about"], ""]
    extra_cols = [
        c
        for c in (
            "sidecar_cpu_us", "allowed_per_req", "misses_per_req", "refused_per_req", "refreshes_per_req",
            "provider_cpu_us", "sender_lag_p99",
        )
        if any(c in row for row in sc["summary"].values())
    ]
    head = f"| target | {unit} | range | p50 | p99 | p99.9 | CPU µs/{'msg' if spec.kind == 'ws' else 'req'} |"
    if spec.kind == "wrk" and spec.key in ("big", "upload"):
        head += " MB/s |"
    if spec.kind == "openloop":
        head += " added p99 |"
    for c in extra_cols:
        head += {
            "sidecar_cpu_us": " authsidecar CPU µs/req |",
            "allowed_per_req": " allowed/req |",
            "misses_per_req": " cache misses/req |",
            "refused_per_req": " refused/req |",
            "refreshes_per_req": " refreshes/req |",
            "provider_cpu_us": " provider CPU µs/refresh |",
            "sender_lag_p99": " generator lag p99 |",
        }[c]
    head += " errors | other load on target core | load core busy |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in sorted(sc["summary"].items(), key=lambda kv: -kv[1]["rate"]):
        row = (
            f"| {name} | {_n(r['rate'])} | {_n(r['rate_min'])}-{_n(r['rate_max'])} | {_us(r['p50'])} | "
            f"{_us(r['p99'])} | {_us(r['p999'])} | {_n(r['cpu_us'], 1)} |"
        )
        if spec.kind == "wrk" and spec.key in ("big", "upload"):
            row += f" {_n(r.get('mbytes_per_s', float('nan')))} |"
        if spec.kind == "openloop":
            row += f" {_us(sc.get('added_p99', {}).get(name, float('nan'))) if name != 'direct' else '-'} |"
        for c in extra_cols:
            value = r.get(c, float("nan"))
            if c == "sender_lag_p99":
                row += f" {_us(value)} |"
            else:
                row += f" {_n(value, {'provider_cpu_us': 0, 'sidecar_cpu_us': 1}.get(c, 2))} |"
        flag = " ⚠" if r["count"] and r["errors"] / max(1, r["count"]) > BAD_ERRORS else ""
        foreign = "-" if r["foreign"] != r["foreign"] else f"{r['foreign'] * 100:.0f}%"
        row += f" {r['errors']}{flag} | {foreign} | {r['load_busy'] * 100:.0f}% |"
        lines.append(row)
    for note in sc.get("notes", []):
        lines += ["", note]
    return lines


def _memory(run: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Memory (VmRSS, whole process tree)",
        "",
        "| target | at rest | after the load scenarios |",
        "|---|---|---|",
    ]
    for name, m in run["memory"].items():
        if name != "direct":
            lines.append(f"| {name} | {_mib(m['rest'])} | {_mib(m.get('after', float('nan')))} |")
    steps = {
        name: [(key.removeprefix("after "), v) for key, v in m.items() if key.startswith("after ")]
        for name, m in run["memory"].items()
        if name.startswith("authsidecar")
    }
    if any(steps.values()):
        lines += ["", "Resident memory after each scenario, in the order they ran:", "",
                  "| target | " + " | ".join(k for k, _ in max(steps.values(), key=len)) + " |",
                  "|---|" + "---|" * len(max(steps.values(), key=len))]
        for name, seq in steps.items():
            if seq:
                lines.append(f"| {name} | " + " | ".join(_mib(v) for _, v in seq) + " |")
    return lines
