"""A pod → the RFC 6902 JSON Patch that adds authsidecar to it, or the reasons it cannot.

Paths are JSON Pointers (RFC 6901): ``/`` in an annotation key is written ``~1`` (and ``~`` as
``~0``). A pod may come without ``spec.volumes`` or ``spec.initContainers``: "add" to ``.../-``
of a missing array fails, so the array is added whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.inject import container as c
from sidecar.inject.annotations import INJECT, INJECTED, read_request, wants_injection
from sidecar.inject.settings import SidecarTemplate


@dataclass(frozen=True)
class Plan:
    """What to answer for one pod: ``ops`` to apply (empty: leave the pod as it is), or
    ``problems`` that refuse it, each naming an annotation or a field of the pod."""

    ops: tuple[dict[str, Any], ...] = ()
    problems: tuple[str, ...] = ()
    # Why nothing is done, for the log and the metric: "not_annotated", "already_injected".
    skipped: str = ""


def pointer(*parts: str | int) -> str:
    """A JSON Pointer (RFC 6901 §3): ``~`` → ``~0`` first, then ``/`` → ``~1``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(spec: dict[str, Any], field: str, problems: list[str]) -> list[dict[str, Any]]:
    value = spec.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(f"spec.{field}: must be a list of objects")
        return []
    return value


def plan(pod: dict[str, Any], template: SidecarTemplate) -> Plan:
    metadata = pod.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return Plan(problems=("metadata: must be an object",))
    annotations = _dict(_dict(metadata).get("annotations"))
    if not all(isinstance(v, str) for v in annotations.values()):
        return Plan(problems=("metadata.annotations: values must be strings",))
    wanted = wants_injection(annotations)
    if isinstance(wanted, str):
        return Plan(problems=(wanted,))
    if not wanted:
        return Plan(skipped="not_annotated")
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return Plan(problems=("spec: must be an object",))
    problems: list[str] = []
    containers = _items(spec, "containers", problems)
    inits = _items(spec, "initContainers", problems)
    volumes = _items(spec, "volumes", problems)
    if problems:
        return Plan(problems=tuple(problems))
    names = {x.get("name") for x in containers + inits}
    if annotations.get(INJECTED) == "true" and c.NAME in names:
        return Plan(skipped="already_injected")
    request = read_request(annotations, template)
    problems = list(request) if isinstance(request, list) else []
    problems += _clashes(spec, containers, inits, volumes, template)
    if problems or isinstance(request, list):
        return Plan(problems=tuple(problems))
    # The pod asked by annotation, so metadata.annotations exists ("add" replaces a stale mark).
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": pointer("metadata", "annotations", INJECTED), "value": "true"}]
    ops += _append(spec, "volumes", c.volumes(template, request))
    ops += _append(spec, "initContainers" if template.native_sidecar else "containers",
                   [c.container(template, request)])
    return Plan(ops=tuple(ops))


def _append(spec: dict[str, Any], field: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(spec.get(field), list):
        return [{"op": "add", "path": pointer("spec", field), "value": items}]
    return [{"op": "add", "path": pointer("spec", field, "-"), "value": item} for item in items]


def _clashes(spec: dict[str, Any], containers: list[dict[str, Any]], inits: list[dict[str, Any]],
             volumes: list[dict[str, Any]], template: SidecarTemplate) -> list[str]:
    """What in the pod would collide with the sidecar: it shares the pod's network namespace."""
    problems = []
    if spec.get("hostNetwork") is True:
        problems.append(f"spec.hostNetwork: the sidecar would listen on the node's ports; "
                        f"remove {INJECT} or hostNetwork")
    ours = {template.port: "listen", template.admin_port: "admin"}
    for field, items in (("containers", containers), ("initContainers", inits)):
        for item in items:
            name = item.get("name")
            if name == c.NAME:
                problems.append(f"spec.{field}[{name}]: a container named {c.NAME} exists already; "
                                f"remove it or {INJECT}")
            ports = item.get("ports")
            for port in ports if isinstance(ports, list) else []:
                number = port.get("containerPort") if isinstance(port, dict) else None
                if number in ours:
                    problems.append(f"spec.{field}[{name}].ports: {number} is the sidecar's "
                                    f"{ours[number]} port; the app must use another")
                elif isinstance(port, dict) and port.get("name") in (c.PORT_NAME, c.ADMIN_PORT_NAME):
                    problems.append(f"spec.{field}[{name}].ports: the name {port['name']} is the sidecar's")
    taken = sorted({str(v.get("name")) for v in volumes} & set(c.VOLUMES))
    problems += [f"spec.volumes[{name}]: the sidecar's volume name is taken" for name in taken]
    return problems
