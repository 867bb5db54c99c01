"""The measuring machinery of bench/run.py: start everything, run slices and scenarios, stop by PID.

:class:`Bench` owns every process it starts (upstream, targets) and the dev provider running in
this process; a slice is one load run against one target with its CPU, memory, core-load and
counter readings around it; a scenario is a warm-up per target and rounds of slices in rotating
order.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from fixture import (
    CLIENT_ID,
    Fixture,
    bearer_lines,
    forged_lines,
    garbage_lines,
    refresh_cookies,
    start_fixture,
    user_cookies,
    write_lines,
)
from fleet import SESSION_COOKIE, Seeder, start_redis, store_config
from gateways import start_nginx_gateway
from loads import openloop, websocket, wrk
from procs import (
    LOAD_CORE,
    TARGET_CORE,
    Proc,
    busy_fraction,
    core_times,
    cpu_seconds,
    pinned,
    rss_mib,
    spawn,
    tree,
)
from results import Slice, added_p99, ratios, summarize
from scenarios import BY_KEY, Scenario
from targets import (
    CACHE_SIZE,
    Target,
    free_port,
    start_apache,
    start_bare,
    start_haproxy,
    start_nginx,
    start_sidecar,
    wait_http,
)

BENCH = Path(__file__).resolve().parent
SAMPLE_METRICS = re.compile(
    r'^authsidecar_(token_validation_cache_total\{result="miss"\}|'
    r'auth_decisions_total\{outcome="(?:refreshed|ok)"\}) ([0-9.e+]+)$',
    re.M,
)
BAD_WARMUP = 0.01  # a warm-up with more failed requests than this leaves the target out


class Plan:
    """How long and how many: --quick keeps a whole run under two minutes."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.seconds = 1 if quick else 3
        self.warmup = 1
        self.rounds = 2 if quick else 4
        self.headline_rounds = 2 if quick else 6
        self.openloop_rounds = 2 if quick else 3
        self.users = 2000 if quick else 10_000
        self.sessions = 5000 if quick else 20_000
        self.forged = 10_000  # as the issue measured: a flood of that many distinct forged tokens
        self.garbage = 2000


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.plan = Plan(args.quick)
        self.workdir = workdir
        self.procs: list[Proc] = []
        self.targets: dict[str, Target] = {}
        self.fixture: Fixture | None = None
        self.notes: list[str] = []
        self.memory: dict[str, dict[str, float]] = {}
        self.files: dict[str, Path] = {}
        self.admin: dict[str, str] = {}
        self.offset: collections.Counter[tuple[str, str]] = collections.Counter()  # rotation files
        self.half_rate = 0.0
        self.redis: Proc | None = None  # fleet mode: the store of authsidecar-server and the storms
        self.session_cookie = ""  # authsidecar-server's browser: its session id only
        self.deadline = time.monotonic() + args.max_minutes * 60

    # -- set-up ---------------------------------------------------------------------------------

    async def setup(self, wanted: set[str]) -> None:
        port = free_port()
        upstream = spawn(
            "upstream",
            [sys.executable, str(BENCH / "upstream.py"), "--port", str(port)],
            LOAD_CORE,
            self.workdir,
        )
        self.procs.append(upstream)
        self.upstream_url = f"http://127.0.0.1:{port}"
        await wait_http(self.upstream_url + "/", {200}, upstream)
        self.targets["direct"] = Target(
            "direct", self.upstream_url, upstream, auth=False, on_target_core=False
        )
        self.fixture = fx = await start_fixture(self.workdir)
        started = time.monotonic()
        if "users" in self.scenario_keys:
            self.files["users"] = write_lines(
                self.workdir / "users.txt", user_cookies(fx.provider, self.plan.users)
            )
        if "refresh" in self.scenario_keys:
            self.files["refresh"] = write_lines(
                self.workdir / "refresh.txt", refresh_cookies(fx.provider, self.plan.sessions)
            )
        if {"cold", "cold-parts"} & set(self.scenario_keys):
            self.files["cold"] = self.files["cold-parts"] = write_lines(
                self.workdir / "cold.txt", bearer_lines(fx.provider, self.plan.users)
            )
        if "forged" in self.scenario_keys:
            self.files["forged"] = write_lines(
                self.workdir / "forged.txt", forged_lines(fx.provider, self.plan.forged)
            )
        if "garbage" in self.scenario_keys:
            self.files["garbage"] = write_lines(
                self.workdir / "garbage.txt", garbage_lines(fx.provider, self.plan.garbage)
            )
        body = self.workdir / "body-1MiB.bin"
        body.write_bytes(os.urandom(1024 * 1024))
        self.files["body"] = body
        print(f"[bench] credentials minted in {time.monotonic() - started:.1f}s", flush=True)
        up, wd = self.upstream_url, self.workdir
        if wanted & {"authsidecar-server"} or {"refresh-storm", "sessions-rss"} & set(self.args.scenarios):
            self.redis = await start_redis(self.workdir)
            if self.redis is None:
                self.notes.append("redis-server: not installed, the fleet rows are missing "
                                  "(as root: `apt-get install -y --no-install-recommends redis-server`).")
                wanted.discard("authsidecar-server")
            else:
                self.procs.append(self.redis)
        redis_url = self.redis.extra["url"] if self.redis is not None else ""

        def starters(n: int) -> dict[str, Callable[[], Awaitable[Target | None]]]:
            return {
                "authsidecar": lambda: start_sidecar(wd, up, fx.issuer, CLIENT_ID, workers=n),
                "authsidecar-quiet": lambda: start_sidecar(
                    wd, up, fx.issuer, CLIENT_ID, name="authsidecar-quiet", level="warning", workers=n
                ),
                "authsidecar-server": lambda: start_sidecar(
                    wd, up, fx.issuer, CLIENT_ID, name="authsidecar-server", workers=n,
                    extra=store_config(redis_url, "bench:", server_sessions=True),
                ),
                "bare": lambda: start_bare(wd, up, workers=n),
                "haproxy-jwt": lambda: start_haproxy(wd, up, fx.issuer, CLIENT_ID, fx.public_pem, workers=n),
                "nginx": lambda: start_nginx(wd, up, workers=n),
                # The validation cache off: the truly cold scenario.
                "authsidecar-nocache": lambda: start_sidecar(
                    wd, up, fx.issuer, CLIENT_ID, name="authsidecar-nocache", cache_size=0
                ),
                # The same, without its access log (Apache writes none), and cut down to one part of
                # a cache miss each (bench/floor.py): the cold-parts scenario.
                "authsidecar-nocache-quiet": lambda: start_sidecar(
                    wd, up, fx.issuer, CLIENT_ID, name="authsidecar-nocache-quiet", cache_size=0,
                    level="warning",
                ),
                **{
                    f"floor-{part}": (lambda part=part: start_sidecar(
                        wd, up, fx.issuer, CLIENT_ID, name=f"floor-{part}", cache_size=0, floor=part
                    ))
                    for part in ("none", "rsa", "busy")
                },
                "apache-oidc": lambda: start_apache(wd, up, fx.issuer, CLIENT_ID, fx.public_pem, fx.kid),
                # nginx in front of authsidecar: auth_request + /auth/verify, or proxy to the proxy.
                "nginx-verify": lambda: start_nginx_gateway(wd, up, fx.issuer, CLIENT_ID, verify=True),
                "nginx-sidecar": lambda: start_nginx_gateway(wd, up, fx.issuer, CLIENT_ID, verify=False),
            }

        # Targets only some scenarios use are started for those only.
        needed = {n for k in self.scenario_keys for n in BY_KEY[k].targets}
        only_for = {"authsidecar-nocache", "apache-oidc", "nginx-verify", "nginx-sidecar",
                    "authsidecar-nocache-quiet", "floor-none", "floor-rsa", "floor-busy"}
        plan = [
            (name, start) for name, start in starters(1).items()
            if name in wanted and (name not in only_for or name in needed)
        ]
        if any(BY_KEY[k].workers == 2 for k in self.scenario_keys):
            two = set(BY_KEY["cookie-2w"].targets)
            plan += [(f"{name}-2w", start) for name, start in starters(2).items() if f"{name}-2w" in two]
        for name, start in plan:
            if name.removesuffix("-2w") not in wanted:
                continue
            target = await start()
            if target is None:
                self.notes.append(
                    f"{name}: not installed, its rows are missing (as root: `apt-get install -y "
                    "--no-install-recommends wrk haproxy nginx apache2 libapache2-mod-auth-openidc`)."
                )
                continue
            if target.behind is not None:
                self.procs.append(target.behind)  # stopped after the gateway in front of it
            self.procs.append(target.proc)
            self.targets[name] = target
            if target.admin:
                self.admin[name] = target.admin
        if "authsidecar-server" in self.targets:
            seeder = Seeder(redis_url, "bench:")
            alice = fx.provider.user("alice")
            assert alice is not None
            session_id = await seeder.session(fx.provider.issue_tokens(alice), alice.sub)
            self.session_cookie = f"{SESSION_COOKIE}={session_id}"
            await seeder.close()
        await self._check_auth()
        await asyncio.sleep(1.0)
        for name, target in self.targets.items():
            self.memory[name] = {"rest": rss_mib(target.pids())}

    async def _check_auth(self) -> None:
        """Targets that validate must accept the fixture's token and refuse a forged or expired one."""
        fx = self.fixture
        assert fx is not None
        now = int(time.time())
        token = fx.bearer
        head, payload, signature = token.split(".")
        forged = f"{head}.{payload}.{signature[:-8]}AAAAAAAA"
        expired = fx.provider.mint_access_token("bob", exp=now - 600, iat=now - 4200)
        cases = [("valid", token, 200), ("forged signature", forged, 0), ("expired", expired, 0)]
        async with aiohttp.ClientSession() as session:
            for target in self.targets.values():
                if not target.auth:
                    continue
                for label, value, status in cases:
                    want = status or target.refusal
                    headers = {"Authorization": f"Bearer {value}"}
                    async with session.get(target.url + "/", headers=headers, allow_redirects=False) as r:
                        if r.status != want:
                            raise RuntimeError(f"{target.name}: a {label} token got {r.status}, not {want}")

    @property
    def scenario_keys(self) -> list[str]:
        return [k for k in self.args.scenarios if k in BY_KEY]

    async def teardown(self) -> None:
        for proc in reversed(self.procs):
            await proc.stop()
        if self.fixture is not None:
            await self.fixture.runner.cleanup()

    # -- one slice --------------------------------------------------------------------------------

    def _env(self, sc: Scenario, target: str = "") -> dict[str, str]:
        fx = self.fixture
        assert fx is not None
        if sc.key in ("users", "refresh"):
            return {"BENCH_LINES": str(self.files[sc.key]), "BENCH_OFFSET": str(self.offset[sc.key, target])}
        if sc.key in ("cold", "cold-parts", "forged", "garbage"):
            return {"BENCH_LINES": str(self.files[sc.key]), "BENCH_OFFSET": str(self.offset[sc.key, target]),
                    "BENCH_HEADER": "Authorization"}
        if sc.key == "bearer":
            return {"BENCH_TOKEN": fx.bearer}
        if sc.key == "upload":
            return {"BENCH_TOKEN": fx.bearer, "BENCH_BODY_FILE": str(self.files["body"])}
        if target == "authsidecar-server":
            return {"BENCH_COOKIE": self.session_cookie}
        return {"BENCH_COOKIE": fx.cookie}

    def env_of(self, key: str, target: str = "") -> dict[str, str]:
        """The environment of scenario ``key``'s wrk script (for the profiler)."""
        return self._env(BY_KEY[key], target)

    async def load(self, sc: Scenario, target: Target, seconds: float) -> dict[str, float]:
        fx = self.fixture
        assert fx is not None
        if sc.kind == "ws":
            url = target.url.replace("http://", "ws://") + sc.path
            return await websocket(
                url, seconds=seconds, headers=[f"Cookie: {fx.cookie}"], connections=sc.connections
            )
        if sc.kind == "openloop":
            return await openloop(
                target.url + sc.path,
                rate=self.half_rate,
                seconds=seconds,
                headers=[f"Cookie: {fx.cookie}"],
                connections=sc.connections,
            )
        result = await wrk(
            target.url + sc.path,
            sc.script,
            seconds=seconds,
            connections=sc.connections,
            env=self._env(sc, target.name),
        )
        # A target's rotation continues where its last run stopped (plus the requests still in flight
        # at its end), so that for it the rotation stays one long cycle.
        self.offset[sc.key, target.name] += int(result["count"]) + sc.connections
        if sc.refused:
            # Refusals are the expected answer here (wrk counts them as errors): reported apart.
            result["refused"] = result["bad_status"]
            result["errors"] -= result["bad_status"]
        return result

    async def _counters(self, target: Target) -> dict[str, float]:
        admin = self.admin.get(target.name)
        if admin is None:
            return {}
        async with aiohttp.ClientSession() as session, session.get(admin + "/metrics") as resp:
            text = await resp.text()
        # The cache counter by name (one label value matches); decisions by name and outcome.
        return {
            m.group(1) if m.group(1).startswith("auth_") else m.group(1).split("{")[0]: float(m.group(2))
            for m in SAMPLE_METRICS.finditer(text)
        }

    async def slice(self, sc: Scenario, target: Target, rnd: int, seconds: float) -> Slice:
        fx = self.fixture
        assert fx is not None
        pids = target.pids()
        # authsidecar's own processes: behind a gateway, or the target itself.
        sidecar_pids = tree(target.behind.pid) if target.behind is not None else []
        if sc.key == "verify" and target.name.startswith("authsidecar"):
            sidecar_pids = pids
        counters = await self._counters(target)
        refreshes = fx.provider.calls["token:refresh_token"]
        self_cpu = resource.getrusage(resource.RUSAGE_SELF)
        cores, cpu0, wall0 = core_times(), cpu_seconds(pids), time.monotonic()
        sidecar0 = cpu_seconds(sidecar_pids)
        result = await self.load(sc, target, seconds)
        cpu1, wall1, cores1 = cpu_seconds(pids), time.monotonic(), core_times()
        sidecar1 = cpu_seconds(sidecar_pids)
        self_cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu = wall1 - wall0, cpu1 - cpu0
        extra: dict[str, float] = {}
        count = int(result["count"])
        if sidecar_pids:
            extra["sidecar_cpu_s"] = sidecar1 - sidecar0  # per request over all slices: summarize()
        if sc.kind == "openloop":
            extra["sender_lag_p99"] = result["sender_lag_p99"]
        if sc.key == "big":
            extra["mbytes_per_s"] = result.get("mbytes_per_s", float("nan"))
        if sc.key == "upload":
            extra["mbytes_per_s"] = result["rate"] * self.files["body"].stat().st_size / 1e6
        if counters and count:
            after = await self._counters(target)
            if sc.key in ("users", "cookie", "cold", "cold-parts", "forged", "verify"):
                name = "token_validation_cache_total"
                extra["misses_per_req"] = (after.get(name, 0) - counters.get(name, 0)) / count
            if sc.key == "verify":
                # Every request authenticated and allowed by authsidecar (wrk takes a 302 for success).
                name = 'auth_decisions_total{outcome="ok"}'
                extra["allowed_per_req"] = (after.get(name, 0) - counters.get(name, 0)) / count
        if sc.refused and count:
            extra["refused_per_req"] = result["refused"] / count
        if sc.key == "refresh" and count:
            done = fx.provider.calls["token:refresh_token"] - refreshes
            extra["refreshes_per_req"] = done / count
            spent = (self_cpu1.ru_utime + self_cpu1.ru_stime) - (self_cpu.ru_utime + self_cpu.ru_stime)
            extra["provider_cpu_us"] = spent * 1e6 / done if done else float("nan")
        foreign = float("nan")
        if target.on_target_core:
            foreign = max(0.0, busy_fraction(cores, cores1, TARGET_CORE) - cpu / wall)
        return Slice(
            sc.key,
            target.name,
            rnd,
            result["rate"],
            result["p50"],
            result["p99"],
            result["p999"],
            count,
            int(result["errors"]),
            cpu,
            wall,
            foreign=foreign,
            load_busy=busy_fraction(cores, cores1, LOAD_CORE),
            extra=extra,
        )

    # -- one scenario -----------------------------------------------------------------------------

    async def scenario(self, sc: Scenario) -> dict[str, Any]:
        names = [
            n
            for n in sc.targets
            if n in self.targets and n.removesuffix("-2w") in self.args.targets | {"direct"}
        ]
        notes: list[str] = []
        usable = []
        for name in names:  # warm-up, not recorded; a target that answers errors is left out
            if self.plan.quick and sc.kind != "wrk":
                usable.append(name)  # --quick: caches are warm from the wrk scenarios already
                continue
            try:
                warm = await self.load(sc, self.targets[name], self.plan.warmup)
            except RuntimeError as exc:
                notes.append(f"{name} left out: warm-up failed: {exc}")
                continue
            if warm["count"] == 0 or warm["errors"] > BAD_WARMUP * warm["count"]:
                notes.append(
                    f"{name} left out: {warm['errors']:.0f} of {warm['count']:.0f} warm-up "
                    f"requests failed ({await self._probe(sc, self.targets[name])})."
                )
                continue
            usable.append(name)
        rounds = self.plan.headline_rounds if sc.headline else self.plan.rounds
        if sc.kind == "openloop":
            rounds = self.plan.openloop_rounds
        slices: list[Slice] = []
        for rnd in range(rounds):
            if time.monotonic() > self.deadline:
                notes.append(f"stopped after {rnd} rounds: --max-minutes reached.")
                break
            shift = rnd % max(1, len(usable))
            for name in usable[shift:] + usable[:shift]:
                slices.append(await self.slice(sc, self.targets[name], rnd, self.plan.seconds))
        for name in usable:
            mem = self.memory.setdefault(name, {"rest": float("nan")})
            rss = rss_mib(self.targets[name].pids())
            mem["after"] = max(mem.get("after", 0.0), rss)
            mem[f"after {sc.key}"] = rss
            print(f"[bench]   {name:<22} RSS after {sc.key}: {rss:.1f} MiB", flush=True)
        about = sc.about.format(
            users=f"{self.plan.users:,}", cache=f"{CACHE_SIZE:,}", sessions=f"{self.plan.sessions:,}",
            forged=f"{self.plan.forged:,}", garbage=f"{self.plan.garbage:,}",
        )
        if sc.kind == "openloop":
            about += f" Rate: {self.half_rate:,.0f} requests/s."
        out: dict[str, Any] = {
            "about": about,
            "summary": summarize(slices),
            "ratios": ratios(slices),
            "notes": notes,
            "slices": [s.__dict__ for s in slices],
        }
        if sc.kind == "openloop":
            out["added_p99"] = added_p99(slices)
        return out

    async def _probe(self, sc: Scenario, target: Target) -> str:
        """One request like the scenario's, for the reason a target failed."""
        fx = self.fixture
        assert fx is not None
        env = self._env(sc)
        headers = {"Cookie": env.get("BENCH_COOKIE", fx.cookie)}
        if "BENCH_TOKEN" in env:
            headers = {"Authorization": f"Bearer {env['BENCH_TOKEN']}"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(target.url + "/", headers=headers) as resp,
            ):
                return f"a probe got {resp.status}: {(await resp.text())[:120]!r}"
        except aiohttp.ClientError as exc:
            return f"a probe failed: {exc!r}"

    async def saturating_rate(self, previous: dict[str, Any], name: str) -> float:
        """``name``'s throughput with the cookie: from the cookie scenario, else measured now."""
        row = previous.get("cookie", {}).get("summary", {}).get(name)
        if row:
            return float(row["rate"])
        result = await self.load(BY_KEY["cookie"], self.targets[name], 3)
        return result["rate"]

    async def micro(self) -> dict[str, float]:
        """bench/micro.py on the target core, with this run's provider and users' tokens."""
        fx = self.fixture
        assert fx is not None
        tokens = self.files.get("users")
        if tokens is None:
            tokens = write_lines(self.workdir / "micro.txt", user_cookies(fx.provider, self.plan.users))
        cmd = [
            sys.executable,
            str(BENCH / "micro.py"),
            "--issuer",
            fx.issuer,
            "--tokens-file",
            str(tokens),
            "--json",
        ]
        # On the target core, where the sidecar does this work; the provider only serves the JWKS once.
        proc = await asyncio.create_subprocess_exec(
            *pinned(cmd, TARGET_CORE), stdout=asyncio.subprocess.PIPE, cwd=BENCH
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
