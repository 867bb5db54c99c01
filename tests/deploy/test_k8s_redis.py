"""deploy/k8s redis-store and server-sessions components, and the demo overlay deploy/examples/redis-demo.

The components must render to schema-valid objects whose environment, Secret keys and mounts make a
valid fleet configuration; the demo Redis (example overlay only) must be locked down and must really
accept the password the sidecar reads.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis

from sidecar.config import Settings
from sidecar.config_load import ENV_PREFIX, parse_settings
from sidecar.errors import ConfigError
from tests.redis_server import REDIS_SERVER, RedisServer, free_port

from ._kustomize import apply_json_patch, doc_id, one, render
from ._support import (
    COOKIE_SECRET,
    DEMO,
    K8S,
    NATIVE,
    REDIS_STORE,
    SERVER_SESSIONS,
    config_key_for_env,
    load_yaml,
)

# Shared with the base (test_k8s.py, in its tables): every kustomization's files exist and are used,
# and kubectl kustomize renders what these tests read (redis-store, store-sessions-native, redis-demo).
SCHEMA_VERSIONS = ["1.27", kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())]
DEPLOY_CONFIG = load_yaml(K8S / "authsidecar.yaml")
REDIS_SECRET = "authsidecar-redis"

WITH_STORE = render(K8S, [REDIS_STORE])
WITH_SESSIONS = render(K8S, [REDIS_STORE, SERVER_SESSIONS])
DEMO_DOCS = render(DEMO)


def pod_of(docs: list[dict[str, Any]], name: str = "app") -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def sidecar_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = pod_of(docs)
    (sidecar,) = [c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == "authsidecar"]
    return sidecar


def secret_values(docs: list[dict[str, Any]],
                  overrides: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """Every Secret's keys as the pod would see them (``overrides``: Secret name -> keys replaced)."""
    out = {d["metadata"]["name"]: dict(d.get("stringData", {})) for d in docs if d["kind"] == "Secret"}
    for name, values in (overrides or {}).items():
        out[name] = {**out.get(name, {}), **values}
    return out


def container_environ(docs: list[dict[str, Any]], secrets: dict[str, dict[str, str]],
                      tmp_path: Path) -> dict[str, str]:
    """The sidecar's environment as the kubelet builds it: ``secretKeyRef`` resolved (an optional
    missing key leaves the variable unset), and each ``*_FILE`` pointed at a temporary copy of the
    file its Secret volume would hold at that path."""
    pod, sidecar = pod_of(docs), sidecar_of(docs)
    mounts = {Path(m["mountPath"]): m["name"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    environ: dict[str, str] = {}
    for var in sidecar["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            if ref["key"] not in secrets[ref["name"]]:
                assert ref.get("optional") is True, f"{var['name']}: {ref['name']} has no key {ref['key']}"
                continue
            environ[var["name"]] = secrets[ref["name"]][ref["key"]]
            continue
        value = var["value"]
        if var["name"].endswith("_FILE"):
            path = Path(value)
            secret_name = volumes[mounts[path.parent]]["secret"]["secretName"]
            copy = tmp_path / secret_name / path.name
            copy.parent.mkdir(exist_ok=True)
            copy.write_text(secrets[secret_name][path.name] + "\n", encoding="utf-8")
            value = str(copy)
        environ[var["name"]] = value
    return environ


def settings_of(docs: list[dict[str, Any]], tmp_path: Path, redis_secret: dict[str, str] | None = None
                ) -> Settings:
    """The deploy config with the sidecar's environment; the base's placeholder cookie secret replaced,
    the Redis Secret's keys by ``redis_secret`` when given."""
    overrides = {"authsidecar-secrets": {"cookie-secret": COOKIE_SECRET}}
    if redis_secret is not None:
        overrides[REDIS_SECRET] = redis_secret
    secrets = secret_values(docs, overrides)
    return parse_settings(DEPLOY_CONFIG, container_environ(docs, secrets, tmp_path))


ELASTICACHE = {"url": "rediss://master.app-sessions.abc123.euw1.cache.amazonaws.com:6379/0",
               "password": "an-elasticache-auth-token-of-32-characters"}


# --- kustomize ------------------------------------------------------------------------------------


def test_the_components_must_come_before_native_sidecar() -> None:
    # native-sidecar moves the container these patches edit; their `test` op refuses the other order.
    with pytest.raises((AssertionError, IndexError)):
        render(K8S, [NATIVE, REDIS_STORE])


def test_the_base_alone_still_runs_on_the_memory_store(tmp_path: Path) -> None:
    base = render(K8S)
    assert not [d for d in base if d["metadata"]["name"] == REDIS_SECRET]
    settings = settings_of(base, tmp_path)
    assert settings.store.backend == "memory"
    assert settings.sessions.mode == "cookie"


# --- schemas --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("doc", DEMO_DOCS, ids=doc_id)
def test_demo_overlay_manifest_is_valid_for_kubernetes(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_component_objects_are_valid_for_kubernetes(version: str) -> None:
    for doc in (one(WITH_SESSIONS, "Deployment", "app"), one(WITH_SESSIONS, "Secret", REDIS_SECRET)):
        kubernetes_validate.validate(doc, version, strict=True)


# --- the redis-store component: env, Secret, mounts ---------------------------------------------------


def test_every_variable_the_components_add_names_a_config_key() -> None:
    names = [e["name"] for e in sidecar_of(WITH_SESSIONS)["env"] if e["name"].startswith(ENV_PREFIX)]
    assert {"AUTHSIDECAR_STORE__BACKEND", "AUTHSIDECAR_STORE__REDIS__URL",
            "AUTHSIDECAR_STORE__REDIS__PASSWORD_FILE", "AUTHSIDECAR_SESSIONS__MODE"} <= set(names)
    assert len(names) == len(set(names))
    for name in names:
        config_key_for_env(name)


def test_managed_redis_settings_come_from_the_secret(tmp_path: Path) -> None:
    settings = settings_of(WITH_STORE, tmp_path, ELASTICACHE)
    assert settings.store.backend == "redis"
    assert settings.store.redis is not None
    assert settings.store.redis.url == ELASTICACHE["url"]
    assert settings.store.redis.password is not None
    assert settings.store.redis.password.get_secret_value() == ELASTICACHE["password"]
    assert settings.store.redis.username is None  # no `username` key: the optional variable is unset
    assert settings.store.redis.key_prefix == "app:"
    assert settings.sessions.mode == "cookie"


def test_an_acl_user_comes_from_the_optional_username_key(tmp_path: Path) -> None:
    settings = settings_of(WITH_STORE, tmp_path, {**ELASTICACHE, "username": "authsidecar"})
    assert settings.store.redis is not None
    assert settings.store.redis.username == "authsidecar"


def test_server_sessions_component_turns_on_server_sessions(tmp_path: Path) -> None:
    settings = settings_of(WITH_SESSIONS, tmp_path, ELASTICACHE)
    assert settings.sessions.mode == "server"
    assert settings.store.backend == "redis"


def test_server_sessions_without_the_redis_store_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of(render(K8S, [SERVER_SESSIONS]), tmp_path)
    want = "sessions.mode: server needs store.backend: redis"
    assert any(m.startswith(want) for m in caught.value.messages)


def test_placeholder_redis_secret_refuses_to_start_rather_than_wait_for_no_redis(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of(WITH_STORE, tmp_path)
    want = "store.redis.url: must be a redis:// or rediss:// URL"
    assert any(m.startswith(want) for m in caught.value.messages)


def test_credentials_in_the_secret_url_are_refused(tmp_path: Path) -> None:
    leaky = {**ELASTICACHE, "url": "rediss://authsidecar:hunter2@cache.example.internal:6379/0"}
    with pytest.raises(ConfigError) as caught:
        settings_of(WITH_STORE, tmp_path, leaky)
    assert "hunter2" not in " ".join(caught.value.messages)


def test_the_password_is_a_read_only_file_of_the_redis_secret_only_the_sidecar_mounts() -> None:
    pod, sidecar = pod_of(WITH_STORE), sidecar_of(WITH_STORE)
    env = {e["name"]: e for e in sidecar["env"]}
    assert "AUTHSIDECAR_STORE__REDIS__PASSWORD" not in env  # never a plain variable
    password = Path(env["AUTHSIDECAR_STORE__REDIS__PASSWORD_FILE"]["value"])
    (mount,) = [m for m in sidecar["volumeMounts"] if Path(m["mountPath"]) == password.parent]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == REDIS_SECRET
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # nobody but the owner and the fsGroup
    assert password.name in one(WITH_STORE, "Secret", REDIS_SECRET)["stringData"]
    others = [c for c in pod["containers"] if c["name"] != "authsidecar"]
    assert not [m for c in others for m in c.get("volumeMounts", []) if m["name"] == mount["name"]]


def test_the_components_bring_no_redis_server() -> None:
    # Production points at ElastiCache or Memorystore: a Redis inside the cluster is the demo's.
    assert {doc_id(d) for d in WITH_SESSIONS} - {doc_id(d) for d in render(K8S)} == {f"Secret/{REDIS_SECRET}"}


# --- the demo overlay ----------------------------------------------------------------------------------

DEMO_POD = pod_of(DEMO_DOCS, "authsidecar-redis")
(DEMO_REDIS,) = DEMO_POD["containers"]


def test_demo_sidecar_points_at_the_demo_redis_service(tmp_path: Path) -> None:
    settings = settings_of(DEMO_DOCS, tmp_path)
    assert settings.sessions.mode == "server"
    assert settings.store.redis is not None
    host_port = settings.store.redis.url.split("//", 1)[1].split("/", 1)[0]
    service = one(DEMO_DOCS, "Service", "authsidecar-redis")
    (port,) = service["spec"]["ports"]
    assert host_port == f"{service['metadata']['name']}:{port['port']}"
    labels = one(DEMO_DOCS, "Deployment", "authsidecar-redis")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert port["targetPort"] in {p["name"] for p in DEMO_REDIS["ports"]}


def test_demo_redis_is_non_root_on_a_read_only_root_with_resources() -> None:
    assert DEMO_POD["securityContext"]["runAsNonRoot"] is True
    assert DEMO_POD["securityContext"]["runAsUser"] != 0
    assert DEMO_POD["automountServiceAccountToken"] is False
    ctx = DEMO_REDIS["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"cpu", "memory"} <= DEMO_REDIS["resources"]["requests"].keys()
    assert "memory" in DEMO_REDIS["resources"]["limits"]
    _, _, tag = DEMO_REDIS["image"].partition(":")
    assert tag
    assert tag != "latest"


def test_demo_redis_reads_the_password_the_sidecar_reads() -> None:
    env = {e["name"]: e for e in DEMO_REDIS["env"]}
    args = DEMO_REDIS["args"]
    variable = args[args.index("--requirepass") + 1].removeprefix("$(").removesuffix(")")
    assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": REDIS_SECRET, "key": "password"}


def test_only_the_app_pods_reach_the_demo_redis() -> None:
    policy = one(DEMO_DOCS, "NetworkPolicy", "authsidecar-redis")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "authsidecar-redis"}
    (rule,) = policy["ingress"]
    app_labels = one(DEMO_DOCS, "Deployment", "app")["spec"]["template"]["metadata"]["labels"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= app_labels.items()
    assert [p["port"] for p in rule["ports"]] == [DEMO_REDIS["ports"][0]["containerPort"]]


@pytest.fixture
def demo_redis(tmp_path: Path) -> Any:
    """The demo Deployment's redis-server arguments run by Debian's redis-server, on loopback."""
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is missing: `apt-get install redis-server` (scripts/test.sh does)")
    password = secret_values(DEMO_DOCS)[REDIS_SECRET]["password"]
    args = [a.replace("$(REDIS_PASSWORD)", password) for a in DEMO_REDIS["args"]]
    args[args.index("--dir") + 1] = str(tmp_path)
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - Debian's redis-server, the manifest's arguments
        [REDIS_SERVER, *args, "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    try:
        for _ in range(500):  # until it listens; an exit means it refused the arguments
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            try:
                process.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"redis-server refused the demo's arguments (exit {process.returncode})")
        yield server, password
    finally:
        server.stop()


def test_demo_redis_arguments_start_a_server_that_demands_the_secret_password(demo_redis: Any) -> None:
    server, password = demo_redis
    with redis.Redis(host="127.0.0.1", port=server.port, password=password) as authed:
        assert authed.ping() is True
        assert authed.config_get("save") == {"save": ""}
        assert authed.config_get("appendonly") == {"appendonly": "no"}
    with redis.Redis(host="127.0.0.1", port=server.port) as anonymous, \
            pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_the_native_sidecar_form_keeps_the_redis_settings() -> None:
    docs = render(K8S, [REDIS_STORE, SERVER_SESSIONS, NATIVE])
    init = sidecar_of(docs)
    assert init["restartPolicy"] == "Always"
    assert [e["name"] for e in init["env"]] == [e["name"] for e in sidecar_of(WITH_SESSIONS)["env"]]
    kubernetes_validate.validate(one(docs, "Deployment", "app"), SCHEMA_VERSIONS[-1], strict=True)
    # The patches edit the classic container by index; a base reordered under them is refused.
    containers = "/spec/template/spec/containers"
    move = {"op": "move", "from": f"{containers}/1", "path": f"{containers}/0"}
    swapped = apply_json_patch(one(render(K8S), "Deployment", "app"), [move])
    with pytest.raises(AssertionError, match="test failed"):
        apply_json_patch(swapped, load_yaml(REDIS_STORE / "patch.yaml"))
