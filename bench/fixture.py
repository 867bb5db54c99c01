"""The dev provider, run inside the harness (real clock), and the credentials the loads send."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from jwcrypto import jwk

from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.users import DevUser

CLIENT_ID = "authsidecar-dev"


@dataclass
class Fixture:
    provider: DevProvider
    runner: web.AppRunner
    issuer: str
    public_pem: Path
    kid: str  # the signing key's id (for mod_auth_openidc's static key)
    cookie: str  # a browser's session cookies (access + ID token): the validation cache stays warm
    bearer: str  # a fixed access token for Authorization: Bearer


async def start_fixture(workdir: Path) -> Fixture:
    # No browser logs in here: the redirect and logout URIs of the default config are never used.
    provider = DevProvider(ProviderConfig(client_id=CLIENT_ID), time.time)
    runner, issuer = await start_provider(provider, "127.0.0.1", 0)
    # HAProxy's jwt_verify takes the provider's public key as a PEM file.
    first = provider.keys.jwks()["keys"][0]
    public = jwk.JWK(**first)
    pem = workdir / "provider-public.pem"
    pem.write_bytes(public.export_to_pem())
    cookie = f"access_token={provider.mint_access_token('alice')}; id_token={provider.mint_id_token('alice')}"
    bearer = provider.mint_access_token("bob")
    return Fixture(provider, runner, issuer, pem, str(first["kid"]), cookie, bearer)


def user_cookies(provider: DevProvider, count: int) -> list[str]:
    """``count`` distinct users, one access-token cookie each (as many distinct tokens)."""
    out = []
    for i in range(count):
        user = DevUser(
            username=f"user{i:05d}", password="-", email=f"user{i:05d}@example.com", groups=("users",)
        )
        out.append(f"access_token={provider.mint_access_token(user)}")
    return out


def bearer_lines(provider: DevProvider, count: int) -> list[str]:
    """``count`` distinct users' access tokens as ``Authorization`` values."""
    return [f"Bearer {line.removeprefix('access_token=')}" for line in user_cookies(provider, count)]


def forged_lines(provider: DevProvider, count: int) -> list[str]:
    """``count`` distinct forged tokens: real headers (the provider's kid) and claims, each with the
    signature of another user's token, so every one is well formed and fails only on its signature."""
    tokens = [line.removeprefix("Bearer ") for line in bearer_lines(provider, count)]
    out = []
    for i, token in enumerate(tokens):
        signed, _, _ = token.rpartition(".")
        other = tokens[(i + 1) % len(tokens)].rpartition(".")[2]
        out.append(f"Bearer {signed}.{other}")
    return out


def garbage_lines(provider: DevProvider, count: int) -> list[bytes]:
    """``count`` ``Authorization`` values of invalid shapes (bytes: some are not UTF-8)."""
    token = provider.mint_access_token("alice").encode()
    head, payload, signature = token.split(b".")
    shapes = [
        lambda i: b"\xff\xfe" + str(i).encode() * 8,
        lambda i: "caf\u00e9-".encode("latin-1") + str(i).encode(),
        lambda i: head + b"." + payload + str(i).encode(),
        lambda i: head + b"." + payload + b"." + signature + b"." + str(i).encode(),
        lambda i: head + b"." + payload + b"." + signature[:-8] + b"!$%" + str(i).encode(),
        lambda i: b"bm90LWpzb24." + payload + b"." + signature[:-6] + str(i).encode(),
        lambda i: token[:40] + b"\xe9" + token[40:] + str(i).encode(),
        lambda i: b"A" * 6000 + str(i).encode(),
    ]
    return [b"Bearer " + shapes[i % len(shapes)](i) for i in range(count)]


def refresh_cookies(provider: DevProvider, count: int) -> list[str]:
    """Sessions whose access token has expired but whose refresh token is live.

    Each carries its own refresh token, so every request makes the sidecar call the token endpoint
    (its single-flight remembers a refresh token's result for a few seconds; ``count`` is chosen so
    that no token comes round again within that time). The expired access token can be shared: it
    is rejected on its ``exp`` after the signature check, whichever session it rides with.
    """
    now = int(time.time())
    expired = provider.mint_access_token("alice", exp=now - 600, iat=now - 4200)
    out = []
    for _ in range(count):
        family = provider.ledger.open_family(provider.new_grant("alice"), refresh_ttl=3600, now=now)
        out.append(f"access_token={expired}; refresh_token={family.refresh_token}")
    return out


def write_lines(path: Path, values: Iterable[str | bytes]) -> Path:
    path.write_bytes(b"".join((v if isinstance(v, bytes) else v.encode()) + b"\n" for v in values))
    return path
