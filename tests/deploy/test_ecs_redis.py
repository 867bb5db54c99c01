"""deploy/ecs/task-definition-redis.json: the fleet variant (Redis store, server sessions) of the task.

The same task as task-definition.json plus the store: the Redis URL and password from one Secrets
Manager secret (JSON keys), checked against botocore's ECS model and parsed into a configuration.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ._ecs import BASE_TASK, REDIS_PASSWORD, REDIS_TASK, REDIS_URL, SECRET_ARN

# Shared with the base task (test_ecs.py, parametrized over both): a valid RegisterTaskDefinition
# request with allowed enum values, every variable naming a config key, check-config accepting the
# environment without printing a secret.
TASK: dict[str, Any] = REDIS_TASK.task
BASE: dict[str, Any] = BASE_TASK.task
SIDECAR = REDIS_TASK.sidecar
ADDED_ENV = {"AUTHSIDECAR_STORE__BACKEND", "AUTHSIDECAR_STORE__REDIS__KEY_PREFIX",
             "AUTHSIDECAR_SESSIONS__MODE"}
ADDED_SECRETS = {"AUTHSIDECAR_STORE__REDIS__URL", "AUTHSIDECAR_STORE__REDIS__PASSWORD"}
# A JSON key of a Secrets Manager secret: <secret arn>:<json-key>:<version-stage>:<version-id>.
JSON_KEY_ARN = re.compile(r"^(arn:aws:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+):([\w.-]+)::$")


def test_it_is_the_base_task_plus_the_store_settings_and_nothing_else() -> None:
    # Everything else (ports, health check, order, hardening, logs) is the base task's, so its tests
    # hold here too; a change to the base must be made to this variant as well.
    def without_store(task: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(task)
        sidecar = next(c for c in out["containerDefinitions"] if c["name"] == "authsidecar")
        sidecar["environment"] = [e for e in sidecar["environment"] if e["name"] not in ADDED_ENV]
        sidecar["secrets"] = [s for s in sidecar["secrets"] if s["name"] not in ADDED_SECRETS]
        return out

    assert without_store(TASK) == BASE
    names = {e["name"] for e in SIDECAR["environment"]} | {s["name"] for s in SIDECAR["secrets"]}
    assert names >= ADDED_ENV | ADDED_SECRETS


def test_environment_and_secrets_make_a_fleet_configuration() -> None:
    settings = REDIS_TASK.settings()
    assert settings.store.backend == "redis"
    assert settings.store.redis is not None
    assert settings.store.redis.url == REDIS_URL
    assert settings.store.redis.password is not None
    assert settings.store.redis.password.get_secret_value() == REDIS_PASSWORD
    assert settings.store.redis.key_prefix == "app:"
    assert settings.sessions.mode == "server"
    assert settings.cookies.secure


def test_redis_url_and_password_come_from_one_secrets_manager_secret_never_the_plain_environment() -> None:
    refs = {s["name"]: s["valueFrom"] for s in SIDECAR["secrets"] if s["name"] in ADDED_SECRETS}
    parsed = {name: JSON_KEY_ARN.match(arn) for name, arn in refs.items()}
    assert all(parsed.values()), refs
    assert len({m.group(1) for m in parsed.values() if m}) == 1
    assert {name: m.group(2) for name, m in parsed.items() if m} == {
        "AUTHSIDECAR_STORE__REDIS__URL": "url", "AUTHSIDECAR_STORE__REDIS__PASSWORD": "password"}
    # The secret itself is named like the base task's secrets, in the same region and account.
    base_arns = [s["valueFrom"] for s in SIDECAR["secrets"] if s["name"] not in ADDED_SECRETS]
    for match in parsed.values():
        assert match is not None
        assert SECRET_ARN.match(match.group(1))
        assert match.group(1).split(":")[3:5] == base_arns[0].split(":")[3:5]
    plain = {e["name"] for e in SIDECAR["environment"]}
    assert not plain & ADDED_SECRETS
    assert not [n for n in plain if "PASSWORD" in n or (n.endswith("__URL") and "REDIS" in n)]
