"""deploy/k8s/injector: schema-valid manifests that agree with each other, the injector's
configuration and the webhook's routes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor

from sidecar import __version__
from sidecar.inject.annotations import INJECT
from sidecar.inject.server import HEALTHZ, MUTATE_PATH, READYZ
from sidecar.inject.settings import load_injector_settings

from ._kustomize import load_kustomization, render
from ._support import K8S

INJECTOR = K8S / "injector"
CERT_MANAGER = INJECTOR / "cert-manager"
LATEST = major_minor(latest_version())
CERT_MANAGER_API = "cert-manager.io/v1"
NAME = "authsidecar-injector"

BASE = render(INJECTOR)
WITH_CERT_MANAGER = render(INJECTOR, [CERT_MANAGER])


def one(docs: list[dict[str, Any]], kind: str, name: str = NAME) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


DEPLOYMENT = one(BASE, "Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
CONFIG_TEXT = (INJECTOR / "injector.yaml").read_text(encoding="utf-8")
WEBHOOK = one(BASE, "MutatingWebhookConfiguration")["webhooks"][0]


def port(name: str) -> int:
    return int(next(p["containerPort"] for p in CONTAINER["ports"] if p["name"] == name))


def mount_of(volume_kind: str, key: str, name: str) -> Path:
    volume = next(v for v in POD["volumes"] if v.get(volume_kind, {}).get(key) == name)
    mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    return Path(mount["mountPath"])


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    path = tmp_path / "injector.yaml"
    path.write_text(CONFIG_TEXT, encoding="utf-8")
    return load_injector_settings(path)


@pytest.mark.parametrize("root", [INJECTOR, CERT_MANAGER], ids=["base", "cert-manager"])
def test_kustomization_uses_every_manifest_in_its_directory(root: Path) -> None:
    spec = load_kustomization(root)
    used = set(spec.get("resources", [])) | {p["path"] for p in spec.get("patches", [])}
    used |= {e.rpartition("=")[2] for g in spec.get("configMapGenerator", []) for e in g["files"]}
    assert {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"} == used


@pytest.mark.parametrize("version", ["1.27", LATEST])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    for doc in BASE:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_base_needs_no_cert_manager_and_the_component_brings_it() -> None:
    assert not [d for d in BASE if d["apiVersion"] == CERT_MANAGER_API]
    assert {d["kind"] for d in WITH_CERT_MANAGER if d["apiVersion"] == CERT_MANAGER_API} == {
        "Issuer", "Certificate"}


def test_kubectl_kustomize_renders_what_the_tests_check(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the minimal renderer alone checks the kustomization")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    spec = {"resources": [os.path.relpath(INJECTOR, overlay)],
            "components": [os.path.relpath(CERT_MANAGER, overlay)]}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = subprocess.run([kubectl, "kustomize", str(overlay)],  # noqa: S603 - a fixed command line
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    text = re.sub(r"\b(authsidecar-injector-config)-[a-z0-9]{10}\b", r"\1", result.stdout)

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    built = sorted((d for d in yaml.safe_load_all(text) if d), key=key)
    assert built == sorted(WITH_CERT_MANAGER, key=key)


def test_two_replicas_and_a_budget_that_leaves_one_serving() -> None:
    assert DEPLOYMENT["spec"]["replicas"] == 2
    pdb = one(BASE, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    for selector in (pdb["spec"]["selector"]["matchLabels"], DEPLOYMENT["spec"]["selector"]["matchLabels"],
                     one(BASE, "Service")["spec"]["selector"]):
        assert selector.items() <= labels.items()


def test_the_injector_runs_locked_down_with_no_api_access() -> None:
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = CONTAINER["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert POD["automountServiceAccountToken"] is False
    assert POD["serviceAccountName"] == one(BASE, "ServiceAccount")["metadata"]["name"]
    assert not [d for d in WITH_CERT_MANAGER if d["kind"] in {"Role", "ClusterRole", "RoleBinding",
                                                               "ClusterRoleBinding"}]
    assert {"cpu", "memory"} <= CONTAINER["resources"]["requests"].keys()
    assert "memory" in CONTAINER["resources"]["limits"]


def test_the_config_map_is_the_file_the_command_reads(settings: Any) -> None:
    config_map = one(BASE, "ConfigMap", "authsidecar-injector-config")
    config_path = Path(CONTAINER["args"][CONTAINER["args"].index("--config") + 1])
    assert CONTAINER["args"][0] == "inject"
    assert mount_of("configMap", "name", "authsidecar-injector-config") == config_path.parent
    assert config_map["data"][config_path.name] == CONFIG_TEXT
    assert settings.listen.port == port("webhook")
    assert settings.admin.port == port("admin")


def test_the_certificate_files_come_from_the_secret_cert_manager_and_make_certs_write(settings: Any) -> None:
    secret_name = "authsidecar-injector-tls"
    tls_dir = mount_of("secret", "secretName", secret_name)
    assert settings.listen.tls_cert == tls_dir / "tls.crt"
    assert settings.listen.tls_key == tls_dir / "tls.key"
    assert one(WITH_CERT_MANAGER, "Certificate")["spec"]["secretName"] == secret_name
    assert f"SECRET:-{secret_name}" in (INJECTOR / "make-certs.sh").read_text(encoding="utf-8")


def test_probes_hit_the_admin_routes_on_the_admin_port() -> None:
    for probe, path in (("livenessProbe", HEALTHZ), ("readinessProbe", READYZ)):
        assert CONTAINER[probe]["httpGet"] == {"path": path, "port": "admin"}


def test_the_webhook_calls_the_service_on_the_mutate_route() -> None:
    service = one(BASE, "Service")
    target = WEBHOOK["clientConfig"]["service"]
    assert target["name"] == service["metadata"]["name"]
    assert target["namespace"] == service["metadata"]["namespace"]
    (service_port,) = service["spec"]["ports"]
    assert target["port"] == service_port["port"] == 443
    assert service_port["targetPort"] == "webhook"
    assert target["path"] == MUTATE_PATH
    assert "caBundle" not in WEBHOOK["clientConfig"]  # cert-manager or make-certs.sh sets it


def test_the_webhook_speaks_v1_has_no_side_effects_and_fails_closed_quickly() -> None:
    assert WEBHOOK["admissionReviewVersions"] == ["v1"]
    assert WEBHOOK["sideEffects"] == "None"
    assert WEBHOOK["failurePolicy"] == "Fail"
    assert 1 <= WEBHOOK["timeoutSeconds"] <= 10
    assert WEBHOOK["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"], "scope": "Namespaced"}]


def _selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
    return True


def test_namespaces_opt_in_by_label_and_the_injectors_own_never_does() -> None:
    selector = WEBHOOK["namespaceSelector"]
    assert selector == {"matchLabels": {"authsidecar.io/injection": "enabled"}}
    namespace = one(BASE, "Namespace")
    assert not _selected(selector, namespace["metadata"]["labels"])
    assert {d["metadata"].get("namespace") for d in BASE if d["kind"] != "Namespace"} - {None} == {NAME}


@pytest.mark.parametrize(("labels", "called"), [
    ({"app": "web"}, True),
    ({INJECT: "false"}, False),
    (DEPLOYMENT["spec"]["template"]["metadata"]["labels"], False),
], ids=["any-pod", "opted-out-by-label", "the-injector-itself"])
def test_pods_can_opt_out_by_label_and_the_injector_is_never_sent(
    labels: dict[str, str], called: bool
) -> None:
    assert _selected(WEBHOOK["objectSelector"], labels) is called


def test_cert_manager_injects_the_ca_of_the_certificate_for_the_services_name() -> None:
    webhook = one(WITH_CERT_MANAGER, "MutatingWebhookConfiguration")
    certificate = one(WITH_CERT_MANAGER, "Certificate")
    ref = webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert ref == f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    service = one(BASE, "Service")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert host in certificate["spec"]["dnsNames"]
    issuer = one(WITH_CERT_MANAGER, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca = one(WITH_CERT_MANAGER, "Certificate", "authsidecar-injector-ca")
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    assert ca["spec"]["isCA"] is True


def test_the_injector_and_the_sidecar_it_injects_are_this_release(settings: Any) -> None:
    images = {i["name"]: i["newTag"] for i in load_kustomization(INJECTOR)["images"]}
    assert images["ghcr.io/example/authsidecar"] == __version__
    assert CONTAINER["image"] == f"ghcr.io/example/authsidecar:{__version__}"
    assert settings.sidecar.image == CONTAINER["image"]
