"""Fleet mode in the benchmark: a redis-server, server sessions, the refresh storm, cached sessions' memory.

* :func:`start_redis`  Debian's redis-server on a free loopback port, nothing on disk, stopped by PID
* :class:`Seeder`      server sessions written into Redis as authsidecar writes them (sealed with the
                       key derived from the bench's cookie secret), so the loads need no browser logins
* :func:`refresh_storm` two replicas sharing one Redis, against a provider that rotates refresh tokens
                       with reuse detection; every session's requests at once, each on its own connection
* :func:`sessions_rss` the resident memory of one worker holding 10,000 server sessions in its cache
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
from fixture import CLIENT_ID
from procs import LOAD_CORE, Proc, cpu_seconds, free_port, rss_mib, spawn, tree
from targets import Target, start_sidecar

from sidecar.config import RedisSettings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.users import DevUser
from sidecar.store.redis import RedisStore
from sidecar.store.sealed import Sealer

# The cookie secret of every authsidecar the bench starts with a Redis store: the seeder seals with it.
SECRET = secrets.token_urlsafe(48)
# What sidecar/app.py and sidecar/auth/server_session.py use for a session: the sealer's label, the
# key (digest of the id) and the record. The loads check every answer, so a drift shows as errors.
SESSION_LABEL = b"authsidecar/sessions/v1"
SESSION_COOKIE = "authsidecar_session"
COORDINATION = re.compile(r'^authsidecar_refresh_coordination_total\{role="(\w+)"\} ([0-9.e+]+)$', re.M)


def store_config(url: str, prefix: str, *, server_sessions: bool) -> dict[str, Any]:
    """Settings for an authsidecar on the bench's Redis (merged into targets.sidecar_config)."""
    config: dict[str, Any] = {
        "store": {"backend": "redis", "redis": {"url": url, "key_prefix": prefix}},
        "cookies": {"secret": SECRET},
    }
    if server_sessions:
        config["sessions"] = {"mode": "server"}
    return config


async def start_redis(workdir: Path) -> Proc | None:
    """redis-server as the tests start it: loopback, a free port, no RDB, no AOF. None if missing."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(workdir), "--loglevel", "warning"]
    proc = spawn("redis", cmd, LOAD_CORE, workdir)
    proc.extra["url"] = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"redis-server exited during start-up:\n{proc.tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return proc
    raise RuntimeError(f"redis-server not listening on {port}:\n{proc.tail()}")


class Seeder:
    """Writes server sessions into Redis under ``prefix`` as authsidecar would after a login."""

    def __init__(self, url: str, prefix: str) -> None:
        self.store = RedisStore(RedisSettings(url=url, key_prefix=prefix, pool_size=8))
        self.sealer = Sealer(SECRET.encode(), SESSION_LABEL)

    async def session(self, tokens: dict[str, Any], sub: str, ttl: float = 3600) -> str:
        """A new session holding ``tokens`` (a token response); its id, as the browser's cookie holds it."""
        session_id = secrets.token_urlsafe(32)
        key = "session:" + hashlib.sha256(session_id.encode()).hexdigest()
        record = {"access_token": tokens["access_token"], "id_token": tokens.get("id_token"),
                  "refresh_token": tokens.get("refresh_token"), "sub": sub}
        await self.store.put(key, self.sealer.seal(key, json.dumps(record).encode()), ttl)
        return session_id

    async def close(self) -> None:
        await self.store.close()


def bench_user(i: int) -> DevUser:
    return DevUser(username=f"user{i:05d}", password="-", email=f"user{i:05d}@example.com", groups=("users",))


# -- the refresh storm --------------------------------------------------------------------------------


async def _coordination(target: Target) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(target.admin + "/metrics") as resp:
        text = await resp.text()
    return {m.group(1): float(m.group(2)) for m in COORDINATION.finditer(text)}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def refresh_storm(workdir: Path, upstream: str, redis_url: str, procs: list[Proc], *, mode: str,
                        sessions: int, burst: int = 20, waves: int = 10) -> dict[str, Any]:
    """``sessions`` sessions with an expired access token, each sending ``burst`` requests at once
    (own connection each, alternating between two replicas), ``waves`` sessions at a time."""
    provider = DevProvider(ProviderConfig(client_id=CLIENT_ID, rotate_refresh_tokens=True), time.time)
    runner, issuer = await start_provider(provider, "127.0.0.1", 0)
    seeder = Seeder(redis_url, f"storm-{mode}:")
    replicas: list[Target] = []
    try:
        extra = store_config(redis_url, f"storm-{mode}:", server_sessions=mode == "server")
        for name in ("a", "b"):
            replica = await start_sidecar(workdir, upstream, issuer, CLIENT_ID, name=f"storm-{mode}-{name}",
                                          level="warning", extra=extra)
            procs.append(replica.proc)
            replicas.append(replica)
        now = int(time.time())
        expired = provider.mint_access_token("alice", exp=now - 600, iat=now - 4200)
        id_token = provider.mint_id_token("alice")
        alice = provider.user("alice")
        assert alice is not None
        sub = alice.sub
        cookies = []
        for _ in range(sessions):
            family = provider.ledger.open_family(provider.new_grant("alice"), refresh_ttl=3600, now=now)
            if mode == "server":
                tokens = {"access_token": expired, "id_token": id_token,
                          "refresh_token": family.refresh_token}
                cookies.append(f"{SESSION_COOKIE}={await seeder.session(tokens, sub)}")
            else:
                cookies.append(f"access_token={expired}; refresh_token={family.refresh_token}")

        statuses: dict[int, int] = {}
        latencies: list[float] = []
        new_refresh: dict[int, str] = {}
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as client:

            async def one(i: int, k: int) -> None:
                started = time.perf_counter()
                url = replicas[k % 2].url + "/"
                async with client.get(url, headers={"Cookie": cookies[i], "Accept": "application/json"}) as r:
                    await r.read()
                    latencies.append(time.perf_counter() - started)
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    morsel = r.cookies.get("refresh_token")
                    if morsel is not None and morsel.value:
                        new_refresh[i] = morsel.value

            before = provider.calls["token:refresh_token"]
            cpu0 = cpu_seconds([p for t in replicas for p in tree(t.pid)])
            wall0 = time.perf_counter()
            for start in range(0, sessions, waves):
                wave = range(start, min(sessions, start + waves))
                await asyncio.gather(*(one(i, k) for i in wave for k in range(burst)))
            wall = time.perf_counter() - wall0
            cpu = cpu_seconds([p for t in replicas for p in tree(t.pid)]) - cpu0
            token_requests = provider.calls["token:refresh_token"] - before
            # Nobody was logged out: each session's renewed credentials still work, with no token request.
            if mode == "server":
                after = []
                for i in range(sessions):
                    async with client.get(replicas[i % 2].url + "/", headers={"Cookie": cookies[i]}) as r:
                        after.append(r.status)
                alive = sum(1 for s in after if s == 200)
            else:
                alive = sum(1 for token in new_refresh.values() if provider.refresh_token_is_live(token))
            extra_calls = provider.calls["token:refresh_token"] - before - token_requests
        roles: dict[str, float] = {}
        for replica in replicas:
            for role, value in (await _coordination(replica)).items():
                roles[role] = roles.get(role, 0.0) + value
        requests = sessions * burst
        return {
            "mode": mode, "sessions": sessions, "burst": burst, "concurrent": waves * burst,
            "requests": requests, "token_requests": token_requests, "token_requests_after": extra_calls,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "sessions_alive": alive, "seconds": wall, "rate": requests / wall,
            "p50_ms": statistics.median(latencies) * 1000, "p99_ms": _pct(latencies, 0.99) * 1000,
            "cpu_us": cpu * 1e6 / requests, "roles": roles,
        }
    finally:
        for replica in replicas:
            await replica.proc.stop()
        await seeder.close()
        await runner.cleanup()


# -- memory with 10,000 sessions ----------------------------------------------------------------------


async def _each_once(url: str, cookies: list[str], concurrency: int = 32) -> dict[int, int]:
    """One GET per Cookie value, ``concurrency`` at a time over keep-alive connections: statuses."""
    statuses: dict[int, int] = {}
    queue = iter(cookies)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:

        async def worker() -> None:
            for cookie in queue:
                async with client.get(url, headers={"Cookie": cookie}) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def sessions_rss(provider: DevProvider, server: Target, cookie: Target | None, redis_url: str,
                       prefix: str, count: int = 10_000) -> dict[str, Any]:
    """RSS of one server-session worker before and after ``count`` distinct sessions went through its
    cache (each requested once); the token-cookie worker under the same users' cookies beside it."""
    started = time.monotonic()
    issued = []
    for i in range(count):
        user = bench_user(i)
        issued.append((user.sub, provider.issue_tokens(user)))
    minted = time.monotonic() - started
    seeder = Seeder(redis_url, prefix)
    try:
        ids = [await seeder.session(tokens, sub) for sub, tokens in issued]
    finally:
        await seeder.close()
    out: dict[str, Any] = {"sessions": count, "mint_seconds": minted}
    runs = [("server", server, [f"{SESSION_COOKIE}={sid}" for sid in ids])]
    if cookie is not None:
        runs.append(("cookie", cookie, [f"access_token={t['access_token']}; id_token={t['id_token']}"
                                        for _, t in issued]))
    for mode, target, cookies in runs:
        before = rss_mib(tree(target.pid))
        wall0 = time.perf_counter()
        statuses = await _each_once(target.url + "/", cookies)
        seconds = time.perf_counter() - wall0
        after = rss_mib(tree(target.pid))
        out[mode] = {"target": target.name, "before": before, "after": after, "statuses": statuses,
                     "seconds": seconds, "per_session_kib": (after - before) * 1024 / count}
    return out


# -- RESULTS.md ---------------------------------------------------------------------------------------


def render(run: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    storms = run.get("refresh_storm", [])
    if storms:
        lines += [
            "", "## Refresh storm over two replicas (`refresh-storm`)", "",
            "Two authsidecar replicas (one worker each, both on the target core) share one redis-server; the "
            "dev provider rotates refresh tokens with reuse detection (a second use of a rotated refresh "
            "token revokes the whole sign-in). Every session's access token has expired; each session "
            "sends its burst of requests at once, each on its own connection, alternating between the "
            "replicas. *Token requests* counts the provider's `refresh_token` grants: one per session "
            "means the replicas made one refresh between them. *Still signed in*: afterwards, each "
            "session's renewed refresh token is live at the provider (token cookies), or its session "
            "answers 200 without another token request (server sessions). *Roles*: "
            "`authsidecar_refresh_coordination_total` summed over both replicas.",
            "",
            "| mode | sessions | requests (burst, in flight) | token requests | statuses | still signed in | "
            "req/s | p50 | p99 | CPU µs/req (both replicas) | roles |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in storms:
            statuses = ", ".join(f"{k}: {v:,}" for k, v in s["statuses"].items())
            roles = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(s["roles"].items()))
            lines.append(
                f"| {s['mode']} | {s['sessions']:,} | {s['requests']:,} ({s['burst']}, {s['concurrent']}) | "
                f"{s['token_requests']:,} | {statuses} | {s['sessions_alive']:,} | {s['rate']:,.0f} | "
                f"{s['p50_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {s['cpu_us']:,.0f} | {roles} |"
            )
    rss = run.get("sessions_rss")
    if rss:
        lines += [
            "", f"## Memory with {rss['sessions']:,} server sessions cached (`sessions-rss`)", "",
            f"{rss['sessions']:,} users' sessions (access, ID and refresh token each) seeded into Redis, "
            "then each requested once from the server-session worker (32 at a time, keep-alive): each "
            "lands in its in-process session cache (10,000 entries at most; an entry is served for "
            "`sessions.cache_seconds` and stays until pushed out). VmRSS of the worker before and after. "
            "Beside it the token-cookie worker under the same users' token cookies (its validation cache "
            "is 1,000 entries in the bench, as in the server-session worker): the difference between the "
            "two is what the session cache costs.",
            "",
            "| mode | target | RSS before | RSS after | growth per session | statuses | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode in ("server", "cookie"):
            if mode in rss:
                m = rss[mode]
                statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(m["statuses"].items()))
                lines.append(
                    f"| {mode} | {m['target']} | {m['before']:.1f} MiB | {m['after']:.1f} MiB | "
                    f"{m['per_session_kib']:.2f} KiB | {statuses} | {m['seconds']:.1f} |"
                )
    return lines
