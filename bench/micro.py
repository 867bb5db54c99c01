"""Micro-benchmark of the token validator alone (no HTTP on the measured path).

* cache-cold: ``TokenValidator.access`` on distinct tokens (RS256 signature + claims + cache insert)
* cache-hit: ``TokenValidator.cached`` and ``TokenValidator.access`` on a token verified before
* memory: bytes held by the validator for N cached tokens (tracemalloc), scaled to 10,000

The JWKS comes from a dev provider over HTTP, as in the sidecar: by default one started here that
also mints the tokens; with ``--issuer`` and ``--tokens-file`` (one token, or ``access_token=...``
cookie, per line) an already running provider and its tokens are used instead.

    .venv/bin/python bench/micro.py [--tokens 10000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from sidecar.config import OidcSettings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.users import DevUser
from sidecar.observability import Metrics
from sidecar.oidc.claims import TokenPolicy
from sidecar.oidc.jwks import JwksCache
from sidecar.oidc.tokens import TokenValidator

CLIENT_ID = "authsidecar-dev"


class _Quiet:
    def info(self, event: str, /, **kw: Any) -> None:
        pass

    def warning(self, event: str, /, **kw: Any) -> None:
        pass


def _validator(jwks: JwksCache, issuer: str, metrics: Metrics, size: int) -> TokenValidator:
    oidc = OidcSettings(issuer=issuer, client_id=CLIENT_ID, provider="cognito", cognito_domain=issuer)
    # keep_claims=(): what the sidecar keeps with the default configuration (no claim rules, no
    # extra claim headers), as sidecar.runtime builds it.
    return TokenValidator(TokenPolicy.from_settings(oidc), jwks, time.time, metrics, size, keep_claims=())


async def measure(issuer: str, tokens: list[str]) -> dict[str, float]:
    metrics = Metrics(CollectorRegistry())
    async with aiohttp.ClientSession() as session:
        jwks = JwksCache(
            f"{issuer}/.well-known/jwks.json",
            session,
            algorithms=("RS256",),
            refresh_interval=3600,
            unknown_kid_cooldown=60,
            timeout=5,
            clock=time.time,
            metrics=metrics,
            logger=_Quiet(),
        )
        await jwks.start()
        try:
            return await _measure(jwks, issuer, metrics, tokens)
        finally:
            await jwks.close()


async def _measure(jwks: JwksCache, issuer: str, metrics: Metrics, tokens: list[str]) -> dict[str, float]:
    n = len(tokens)
    validator = _validator(jwks, issuer, metrics, n + 1)
    await validator.access(tokens[0])  # first use: lazy imports and key objects
    validator = _validator(jwks, issuer, metrics, n + 1)
    cold = []
    for token in tokens:
        started = time.perf_counter()
        await validator.access(token)
        cold.append(time.perf_counter() - started)
    hot, loops = tokens[: min(n, 100)], max(1, 100_000 // min(n, 100))
    started = time.perf_counter()
    for _ in range(loops):
        for token in hot:
            validator.cached(token)
    cached_us = (time.perf_counter() - started) / (loops * len(hot)) * 1e6
    started = time.perf_counter()
    for _ in range(loops):
        for token in hot:
            await validator.access(token)
    access_hit_us = (time.perf_counter() - started) / (loops * len(hot)) * 1e6

    # Memory: a fresh validator filled under tracemalloc; what stays allocated afterwards is the cache.
    fresh = _validator(jwks, issuer, metrics, n + 1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for token in tokens:
        await fresh.access(token)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(fresh) == n
    return {
        "tokens": n,
        "token_bytes": statistics.mean(len(t) for t in tokens),
        "cold_us_median": statistics.median(cold) * 1e6,
        "cold_us_mean": statistics.mean(cold) * 1e6,
        "cold_us_p99": sorted(cold)[int(0.99 * (n - 1))] * 1e6,
        "hit_cached_us": cached_us,
        "hit_access_us": access_hit_us,
        "bytes_per_entry": held / n,
        "mib_per_10k": held / n * 10_000 / 2**20,
    }


async def standalone(count: int) -> dict[str, float]:
    provider = DevProvider(ProviderConfig(client_id=CLIENT_ID), time.time)
    runner, issuer = await start_provider(provider)
    try:
        tokens = [
            provider.mint_access_token(
                DevUser(
                    username=f"user{i:05d}", password="-", email=f"user{i:05d}@example.com", groups=("users",)
                )
            )
            for i in range(count)
        ]
        return await measure(issuer, tokens)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="distinct tokens to mint (standalone)")
    parser.add_argument("--issuer", help="use this running dev provider (with --tokens-file)")
    parser.add_argument("--tokens-file", type=Path, help="one token or access_token=... cookie per line")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.issuer and args.tokens_file:
        tokens = [
            line.split("access_token=", 1)[-1].split(";", 1)[0]
            for line in args.tokens_file.read_text().splitlines()
            if line
        ]
        result = asyncio.run(measure(args.issuer, tokens))
    else:
        result = asyncio.run(standalone(args.tokens))
    if args.json:
        print(json.dumps(result))
        return
    print(f"tokens: {result['tokens']} distinct, {result['token_bytes']:.0f} bytes each")
    print(
        f"cache-cold access(): median {result['cold_us_median']:.1f} µs, p99 {result['cold_us_p99']:.1f} µs"
    )
    print(f"cache-hit cached(): {result['hit_cached_us']:.2f} µs; access(): {result['hit_access_us']:.2f} µs")
    print(
        f"memory: {result['bytes_per_entry']:.0f} bytes per cached token, "
        f"{result['mib_per_10k']:.1f} MiB per 10,000"
    )


if __name__ == "__main__":
    main()
