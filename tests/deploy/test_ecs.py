"""deploy/ecs: a RegisterTaskDefinition input that ECS accepts and that yields a valid config."""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.validate import ParamValidator
from pytest_aiohttp import AiohttpServer

from sidecar import __version__, cli
from sidecar.config_load import ENV_PREFIX

from . import _dockerfile as df
from ._ecs import BASE_TASK, INPUT_SHAPE, SECRET_ARN, TASKS, EcsTask, enum_errors
from ._support import (
    CLIENT_SECRET,
    COOKIE_SECRET,
    DOCKERFILE,
    EXAMPLE,
    admin_app,
    admin_routes,
    config_key_for_env,
    probe_url,
    run_probe,
)

TASK: dict[str, Any] = BASE_TASK.task
CONTAINERS = {c["name"]: c for c in TASK["containerDefinitions"]}
SIDECAR, APP = CONTAINERS["authsidecar"], CONTAINERS["app"]
FINAL = df.parse(DOCKERFILE).final
# Fargate's task-size table: cpu units -> allowed memory (MiB).
FARGATE_SIZES = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4097, 1024)),
    1024: set(range(2048, 8193, 1024)),
    2048: set(range(4096, 16385, 1024)),
    4096: set(range(8192, 30721, 1024)),
}
sidecar_settings = BASE_TASK.settings


# --- shape ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ecs", TASKS)
def test_task_definition_is_a_valid_register_task_definition_request(ecs: EcsTask) -> None:
    report = ParamValidator().validate(ecs.task, INPUT_SHAPE)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize("ecs", TASKS)
def test_every_enumerated_field_holds_an_allowed_value(ecs: EcsTask) -> None:
    assert enum_errors(ecs.task, INPUT_SHAPE, "task") == []


def test_task_is_a_fargate_awsvpc_task_of_a_valid_size() -> None:
    assert TASK["networkMode"] == "awsvpc"
    assert TASK["requiresCompatibilities"] == ["FARGATE"]
    cpu, memory = int(TASK["cpu"]), int(TASK["memory"])
    assert memory in FARGATE_SIZES[cpu]
    assert sum(c.get("cpu", 0) for c in CONTAINERS.values()) <= cpu
    assert sum(c.get("memory", c.get("memoryReservation", 0)) for c in CONTAINERS.values()) <= memory
    # Pulling secrets and writing to awslogs are done with the execution role.
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", TASK["executionRoleArn"])


def test_both_containers_are_essential_and_images_are_tag_pinned() -> None:
    assert set(CONTAINERS) == {"app", "authsidecar"}
    for container in CONTAINERS.values():
        assert container["essential"] is True
        name, _, tag = container["image"].rpartition(":")
        assert name
        assert tag
        assert tag != "latest"
    assert SIDECAR["image"].endswith(f":{__version__}")


# --- config ----------------------------------------------------------------------------------------


def test_sidecar_command_is_serve_without_a_config_file() -> None:
    assert SIDECAR["command"] == ["serve"]
    assert FINAL.one("ENTRYPOINT").exec_form() == ["authsidecar"]


@pytest.mark.parametrize("ecs", TASKS)
def test_every_authsidecar_variable_names_a_config_key(ecs: EcsTask) -> None:
    names = [e["name"] for e in ecs.sidecar["environment"]] + [s["name"] for s in ecs.sidecar["secrets"]]
    assert all(n.startswith(ENV_PREFIX) for n in names)
    assert len(names) == len(set(names))
    for name in names:
        config_key_for_env(name)


def test_environment_and_secrets_make_a_valid_configuration() -> None:
    settings = sidecar_settings()
    assert settings.oidc.client_secret is not None
    assert settings.oidc.client_secret.get_secret_value() == CLIENT_SECRET
    assert settings.cookies.secret is not None
    assert settings.cookies.secret.get_secret_value() == COOKIE_SECRET
    assert settings.oidc.is_cognito
    assert settings.oidc.cognito_domain
    assert not settings.dev_mode
    assert settings.cookies.secure


@pytest.mark.parametrize("ecs", TASKS)
def test_check_config_accepts_the_task_environment_and_prints_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ecs: EcsTask
) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in ecs.environ().items():
        monkeypatch.setenv(name, value)
    assert cli.main(["check-config", *ecs.sidecar["command"][1:]]) == 0
    out = capsys.readouterr().out
    assert ecs.masked
    for secret in ecs.masked:
        assert secret not in out
    effective = json.loads(out)
    for section, values in ecs.shows.items():
        assert {key: effective[section][key] for key in values} == values


def test_secrets_come_from_secrets_manager_or_ssm_and_never_from_plain_environment() -> None:
    assert {s["name"] for s in SIDECAR["secrets"]} == set(BASE_TASK.secret_values)
    for secret in SIDECAR["secrets"]:
        assert SECRET_ARN.match(secret["valueFrom"]), secret["valueFrom"]
    plain = {e["name"] for e in SIDECAR["environment"]}
    assert not [n for n in plain if "SECRET" in n]
    assert "secrets" not in APP or not APP["secrets"]


def test_arns_and_logs_agree_on_region_and_account() -> None:
    regions = {c["logConfiguration"]["options"]["awslogs-region"] for c in CONTAINERS.values()}
    arns = [s["valueFrom"] for s in SIDECAR["secrets"]]
    assert {a.split(":")[3] for a in arns} == regions
    accounts = {a.split(":")[4] for a in arns} | {TASK["executionRoleArn"].split(":")[4]}
    assert len(accounts) == 1


# --- ports and order ---------------------------------------------------------------------------------


def test_only_the_sidecar_maps_a_port_and_it_is_the_listen_port() -> None:
    assert not APP.get("portMappings")
    assert [p["containerPort"] for p in SIDECAR["portMappings"]] == [sidecar_settings().listen.port]
    assert all("hostPort" not in p or p["hostPort"] == p["containerPort"] for p in SIDECAR["portMappings"])


def test_sidecar_forwards_to_the_app_on_loopback() -> None:
    app_env = {e["name"]: e["value"] for e in APP["environment"]}
    upstream = urlsplit(sidecar_settings().upstream.url)
    assert upstream.hostname == app_env["HOST"] == "127.0.0.1"
    assert upstream.port == int(app_env["PORT"])


def test_dependencies_are_acyclic_and_reference_real_containers() -> None:
    for container in CONTAINERS.values():
        for dep in container.get("dependsOn", []):
            assert dep["containerName"] in CONTAINERS
            assert dep["containerName"] != container["name"]
            if dep["condition"] == "HEALTHY":
                assert "healthCheck" in CONTAINERS[dep["containerName"]], "HEALTHY needs a healthCheck"
            assert dep["condition"] not in {"COMPLETE", "SUCCESS"}, "both containers are long-running"
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle {(*path, name)}"
        for dep in CONTAINERS[name].get("dependsOn", []):
            visit(dep["containerName"], (*path, name))
        seen.add(name)

    for name in CONTAINERS:
        visit(name, ())


def test_sidecar_starts_after_the_app_and_so_stops_before_it() -> None:
    # ECS reverses dependencies at shutdown: the sidecar drains while the app still answers.
    assert {d["containerName"] for d in SIDECAR["dependsOn"]} == {"app"}
    assert not APP.get("dependsOn")


def test_sidecar_stop_timeout_covers_its_shutdown_grace() -> None:
    # WebSockets get the grace period first, then in-flight requests may get it again.
    assert 2 * sidecar_settings().listen.shutdown_grace < SIDECAR["stopTimeout"] <= 120  # Fargate's max


# --- health check ---------------------------------------------------------------------------------------


def test_health_check_probes_healthz_on_the_admin_port_with_the_image_python() -> None:
    check = SIDECAR["healthCheck"]
    command = check["command"]
    assert command[0] == "CMD"
    assert command[2] == "-c"
    # The image's interpreter: /opt/venv is what the Dockerfile's final stage copies.
    assert command[1] == "/opt/venv/bin/python"
    assert df.copy_of(FINAL.one("COPY")).dest == "/opt/venv"
    url = urlsplit(probe_url(command))
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", sidecar_settings().admin.port, "/healthz")
    assert url.path in admin_routes()
    assert check["timeout"] < check["interval"]
    assert 5 <= check["interval"] <= 300
    assert 1 <= check["retries"] <= 10
    assert 0 <= check["startPeriod"] <= 300


@pytest.mark.parametrize(("path", "healthy"), [("/healthz", True), ("/readyz", False)],
                         ids=["healthz-200-healthy", "readyz-503-unhealthy"])
async def test_health_check_command_exit_code_follows_the_admin_answer(
    aiohttp_server: AiohttpServer, path: str, healthy: bool
) -> None:
    server = await aiohttp_server(admin_app(), host="127.0.0.1")
    code = await run_probe(SIDECAR["healthCheck"]["command"][1:], str(server.make_url("/")), path)
    assert (code == 0) is healthy


# --- hardening and logs ------------------------------------------------------------------------------------


def test_sidecar_runs_as_the_image_user_on_a_read_only_root() -> None:
    assert SIDECAR["user"] == FINAL.one("USER").args
    assert SIDECAR["user"].split(":")[0] != "0"
    for container in CONTAINERS.values():
        assert container["readonlyRootFilesystem"] is True
        assert container["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
        assert not container.get("privileged")


@pytest.mark.parametrize("name", ["app", "authsidecar"])
def test_each_container_logs_to_its_own_awslogs_stream(name: str) -> None:
    logs = CONTAINERS[name]["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    options = logs["options"]
    assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= options.keys()
    assert options["awslogs-stream-prefix"] == name


def test_example_and_task_agree_on_the_ports() -> None:
    settings = sidecar_settings()
    assert (settings.listen.port, settings.admin.port) == (EXAMPLE.listen.port, EXAMPLE.admin.port)
