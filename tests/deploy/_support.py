"""Shared helpers for the deployment tests: paths, config keys, the admin app, probe commands."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from sidecar.admin import Health, create_admin_app
from sidecar.config import Settings
from sidecar.config_load import ENV_PREFIX, load_settings
from sidecar.observability import Metrics, make_logger
from sidecar.oidc.provider import ProviderLink

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
EXAMPLE_CONFIG = REPO / "config" / "authsidecar.example.yaml"
K8S = REPO / "deploy" / "k8s"
# The components of deploy/k8s, and the demo overlay that builds on it.
NATIVE = K8S / "native-sidecar"
MONITORING = K8S / "prometheus-operator"
REDIS_STORE = K8S / "redis-store"
SERVER_SESSIONS = K8S / "server-sessions"
DEMO = REPO / "deploy" / "examples" / "redis-demo"
ECS_TASK = REPO / "deploy" / "ecs" / "task-definition.json"

# The defaults every artefact must agree with (ports, upstream): those of the example config.
EXAMPLE = load_settings(EXAMPLE_CONFIG, {})

# Valid stand-ins for the secrets a deployment injects at run time.
CLIENT_SECRET = "test-client-secret"
COOKIE_SECRET = "test-cookie-secret-0123456789abcdefghijklmnop"

_URL = re.compile(r"https?://[^\s'\"]+")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def config_key_for_env(name: str) -> str:
    """The dotted config key an ``AUTHSIDECAR_*`` variable sets; ``KeyError`` if there is none.

    ``..._FILE`` names the key without the suffix (its value is read from that file).
    """
    if not name.startswith(ENV_PREFIX):
        raise KeyError(name)
    parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        fields = model.model_fields
        if part not in fields and last and part.endswith("_file") and part[: -len("_file")] in fields:
            part = part[: -len("_file")]
            parts[i] = part
        if part not in fields:
            raise KeyError(f"{name}: no config key {'.'.join(parts[: i + 1])}")
        annotation = fields[part].annotation
        # An optional section (`upstream: UpstreamSettings | None`) has the section's sub-keys.
        annotation = next((a for a in get_args(annotation) if a is not type(None)), annotation)
        if not last:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise KeyError(f"{name}: {'.'.join(parts[: i + 1])} has no sub-keys")
            model = annotation
    return ".".join(parts)


def flat_keys(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys of a nested mapping (mappings under ``claims`` are values, not sections)."""
    keys: set[str] = set()
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, Mapping) and key != "claims":
            keys |= flat_keys(value, dotted + ".")
    return keys


def admin_routes() -> set[str]:
    app = create_admin_app(make_health())
    return {r.canonical for r in app.router.resources()}


def make_health(settings: Settings = EXAMPLE) -> Health:
    """The health of a sidecar whose provider link has not connected yet."""
    link = ProviderLink(settings.oidc, metrics=Metrics(CollectorRegistry()), clock=time.time,
                        log=make_logger(stream=sys.stderr), cache_size=0, keep_claims=())
    return Health(link, CollectorRegistry())


def admin_app() -> web.Application:
    """The real admin app of a sidecar that has not loaded keys yet: /healthz 200, /readyz 503."""
    return create_admin_app(make_health())


def probe_url(argv: Sequence[str]) -> str:
    """The one URL inside a probe command such as ``python -c "...urlopen('http://...')"``."""
    urls = _URL.findall(" ".join(argv))
    assert len(urls) == 1, f"expected one URL in {argv!r}"
    return urls[0]


async def run_probe(argv: Sequence[str], base_url: str, path: str | None = None) -> int:
    """Run a python probe command against ``base_url`` instead of its own host:port; the exit code.

    The command's interpreter is replaced by this one (the image's venv python is not here).
    """
    url = probe_url(argv)
    parts = urlsplit(url)
    target = base_url.rstrip("/") + (path if path is not None else parts.path)
    args = [a.replace(url, target) for a in argv[1:]]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), timeout=30)
