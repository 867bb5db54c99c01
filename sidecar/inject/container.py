"""The injected container and its volumes, built from the injector's sidecar template.

The container follows deploy/k8s/deployment.yaml (and its native-sidecar component) exactly
where it can: the same image user, security context, probes and mount paths, so an injected pod
and a hand-written one behave alike. Ports are named ``authsidecar`` (the Service's target) and
``authsidecar-adm`` (probes, Prometheus): names an app is unlikely to use, and within the
15-character limit of a port name.
"""

from __future__ import annotations

from typing import Any

from sidecar.inject.annotations import PodRequest
from sidecar.inject.settings import SidecarTemplate

NAME = "authsidecar"
PORT_NAME = "authsidecar"
ADMIN_PORT_NAME = "authsidecar-adm"
CONFIG_VOLUME = "authsidecar-config"
SECRET_VOLUME = "authsidecar-secrets"  # noqa: S105 - a volume name
TMP_VOLUME = "authsidecar-tmp"
CONFIG_DIR = "/etc/authsidecar"
SECRET_DIR = "/var/run/secrets/authsidecar"  # noqa: S105 - a mount path
VOLUMES = (CONFIG_VOLUME, SECRET_VOLUME, TMP_VOLUME)
# 0444: the pod may have no fsGroup, so the sidecar's user is neither the files' owner (root) nor
# in their group; only this container mounts the volume, so nobody else in the pod sees them.
SECRET_MODE = 0o444
# The classic form's pause before SIGTERM: the endpoint leaves the Service first.
PRE_STOP_SECONDS = 5


def env_name(config_key: str, *, file: bool = False) -> str:
    """``oidc.client_secret`` → ``AUTHSIDECAR_OIDC__CLIENT_SECRET`` (``_FILE`` with ``file``)."""
    return "AUTHSIDECAR_" + config_key.upper().replace(".", "__") + ("_FILE" if file else "")


def environment(template: SidecarTemplate, request: PodRequest) -> list[dict[str, str]]:
    """The ports are the template's (the probes and the Service depend on them), whatever the
    ConfigMap says; the upstream is the pod's app on loopback."""
    env = [
        {"name": "AUTHSIDECAR_CONFIG", "value": f"{CONFIG_DIR}/{template.config_key}"},
        {"name": env_name("listen.port"), "value": str(template.port)},
        {"name": env_name("admin.port"), "value": str(template.admin_port)},
        {"name": env_name("upstream.url"), "value": f"http://127.0.0.1:{request.upstream_port}"},
    ]
    if request.secret is not None:
        env += [{"name": env_name(key, file=True), "value": f"{SECRET_DIR}/{secret_key}"}
                for key, secret_key in sorted(template.secret_files.items())]
    return env


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": ADMIN_PORT_NAME}, **timing}


def container(template: SidecarTemplate, request: PodRequest) -> dict[str, Any]:
    mounts = [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": TMP_VOLUME, "mountPath": "/tmp"}]  # noqa: S108 - a private emptyDir
    if request.secret is not None:
        mounts.insert(1, {"name": SECRET_VOLUME, "mountPath": SECRET_DIR, "readOnly": True})
    spec: dict[str, Any] = {
        "name": NAME,
        "image": template.image,
        "imagePullPolicy": template.image_pull_policy,
        "args": ["serve"],
        "ports": [
            {"name": PORT_NAME, "containerPort": template.port, "protocol": "TCP"},
            {"name": ADMIN_PORT_NAME, "containerPort": template.admin_port, "protocol": "TCP"},
        ],
        "env": environment(template, request),
        # Native: the app starts only once this passes. Classic: liveness waits for it.
        "startupProbe": _probe("/healthz", periodSeconds=1, failureThreshold=30),
        "livenessProbe": _probe("/healthz", periodSeconds=10, timeoutSeconds=3, failureThreshold=3),
        # Ready once the provider's signing keys are loaded; 503 again after SIGTERM.
        "readinessProbe": _probe("/readyz", periodSeconds=5, timeoutSeconds=3, failureThreshold=2),
        "resources": {"requests": dict(template.resources.requests),
                      "limits": dict(template.resources.limits)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": template.run_as_user,
            "runAsGroup": template.run_as_group,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if template.native_sidecar:
        # KEP-753: started before the app containers, stopped after them (Kubernetes >= 1.29).
        spec["restartPolicy"] = "Always"
    else:
        spec["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}}
    return spec


def volumes(template: SidecarTemplate, request: PodRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": CONFIG_VOLUME, "configMap": {"name": request.config_map}}]
    if request.secret is not None:
        out.append({"name": SECRET_VOLUME,
                    "secret": {"secretName": request.secret, "defaultMode": SECRET_MODE}})
    # A writable /tmp beside the read-only root (`serve --workers N` keeps its metrics there).
    out.append({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}})
    return out
