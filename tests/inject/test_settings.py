"""The injector's configuration and its command: every problem one line naming its key, exit 2;
a valid file serves until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sidecar import cli
from sidecar.errors import ConfigError
from sidecar.inject.settings import InjectorSettings, load_injector_settings, parse_injector_settings

from ._support import IMAGE, INJECTOR_DIR, annotated, app_pod, review
from .conftest import Certs

SHIPPED = INJECTOR_DIR / "injector.yaml"
REQUIRED = {"listen": {"tls_cert": "/c", "tls_key": "/k"}, "sidecar": {"image": IMAGE}}


def with_(**sections: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(REQUIRED))
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


def test_the_shipped_config_lists_every_key_at_its_default() -> None:
    shipped = load_injector_settings(SHIPPED)
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    required = {"listen": {k: raw["listen"][k] for k in ("tls_cert", "tls_key")},
                "sidecar": {"image": raw["sidecar"]["image"]}}
    assert shipped == parse_injector_settings(required)

    def keys(model: type[Any], data: dict[str, Any], prefix: str = "") -> None:
        assert set(data) == set(model.model_fields), prefix
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, InjectorSettings.__mro__[1]):
                keys(sub, data[name], f"{prefix}{name}.")

    keys(InjectorSettings, raw)


BAD = [
    ("missing-required", {}, ["listen: required key is missing", "sidecar: required key is missing"]),
    ("unknown-key", with_(sidecar={"imag": "x"}), ["sidecar.imag: unknown key"]),
    ("latest-image", with_(sidecar={"image": "ghcr.io/example/authsidecar:latest"}),
     ["sidecar.image: must name a pinned image: a tag other than latest, or a digest"]),
    ("untagged-image", with_(sidecar={"image": "registry:5000/authsidecar"}), ["sidecar.image: must name"]),
    ("same-ports", with_(sidecar={"port": 9464}), ["sidecar.admin_port: must differ from port"]),
    ("bad-quantity", with_(sidecar={"resources": {"limits": {"memory": "lots", "gpu": "1"}}}),
     ["sidecar.resources.limits.memory: 'lots' is not a quantity",
      "sidecar.resources.limits.gpu: unknown resource"]),
    ("bad-names", with_(sidecar={"config_map": "Auth_Config", "secret": "x/y"}),
     ["sidecar.config_map: 'Auth_Config' is not a Kubernetes object name",
      "sidecar.secret: 'x/y' is not a Kubernetes object name"]),
    ("bad-secret-files",
     with_(sidecar={"secret_files": {"Cookies.Secret": "k", "oidc.client_secret": "../k"}}),
     ["sidecar.secret_files.Cookies.Secret: not a dotted config key",
      "sidecar.secret_files.oidc.client_secret: '../k' is not a Secret key"]),
    ("bad-policy", with_(sidecar={"image_pull_policy": "Sometimes"}), ["sidecar.image_pull_policy: Input"]),
    ("root-user", with_(sidecar={"run_as_user": 0}), ["sidecar.run_as_user: Input should be greater"]),
    ("bad-port", with_(listen={"port": 70000}), ["listen.port: Input should be less"]),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in BAD], ids=[i for i, *_ in BAD])
def test_every_problem_is_one_message_naming_its_key(data: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_injector_settings(data)
    messages = caught.value.messages
    assert len(messages) == len(expected), messages
    for message, start in zip(messages, expected, strict=True):
        assert message.startswith(start), messages


def test_inject_command_prints_each_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "injector.yaml"
    path.write_text(yaml.safe_dump(with_(sidecar={"image": "a:latest", "port": 0})), encoding="utf-8")
    assert cli.main(["inject", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["authsidecar: config error: sidecar.image: must name a pinned image: "
                     "a tag other than latest, or a digest",
                     "authsidecar: config error: sidecar.port: Input should be greater than or equal to 1"]


@pytest.mark.parametrize(("text", "message"),
                         [("listen: [", "line 1"), ("- a list", "top level must be a mapping")],
                         ids=["bad-yaml", "not-a-mapping"])
def test_an_unreadable_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "injector.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_injector_settings(path)
    (line,) = caught.value.messages
    assert line.startswith(f"config file {path}")
    assert message in line


async def test_the_inject_command_serves_and_stops_on_sigterm(tmp_path: Path, certs: Certs) -> None:
    tls = {"tls_cert": str(certs.cert), "tls_key": str(certs.key)}
    data = with_(listen={"host": "127.0.0.1", "port": 0, **tls}, admin={"host": "127.0.0.1", "port": 0})
    path = tmp_path / "injector.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSIDECAR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "inject", "--config", str(path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=30))
        assert line["event"] == "injector_listening"
        url = f"https://127.0.0.1:{line['port']}/mutate"
        async with aiohttp.ClientSession() as client, client.post(
                url, json=review(app_pod(annotated()), uid="u-1"), ssl=certs.trusting()) as resp:
            assert (await resp.json())["response"]["uid"] == "u-1"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
