"""Pods, AdmissionReviews and the simulated mounts of an injected pod."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from tests.deploy._kustomize import render
from tests.deploy._support import CLIENT_SECRET, COOKIE_SECRET, K8S, REPO

INJECTOR_DIR = K8S / "injector"
SERVICE_HOST = "authsidecar-injector.authsidecar-injector.svc"
IMAGE = "ghcr.io/example/authsidecar:0.1.0"
DEPLOY_CONFIG_TEXT = (K8S / "authsidecar.yaml").read_text(encoding="utf-8")
SECRETS = {"client-secret": CLIENT_SECRET, "cookie-secret": COOKIE_SECRET}
__all__ = ["REPO"]


def base_settings(cert: Path, key: Path) -> dict[str, Any]:
    """The injector's settings for tests: loopback, ephemeral ports, the given certificate."""
    return {
        "listen": {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)},
        "admin": {"host": "127.0.0.1", "port": 0},
        "sidecar": {"image": IMAGE},
    }


def app_pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A pod the tests write: one app container, nothing else unless ``spec`` adds it."""
    metadata: dict[str, Any] = {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}}
    if annotations is not None:
        metadata["annotations"] = annotations
    pod_spec = {"containers": [{"name": "app", "image": "ghcr.io/example/app:1.0.0"}], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def annotated(port: str = "3000", **more: str) -> dict[str, str]:
    return {"authsidecar.io/inject": "true", "authsidecar.io/upstream-port": port, **more}


def deploy_pod() -> dict[str, Any]:
    """This repository's Deployment's pod (deploy/k8s) as it would be before injection: the app
    alone, its authsidecar container and that container's volumes taken out, annotated."""
    deployment = next(d for d in render(K8S) if d["kind"] == "Deployment")
    template = copy.deepcopy(deployment["spec"]["template"])
    spec = template["spec"]
    sidecar = next(c for c in spec["containers"] if c["name"] == "authsidecar")
    spec["containers"].remove(sidecar)
    theirs = {m["name"] for m in sidecar["volumeMounts"]}
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] not in theirs]
    template["metadata"]["annotations"].update(annotated("3000"))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "generateName": "app-7d9f8-", "namespace": "shop"},
            "spec": spec}


def review(pod: Any, *, uid: str | None = None, operation: str = "CREATE", dry_run: bool = False,
           **request: Any) -> dict[str, Any]:
    """An AdmissionReview v1 request as the API server sends it for a pod CREATE."""
    body: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop",
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod,
        "oldObject": None,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        **request,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    assert isinstance(ops, list)
    return ops


def apply(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The pod the API server would store: the patch applied with a JSON Patch library."""
    patched = jsonpatch.JsonPatch(patch_of(response)).apply(pod)
    assert isinstance(patched, dict)
    return patched


def injected_container(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "authsidecar"]
    assert len(found) == 1
    return found[0]


def simulate_mounts(pod: dict[str, Any], root: Path, config_maps: dict[str, dict[str, str]],
                    secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """Write what the kubelet would mount into the sidecar under ``root``; the sidecar's
    environment with every path inside a mount moved there."""
    sidecar = injected_container(pod)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    moved: dict[str, Path] = {}
    for mount in sidecar["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["name"]
        target.mkdir(parents=True)
        if "configMap" in volume:
            files = config_maps[volume["configMap"]["name"]]
        elif "secret" in volume:
            files = secrets[volume["secret"]["secretName"]]
        else:
            files = {}
        for name, text in files.items():
            (target / name).write_text(text, encoding="utf-8")
        moved[mount["mountPath"]] = target
    env = {}
    for var in sidecar["env"]:
        value = var["value"]
        for mount_path, target in sorted(moved.items(), key=lambda m: -len(m[0])):
            if value.startswith(mount_path + "/"):
                value = str(target / value[len(mount_path) + 1:])
                break
        env[var["name"]] = value
    return env


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
