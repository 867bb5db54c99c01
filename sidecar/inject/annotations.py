"""The pod annotations that ask for authsidecar, read into what one pod wants.

    authsidecar.io/inject          "true" injects, "false" (or no annotation) leaves the pod alone
    authsidecar.io/upstream-port   the app's port on 127.0.0.1 (required when injecting)
    authsidecar.io/config          the ConfigMap holding authsidecar.yaml (default: the injector's)
    authsidecar.io/secret          the Secret holding the secret files (default: the injector's)
    authsidecar.io/injected        set by the injector: the pod has been injected (do not set it)

Every other ``authsidecar.io/`` annotation is refused on a pod that asks for injection: a typo such
as ``authsidecar.io/upstream_port`` must not silently become a default. There is deliberately no
annotation for the image or the resources: those are the platform's choice, in the injector's
configuration, so that one change rolls a fixed sidecar out to every pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.inject.settings import DNS_SUBDOMAIN, SidecarTemplate

PREFIX = "authsidecar.io/"
INJECT = PREFIX + "inject"
UPSTREAM_PORT = PREFIX + "upstream-port"
CONFIG = PREFIX + "config"
SECRET = PREFIX + "secret"
INJECTED = PREFIX + "injected"
KNOWN = frozenset({INJECT, UPSTREAM_PORT, CONFIG, SECRET, INJECTED})


@dataclass(frozen=True)
class PodRequest:
    """What an annotated pod asks for, checked."""

    upstream_port: int
    config_map: str
    secret: str | None


def wants_injection(annotations: Mapping[str, Any]) -> bool | str:
    """True or False as annotated, or a problem naming the annotation."""
    value = annotations.get(INJECT)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    return f'{INJECT}: must be "true" or "false", got {_shown(value)}'


def read_request(annotations: Mapping[str, Any], template: SidecarTemplate) -> PodRequest | list[str]:
    """The pod's request, or every problem with its annotations (each naming one)."""
    problems = [f"{name}: unknown annotation (known: {', '.join(sorted(KNOWN - {INJECTED}))})"
                for name in sorted(annotations) if name.startswith(PREFIX) and name not in KNOWN]
    port = _port(annotations.get(UPSTREAM_PORT), problems)
    if port in (template.port, template.admin_port):
        problems.append(f"{UPSTREAM_PORT}: {port} is the sidecar's own port "
                        f"(listen {template.port}, admin {template.admin_port}); move the app")
    config_map = _name(annotations, CONFIG, template.config_map, problems)
    secret = _name(annotations, SECRET, template.secret, problems)
    if problems or port is None or config_map is None:
        return problems
    return PodRequest(upstream_port=port, config_map=config_map, secret=secret)


def _port(value: Any, problems: list[str]) -> int | None:
    if value is None:
        problems.append(f'{UPSTREAM_PORT}: required: the port your app listens on at 127.0.0.1, e.g. "3000"')
        return None
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5
            and 1 <= int(value) <= 65535):
        problems.append(f"{UPSTREAM_PORT}: must be a port number from 1 to 65535, got {_shown(value)}")
        return None
    return int(value)


def _name(annotations: Mapping[str, Any], key: str, default: str | None,
          problems: list[str]) -> str | None:
    value = annotations.get(key, default)
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) <= 253 and DNS_SUBDOMAIN.match(value)):
        problems.append(f"{key}: {_shown(value)} is not a Kubernetes object name")
        return None
    return value


def _shown(value: Any) -> str:
    """A value for an error message: quoted, cut short (annotations can be 256 KiB)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
