"""A minimal kustomize: enough to render deploy/k8s, its components and overlays without the binary.

It knows only the fields deploy/k8s uses and refuses any other, so that a new kustomize feature
in the manifests fails here instead of being silently skipped. Generated names get no content
hash (references stay as written). ``test_k8s`` compares it with ``kubectl kustomize`` when that
is installed.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "resources", "configMapGenerator", "images", "patches", "components",
}
COMPONENT_KEYS = {"apiVersion", "kind", "resources", "patches"}


def load_kustomization(root: Path) -> dict[str, Any]:
    data = yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict), root
    return data


def render(root: Path, components: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """The objects ``kustomize build`` would output for ``root`` plus ``components``."""
    spec = load_kustomization(root)
    assert spec.get("kind", "Kustomization") == "Kustomization"
    unknown = set(spec) - KUSTOMIZATION_KEYS
    assert not unknown, f"the test renderer does not know {sorted(unknown)}"
    objects = _resources(root, spec.get("resources", []))
    for generator in spec.get("configMapGenerator", []):
        objects.append(_config_map(root, generator))
    for component in [*(root / c for c in spec.get("components", [])), *components]:
        comp = load_kustomization(component)
        assert comp.get("kind") == "Component", component
        unknown = set(comp) - COMPONENT_KEYS
        assert not unknown, f"the test renderer does not know {sorted(unknown)} in {component}"
        objects += _resources(component, comp.get("resources", []))
        _patch(component, comp.get("patches", []), objects)
    _patch(root, spec.get("patches", []), objects)
    for image in spec.get("images", []):
        _set_image(objects, image)
    return objects


def _resources(root: Path, paths: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in paths:
        path = root / name
        if path.is_dir():  # a base: rendered with its own transformations first, as kustomize does
            out += render(path)
            continue
        assert path.is_file(), f"{path} listed in {root / 'kustomization.yaml'} does not exist"
        out += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return out


def _config_map(root: Path, generator: dict[str, Any]) -> dict[str, Any]:
    assert set(generator) <= {"name", "files", "options"}, generator
    data = {}
    for entry in generator["files"]:
        key, _, file = entry.rpartition("=")
        path = root / file
        assert path.is_file(), f"{path} (configMapGenerator) does not exist"
        data[key or path.name] = path.read_text(encoding="utf-8")
    metadata: dict[str, Any] = {"name": generator["name"]}
    labels = generator.get("options", {}).get("labels")
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _patch(root: Path, patches: Sequence[dict[str, Any]], objects: list[dict[str, Any]]) -> None:
    for patch in patches:
        assert set(patch) <= {"path", "target"}, patch
        ops = yaml.safe_load((root / patch["path"]).read_text(encoding="utf-8"))
        assert isinstance(ops, list), "only JSON 6902 patches are supported here"
        targets = [o for o in objects if _matches(o, patch["target"])]
        assert targets, f"patch {patch['path']} matches nothing"
        for target in targets:
            patched = apply_json_patch(target, ops)
            target.clear()
            target.update(patched)


def _matches(obj: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    return (
        target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def _set_image(objects: list[dict[str, Any]], image: dict[str, str]) -> None:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


# --- RFC 6902 JSON Patch ---------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    parts = _pointer(path)
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def _get(doc: Any, path: str) -> Any:
    node, last = _parent(doc, path)
    return node[int(last)] if isinstance(node, list) else node[last]


def _add(doc: Any, path: str, value: Any) -> None:
    node, last = _parent(doc, path)
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        assert 0 <= index <= len(node), f"add: index {last} out of range at {path}"
        node.insert(index, value)
    else:
        node[last] = value


def _remove(doc: Any, path: str) -> Any:
    node, last = _parent(doc, path)
    if isinstance(node, list):
        return node.pop(int(last))
    assert last in node, f"remove: {path} does not exist"
    return node.pop(last)


def apply_json_patch(doc: dict[str, Any], ops: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Apply ``ops`` to a copy of ``doc``; a failed ``test`` or a missing path raises."""
    out = copy.deepcopy(doc)
    for op in ops:
        kind = op["op"]
        if kind == "add":
            _add(out, op["path"], copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(out, op["path"])
        elif kind == "replace":
            _remove(out, op["path"])
            _add(out, op["path"], copy.deepcopy(op["value"]))
        elif kind == "move":
            _add(out, op["path"], _remove(out, op["from"]))
        elif kind == "copy":
            _add(out, op["path"], copy.deepcopy(_get(out, op["from"])))
        elif kind == "test":
            actual = _get(out, op["path"])
            assert actual == op["value"], f"test failed at {op['path']}: {actual!r} != {op['value']!r}"
        else:
            raise AssertionError(f"unknown JSON patch op {kind!r}")
    return out


# --- what the tests read of rendered objects, and the real kustomize to compare with -----------------


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (named ``name``, when given) in ``docs``."""
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def doc_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def kubectl_kustomize(tmp_path: Path, root: Path, components: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``root`` plus ``components`` (through an overlay in ``tmp_path``);
    skips the test where kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the minimal renderer alone checks the kustomization")
    if components:
        overlay = tmp_path / "overlay"
        overlay.mkdir()
        rel = [os.path.relpath(p, overlay) for p in [root, *components]]
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump({"resources": rel[:1], "components": rel[1:]}), encoding="utf-8")
        root = overlay
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [kubectl, "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def unhash(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strip kustomize's content-hash suffix from generated names and their references; sorted."""
    text = yaml.safe_dump_all(docs, sort_keys=True)
    text = re.sub(r"\b(authsidecar-config)-[a-z0-9]{10}\b", r"\1", text)
    docs = [d for d in yaml.safe_load_all(text) if d]
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))
