"""The ECS task definitions under test (deploy/ecs): the base task and its fleet variant, each with
the secret values the ECS agent would resolve, and botocore's model of RegisterTaskDefinition."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.model import Shape

from sidecar.config import Settings
from sidecar.config_load import parse_settings

from ._support import CLIENT_SECRET, COOKIE_SECRET, ECS_TASK

INPUT_SHAPE = (
    botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
)
SECRET_ARN = re.compile(
    r"^arn:aws:(secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+"
    r"|ssm:[a-z0-9-]+:\d{12}:parameter/[\w/.-]+)$"
)
REDIS_URL = "rediss://master.app-sessions.abc123.euw1.cache.amazonaws.com:6379/0"
REDIS_PASSWORD = "an-elasticache-auth-token-of-32-characters"


def enum_errors(value: Any, shape: Shape, where: str) -> list[str]:
    """ParamValidator skips enums; walk the request against the model's enum lists."""
    errors = []
    if shape.type_name == "structure":
        for key, member in shape.members.items():
            if key in value:
                errors += enum_errors(value[key], member, f"{where}.{key}")
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            errors += enum_errors(item, shape.member, f"{where}[{i}]")
    elif shape.type_name == "map":
        for key, item in value.items():
            errors += enum_errors(item, shape.value, f"{where}.{key}")
    elif getattr(shape, "enum", None) and value not in shape.enum:
        errors.append(f"{where}: {value!r} not in {shape.enum}")
    return errors


@dataclass(frozen=True)
class EcsTask:
    """One task definition file and what the tests feed and expect of its sidecar."""

    path: Path
    # The test values the agent would put in the sidecar's environment for each `secrets` entry.
    secret_values: Mapping[str, str]
    # What `check-config` must print of the effective configuration (section -> key -> value).
    shows: Mapping[str, Mapping[str, Any]]
    task: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", json.loads(self.path.read_text(encoding="utf-8")))

    @property
    def sidecar(self) -> dict[str, Any]:
        sidecar: dict[str, Any] = next(c for c in self.task["containerDefinitions"]
                                       if c["name"] == "authsidecar")
        return sidecar

    @property
    def masked(self) -> list[str]:
        """The secret values check-config must never print (a Redis URL holds no credential)."""
        return [value for value in self.secret_values.values() if value != REDIS_URL]

    def environ(self) -> dict[str, str]:
        """The sidecar's environment as the ECS agent sets it, secrets resolved to test values."""
        environ = {e["name"]: e["value"] for e in self.sidecar["environment"]}
        environ.update({s["name"]: self.secret_values[s["name"]] for s in self.sidecar["secrets"]})
        return environ

    def settings(self) -> Settings:
        # `command: ["serve"]` passes no --config: the environment is the whole configuration.
        return parse_settings({}, self.environ())


BASE_SECRETS = {
    "AUTHSIDECAR_OIDC__CLIENT_SECRET": CLIENT_SECRET,
    "AUTHSIDECAR_COOKIES__SECRET": COOKIE_SECRET,
}
BASE_TASK = EcsTask(ECS_TASK, BASE_SECRETS, {"upstream": {"url": "http://127.0.0.1:3000"}})
REDIS_TASK = EcsTask(
    ECS_TASK.with_name("task-definition-redis.json"),
    {**BASE_SECRETS, "AUTHSIDECAR_STORE__REDIS__URL": REDIS_URL,
     "AUTHSIDECAR_STORE__REDIS__PASSWORD": REDIS_PASSWORD},
    {"upstream": {"url": "http://127.0.0.1:3000"}, "store": {"backend": "redis"}},
)
# Both tasks, for the checks that hold for each.
TASKS = [pytest.param(BASE_TASK, id="task-definition"), pytest.param(REDIS_TASK, id="task-definition-redis")]
