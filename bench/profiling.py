"""py-spy on the running sidecar under a load (the cookie one, or the truly cold one), as Markdown tables.

Writes the folded stacks (``out/profile-<load>.folded``, loadable in speedscope) and a flame graph
(``out/profile-<load>.svg``), and returns the tables for RESULTS.md:

* time by package (leaf frames: where the CPU actually was);
* authsidecar's own functions: *inclusive* (on the stack) and *attributed* (the deepest authsidecar
  frame of each sample, so library calls made by a function count for it);
* the hottest leaf functions overall.

Percentages are of the samples in which the process was running Python (py-spy leaves out idle).
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
from pathlib import Path

from loads import wrk
from procs import LOAD_CORE, spawn
from targets import Target

_FRAME = re.compile(r"^(?P<name>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


# This checkout, wherever it lives: its files are authsidecar's own.
_REPO = str(Path(__file__).resolve().parents[1]) + "/"


def _short(path: str) -> str:
    for marker in ("site-packages/", _REPO, "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _package(path: str) -> str:
    short = _short(path)
    if "site-packages/" in path:
        return short.split("/", 1)[0].removesuffix(".py")
    if path == "uvloop":
        return "uvloop (C)"
    if short.startswith("sidecar/"):
        return "authsidecar (own code)"
    if "/lib/python3" in path:
        return "stdlib " + short.split("/", 1)[0].removesuffix(".py")
    return short


def _own(path: str) -> bool:
    """authsidecar's request-path code: not the dev tools, not the entry point every stack starts in."""
    short = _short(path)
    return short.startswith("sidecar/") and not short.startswith(
        ("sidecar/dev/", "sidecar/cli.py", "sidecar/__main__.py")
    )


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if m is None:
        return frame, ""
    return m["name"], m["path"]


def summarize(folded: str, top: int = 15) -> list[str]:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    attributed: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    package: collections.Counter[str] = collections.Counter()
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_parse(f) for f in stack.split(";")]
        own = [f"{name} ({_short(path)})" for name, path in frames if _own(path)]
        for key in set(own):
            inclusive[key] += n
        attributed[own[-1] if own else "(no authsidecar frame: aiohttp server/client, event loop)"] += n
        name, path = frames[-1]
        if _short(path) == "asyncio/runners.py":  # the loop's own C code (uvloop) was running
            name, path = "event loop, C code (uvloop: I/O, callbacks)", "uvloop"
        leaf[f"{name} ({_short(path)})"] += n
        package[_package(path)] += n
    if total == 0:
        return ["py-spy recorded no samples."]

    def pct(n: int) -> str:
        return f"{100 * n / total:.1f}%"

    lines = [
        f"{total:,} samples. Where the CPU was (leaf frame's package):",
        "",
        "| package | self |",
        "|---|---|",
    ]
    lines += [f"| {k} | {pct(v)} |" for k, v in package.most_common(12)]
    lines += [
        "",
        "authsidecar's own functions. *Attributed*: samples whose deepest authsidecar frame is "
        "this function (its own code plus the library calls it makes); *inclusive*: on the stack "
        "at all.",
        "",
        "| function | attributed | inclusive |",
        "|---|---|---|",
    ]
    keys = sorted(set(attributed) | set(inclusive), key=lambda k: -attributed.get(k, 0))
    lines += [
        f"| `{k}` | {pct(attributed.get(k, 0))} | {pct(inclusive[k]) if k in inclusive else '-'} |"
        for k in keys[:top]
    ]
    lines += ["", "Hottest leaf functions (self time, any package):", "", "| function | self |", "|---|---|"]
    lines += [f"| `{k}` | {pct(v)} |" for k, v in leaf.most_common(top)]
    return lines


def _pyspy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def _mkdir(path: Path) -> None:
    path.mkdir(exist_ok=True)


def _read(path: Path) -> str:
    return path.read_text()


async def _record(pid: int, seconds: float, fmt: str, out: Path, workdir: Path) -> None:
    pyspy = _pyspy()
    assert pyspy is not None
    cmd = [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "200",
        "--nonblocking",
        "--full-filenames",
        "--format",
        fmt,
        "-o",
        str(out),
    ]
    proc = spawn(f"py-spy-{fmt}", cmd, LOAD_CORE, workdir)
    await proc.wait(seconds + 30)
    await proc.stop()
    if proc.popen.returncode != 0:
        raise RuntimeError(f"py-spy failed ({proc.popen.returncode}):\n{proc.tail()}")


async def profile_sidecar(
    target: Target, cookie: str, seconds: float, workdir: Path, outdir: Path
) -> list[str]:
    """Record ``seconds`` of the sidecar under the cookie load; return the Markdown summary."""
    return await profile_load(target, "cookie", "cookie.lua", {"BENCH_COOKIE": cookie}, seconds, workdir,
                              outdir)


async def profile_load(
    target: Target, label: str, script: str, env: dict[str, str], seconds: float, workdir: Path,
    outdir: Path,
) -> list[str]:
    """Record ``seconds`` of ``target`` under wrk running ``script``; return the Markdown summary."""
    if _pyspy() is None:
        return ["py-spy is not installed (`.venv/bin/pip install py-spy`): no profile."]
    _mkdir(outdir)
    folded, svg = outdir / f"profile-{label}.folded", outdir / f"profile-{label}.svg"
    rates = []
    for fmt, out, secs in (("raw", folded, seconds), ("flamegraph", svg, max(2.0, seconds / 2))):
        load = asyncio.create_task(
            wrk(target.url + "/", script, seconds=secs + 2, connections=64, env=env)
        )
        await asyncio.sleep(0.5)
        try:
            await _record(target.pid, secs, fmt, out, workdir)
        finally:
            rates.append((await load)["rate"])
    lines = [
        f"`py-spy record --nonblocking --rate 200` for {seconds:.0f} s while wrk ran the {label} load "
        f"({rates[0]:,.0f} req/s while sampled); folded stacks in `bench/out/{folded.name}`, "
        f"flame graph in `bench/out/{svg.name}`.",
        "",
    ]
    return lines + summarize(_read(folded))
