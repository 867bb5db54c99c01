"""deploy/k8s: schema-valid manifests that agree with each other, the config and the image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor
from prometheus_client import CollectorRegistry

from sidecar import __version__
from sidecar.config import Settings
from sidecar.config_load import ENV_PREFIX, parse_settings
from sidecar.errors import ConfigError
from sidecar.observability import Metrics

from . import _dockerfile as df
from ._kustomize import (
    apply_json_patch,
    doc_id,
    kubectl_kustomize,
    load_kustomization,
    objects,
    one,
    render,
    unhash,
)
from ._support import (
    CLIENT_SECRET,
    COOKIE_SECRET,
    DEMO,
    DOCKERFILE,
    EXAMPLE_CONFIG,
    K8S,
    MONITORING,
    NATIVE,
    REDIS_STORE,
    SERVER_SESSIONS,
    admin_routes,
    config_key_for_env,
    flat_keys,
    load_yaml,
)

LATEST = major_minor(latest_version())
BASE_VERSIONS = ["1.27", LATEST]  # the base uses nothing newer than 1.27
NATIVE_VERSIONS = ["1.29", LATEST]  # restartPolicy: Always on init containers: 1.29+
CRD_GROUP = "monitoring.coreos.com/v1"
SIDECAR, APP = "authsidecar", "app"

BASE = render(K8S)
WITH_COMPONENTS = render(K8S, [NATIVE, MONITORING])
CONFIG_TEXT = (K8S / "authsidecar.yaml").read_text(encoding="utf-8")
DEPLOY_CONFIG = yaml.safe_load(CONFIG_TEXT)
DEPLOY = DEPLOY_CONFIG
IMAGE_UID = int(df.parse(DOCKERFILE).final.one("USER").args.split(":")[0])


DEPLOYMENT = one(BASE, "Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINERS = {c["name"]: c for c in POD["containers"]}
SIDECAR_C, APP_C = CONTAINERS[SIDECAR], CONTAINERS[APP]


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container.get("ports", []) if p["name"] == port)


def settings_with_env(env: list[dict[str, Any]], tmp_path: Path, secrets: dict[str, str]) -> Settings:
    """The deploy config with the container's env applied; each ``*_FILE`` points at a temp file
    holding ``secrets[<file name>]`` (the Secret's key)."""
    environ = {}
    for var in env:
        value = var["value"]
        if var["name"].endswith("_FILE"):
            path = tmp_path / Path(value).name
            path.write_text(secrets[Path(value).name] + "\n", encoding="utf-8")
            value = str(path)
        environ[var["name"]] = value
    return parse_settings(DEPLOY_CONFIG, environ)


# --- kustomize ------------------------------------------------------------------------------------


# Every kustomization and component of deploy/, with the kustomizations it builds on (resources that
# are directories; every other resource is a file of its own directory).
KUSTOMIZATIONS = [
    pytest.param(K8S, (), id="base"),
    pytest.param(NATIVE, (), id="native-sidecar"),
    pytest.param(MONITORING, (), id="prometheus-operator"),
    pytest.param(REDIS_STORE, (), id="redis-store"),
    pytest.param(SERVER_SESSIONS, (), id="server-sessions"),
    pytest.param(DEMO, ("../../k8s",), id="redis-demo"),
]


@pytest.mark.parametrize(("root", "bases"), KUSTOMIZATIONS)
def test_kustomization_references_files_that_exist_and_uses_every_manifest_in_its_directory(
    root: Path, bases: tuple[str, ...]
) -> None:
    spec = load_kustomization(root)
    resources = spec.get("resources", [])
    assert [name for name in resources if not (root / name).is_file()] == list(bases)
    for name in [*bases, *spec.get("components", [])]:
        assert (root / name / "kustomization.yaml").is_file(), name
    for generator in spec.get("configMapGenerator", []):
        for entry in generator["files"]:
            assert (root / entry.rpartition("=")[2]).is_file(), entry
    for patch in spec.get("patches", []):
        assert (root / patch["path"]).is_file(), patch
    # Every manifest file in the directory is used: nothing is silently left out.
    used = {name for name in resources if name not in bases} | {p["path"] for p in spec.get("patches", [])}
    used |= {e.rpartition("=")[2] for g in spec.get("configMapGenerator", []) for e in g["files"]}
    assert {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"} == used


def test_base_holds_no_prometheus_operator_objects() -> None:
    # `kubectl apply -k deploy/k8s` must work on clusters without the operator's CRDs.
    assert not [d for d in BASE if d["apiVersion"] == CRD_GROUP]


@pytest.mark.parametrize(
    ("root", "components"),
    [(K8S, []), (K8S, [NATIVE, MONITORING]), (K8S, [REDIS_STORE]),
     (K8S, [REDIS_STORE, SERVER_SESSIONS, NATIVE]), (DEMO, [])],
    ids=["base", "with-components", "redis-store", "store-sessions-native", "redis-demo"],
)
def test_kubectl_kustomize_renders_what_the_tests_check(
    tmp_path: Path, root: Path, components: list[Path]
) -> None:
    assert unhash(kubectl_kustomize(tmp_path, root, components)) == unhash(render(root, components))


# --- schemas --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", BASE_VERSIONS)
@pytest.mark.parametrize("doc", BASE, ids=doc_id)
def test_base_manifest_is_valid_for_kubernetes(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", NATIVE_VERSIONS)
def test_native_sidecar_deployment_is_valid_for_kubernetes(version: str) -> None:
    kubernetes_validate.validate(one(render(K8S, [NATIVE]), "Deployment"), version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    typo = {"op": "add", "path": "/spec/template/spec/containers/1/readinesProbe", "value": {}}
    broken = apply_json_patch(DEPLOYMENT, [typo])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, LATEST, strict=True)


# --- the native-sidecar component ------------------------------------------------------------------


def test_native_sidecar_moves_authsidecar_to_an_init_container_that_restarts_always() -> None:
    pod = one(render(K8S, [NATIVE]), "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == [APP]
    (init,) = pod["initContainers"]
    assert init["name"] == SIDECAR
    assert init["restartPolicy"] == "Always"
    # The app starts only after this probe passes: the proxy is listening first.
    probe = init["startupProbe"]["httpGet"]
    assert probe["path"] in admin_routes()
    assert container_port(init, probe["port"]) == DEPLOY["admin"]["port"]
    # Otherwise the very same container as the classic form, minus the preStop pause.
    same = {k: v for k, v in init.items() if k not in {"restartPolicy", "startupProbe"}}
    assert same == {k: v for k, v in SIDECAR_C.items() if k != "lifecycle"}


def test_native_sidecar_patch_refuses_a_base_whose_second_container_is_not_authsidecar() -> None:
    swapped = apply_json_patch(DEPLOYMENT, [{"op": "move", "from": "/spec/template/spec/containers/1",
                                             "path": "/spec/template/spec/containers/0"}])
    with pytest.raises(AssertionError, match="test failed"):
        apply_json_patch(swapped, load_yaml(NATIVE / "patch.yaml"))


# --- ports, Services, probes ------------------------------------------------------------------------


def test_sidecar_ports_are_the_configured_listen_and_admin_ports() -> None:
    assert container_port(SIDECAR_C, "http") == DEPLOY["listen"]["port"]
    assert container_port(SIDECAR_C, "admin") == DEPLOY["admin"]["port"]
    assert SIDECAR_C["args"] == df.parse(DOCKERFILE).final.one("CMD").exec_form()


def test_app_declares_no_port_and_listens_where_upstream_points() -> None:
    assert "ports" not in APP_C
    env = {e["name"]: e["value"] for e in APP_C["env"]}
    assert DEPLOY["upstream"]["url"] == f"http://{env['HOST']}:{env['PORT']}"
    assert env["HOST"] == "127.0.0.1"


def test_app_service_sends_traffic_to_the_sidecar_only() -> None:
    service = one(BASE, "Service", "app")
    assert [container_port(SIDECAR_C, p["targetPort"]) for p in service["spec"]["ports"]] == [
        DEPLOY["listen"]["port"]
    ]
    upstream_port = int(DEPLOY["upstream"]["url"].rsplit(":", 1)[1])
    for svc in objects(BASE, "Service"):
        for port in svc["spec"]["ports"]:
            assert container_port(SIDECAR_C, port["targetPort"]) != upstream_port


def test_metrics_service_exposes_the_admin_port_apart_from_the_app_service() -> None:
    service = one(BASE, "Service", "app-metrics")
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert container_port(SIDECAR_C, port["targetPort"]) == DEPLOY["admin"]["port"]


def test_probes_hit_admin_routes_on_the_admin_port() -> None:
    routes = admin_routes()
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = SIDECAR_C[probe]["httpGet"]
        assert get["path"] == path
        assert path in routes
        assert container_port(SIDECAR_C, get["port"]) == DEPLOY["admin"]["port"]


def test_prometheus_annotations_point_at_the_metrics_route() -> None:
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == DEPLOY["admin"]["port"]
    assert annotations["prometheus.io/path"] in admin_routes()


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_selector_selects_the_pod() -> None:
    pod_labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert _selects(DEPLOYMENT["spec"]["selector"]["matchLabels"], pod_labels)
    for service in objects(BASE, "Service"):
        assert _selects(service["spec"]["selector"], pod_labels), doc_id(service)
    assert _selects(one(BASE, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(one(BASE, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pod_labels)


def test_pod_disruption_budget_leaves_room_for_a_drain() -> None:
    pdb = one(BASE, "PodDisruptionBudget")
    assert 1 <= pdb["spec"]["minAvailable"] < DEPLOYMENT["spec"]["replicas"]


def test_network_policy_admits_the_proxy_port_and_admin_from_monitoring_only() -> None:
    policy = one(BASE, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    by_port = {p["port"]: rule for rule in policy["ingress"] for p in rule["ports"]}
    assert set(by_port) == {DEPLOY["listen"]["port"], DEPLOY["admin"]["port"]}
    assert "from" not in by_port[DEPLOY["listen"]["port"]]
    (source,) = by_port[DEPLOY["admin"]["port"]]["from"]
    assert source == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


# --- config, env and secrets --------------------------------------------------------------------------


def test_deploy_config_uses_only_keys_of_the_example_config_and_holds_no_secret() -> None:
    example = load_yaml(EXAMPLE_CONFIG)
    assert flat_keys(DEPLOY_CONFIG) <= flat_keys(example)
    assert DEPLOY_CONFIG.get("oidc", {}).get("client_secret") is None
    assert DEPLOY_CONFIG.get("cookies", {}).get("secret") is None


def test_config_map_carries_the_deploy_config_under_the_name_cmd_reads() -> None:
    config_map = one(BASE, "ConfigMap", "authsidecar-config")
    volume = next(v for v in POD["volumes"] if v.get("configMap", {}).get("name") == "authsidecar-config")
    mount = next(m for m in SIDECAR_C["volumeMounts"] if m["name"] == volume["name"])
    config_path = Path(SIDECAR_C["args"][SIDECAR_C["args"].index("--config") + 1])
    assert Path(mount["mountPath"]) == config_path.parent
    assert mount["readOnly"] is True
    assert config_map["data"][config_path.name] == CONFIG_TEXT


def test_every_authsidecar_env_var_names_a_config_key() -> None:
    env = [e for c in POD["containers"] for e in c.get("env", [])]
    names = [e["name"] for e in env if e["name"].startswith(ENV_PREFIX)]
    assert names
    for name in names:
        config_key_for_env(name)  # raises KeyError naming the variable


def test_secret_files_are_where_the_env_points(tmp_path: Path) -> None:
    secret = one(BASE, "Secret", "authsidecar-secrets")
    volume = next(v for v in POD["volumes"] if v.get("secret", {}).get("secretName") == "authsidecar-secrets")
    mount = next(m for m in SIDECAR_C["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    files = {e["name"]: Path(e["value"]) for e in SIDECAR_C["env"] if e["name"].endswith("_FILE")}
    assert set(files) == {"AUTHSIDECAR_OIDC__CLIENT_SECRET_FILE", "AUTHSIDECAR_COOKIES__SECRET_FILE"}
    for path in files.values():
        assert path.parent == Path(mount["mountPath"])
        assert path.name in secret["stringData"]
    # Secrets never travel as plain env values.
    assert not [e for e in SIDECAR_C["env"] if "SECRET" in e["name"] and not e["name"].endswith("_FILE")]


def test_deploy_config_with_the_env_overrides_and_secret_files_is_valid(tmp_path: Path) -> None:
    secrets = {"client-secret": CLIENT_SECRET, "cookie-secret": COOKIE_SECRET}
    settings = settings_with_env(SIDECAR_C["env"], tmp_path, secrets)
    assert settings.oidc.client_secret is not None
    assert settings.oidc.client_secret.get_secret_value() == CLIENT_SECRET
    assert settings.cookies.secret is not None
    assert settings.cookies.secret.get_secret_value() == COOKIE_SECRET
    assert settings.listen.port == container_port(SIDECAR_C, "http")
    assert settings.admin.port == container_port(SIDECAR_C, "admin")


def test_placeholder_secret_refuses_to_start_rather_than_run_with_a_published_key(tmp_path: Path) -> None:
    placeholders = one(BASE, "Secret", "authsidecar-secrets")["stringData"]
    with pytest.raises(ConfigError) as caught:
        settings_with_env(SIDECAR_C["env"], tmp_path, placeholders)
    assert any(m.startswith("cookies.secret: must be at least 32 characters") for m in caught.value.messages)


def test_termination_grace_outlasts_the_prestop_pause_and_the_shutdown_grace() -> None:
    pause = int(SIDECAR_C["lifecycle"]["preStop"]["exec"]["command"][-1])
    settings = parse_settings(DEPLOY_CONFIG, {"AUTHSIDECAR_COOKIES__SECRET": COOKIE_SECRET})
    # WebSockets get the grace period first, then in-flight requests may get it again.
    assert POD["terminationGracePeriodSeconds"] > pause + 2 * settings.listen.shutdown_grace


# --- security and resources ---------------------------------------------------------------------------


def test_pod_security_context_is_non_root_with_the_image_uid_and_runtime_default_seccomp() -> None:
    ctx = POD["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == IMAGE_UID
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert POD["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", [APP, SIDECAR])
def test_container_security_context_is_locked_down(name: str) -> None:
    ctx = CONTAINERS[name]["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["runAsNonRoot"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in ctx or ctx["privileged"] is False


def test_sidecar_runs_as_the_image_user() -> None:
    assert SIDECAR_C["securityContext"]["runAsUser"] == IMAGE_UID


@pytest.mark.parametrize("name", [APP, SIDECAR])
def test_container_has_requests_and_a_memory_limit(name: str) -> None:
    resources = CONTAINERS[name]["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_images_are_tag_pinned_and_the_sidecar_tag_is_this_version() -> None:
    images = {i["name"]: i["newTag"] for i in load_kustomization(K8S)["images"]}
    assert images["ghcr.io/example/authsidecar"] == __version__
    for container in POD["containers"]:
        name, _, tag = container["image"].partition(":")
        assert tag
        assert tag != "latest"
        assert tag == images[name]


# --- Prometheus Operator objects (CRDs: not in the Kubernetes schemas, checked for shape here) ---------

MONITORING_DOCS = [d for d in WITH_COMPONENTS if d["apiVersion"] == CRD_GROUP]


def _metadata_ok(doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}


def test_service_monitor_scrapes_the_metrics_port_of_the_metrics_service() -> None:
    monitor = one(MONITORING_DOCS, "ServiceMonitor")
    _metadata_ok(monitor)
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    selected = [s for s in objects(WITH_COMPONENTS, "Service")
                if _selects(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    assert [s["metadata"]["name"] for s in selected] == ["app-metrics"]
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] in admin_routes()
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
        timeout, interval = (int(endpoint[k][:-1]) for k in ("scrapeTimeout", "interval"))
        assert timeout <= interval


RULES = [r for g in one(MONITORING_DOCS, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def _metric_families() -> dict[str, tuple[str, ...]]:
    """Every sample name authsidecar exports, with the metric's label names."""
    metrics = Metrics(CollectorRegistry())
    out: dict[str, tuple[str, ...]] = {}
    for attr in vars(metrics).values():
        name = getattr(attr, "_name", None)
        kind = getattr(attr, "_type", None)
        if not name:
            continue
        labels = tuple(getattr(attr, "_labelnames", ()))
        suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"],
                    "info": ["_info"]}[kind]
        for suffix in suffixes:
            out[name + suffix] = labels + (("le",) if suffix == "_bucket" else ())
    return out


def test_prometheus_rule_groups_have_the_prometheus_shape() -> None:
    rule = one(MONITORING_DOCS, "PrometheusRule")
    _metadata_ok(rule)
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names))
    alerts = [r["alert"] for r in RULES]
    assert len(alerts) == len(set(alerts))
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]+", a) for a in alerts)
    for r in RULES:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert isinstance(r["expr"], str)
        assert r["expr"].strip()
        assert r["expr"].count("(") == r["expr"].count(")")
        assert re.fullmatch(r"\d+[smh]", r["for"])
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        assert r["annotations"]["summary"]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_alert_expressions_use_metrics_and_labels_authsidecar_exports(rule: dict[str, Any]) -> None:
    families = _metric_families()
    used = re.findall(r"\b(authsidecar_[a-z_]+)(\{[^}]*\})?", rule["expr"])
    assert used
    for name, selector in used:
        assert name in families, f"{name} is not exported"
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector):
            assert label in families[name], f"{name} has no label {label}"


def test_jwks_staleness_alert_fires_after_two_refresh_intervals() -> None:
    rule = next(r for r in RULES if "jwks_last_success" in r["expr"])
    threshold = re.search(r">\s*2\s*\*\s*(\d+)", rule["expr"])
    assert threshold is not None
    assert float(threshold.group(1)) == DEPLOY_CONFIG["oidc"]["jwks_refresh_interval"]


@pytest.mark.parametrize(
    ("alert", "metric"),
    [("AuthsidecarJwksRefreshStale", "authsidecar_jwks_last_success_timestamp_seconds"),
     ("AuthsidecarAuthFailuresHigh", "authsidecar_auth_decisions_total"),
     ("AuthsidecarUpstreamErrors", "authsidecar_upstream_errors_total")],
)
def test_the_documented_alerts_exist(alert: str, metric: str) -> None:
    assert metric in next(r for r in RULES if r["alert"] == alert)["expr"]
