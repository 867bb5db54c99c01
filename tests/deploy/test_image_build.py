"""The Dockerfile's builder steps, run here: context as COPY makes it, RUN commands as written.

No container engine is needed: the context is assembled from the builder stage's COPY lines
(filtered like .dockerignore), and its RUN commands run in a shell with /opt/venv and /wheels
mapped to temporary directories and ``python`` to this interpreter. The resulting venv must give a
working ``authsidecar`` (the image's ENTRYPOINT) that accepts the example config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar import __version__

from . import _dockerfile as df
from ._support import DOCKERFILE, EXAMPLE_CONFIG, REPO

DOCKER = df.parse(DOCKERFILE)
BUILDER = DOCKER.stage("builder")
FINAL = DOCKER.final


def _context(dest_root: Path) -> Path:
    """Copy what the builder's COPY lines copy into ``dest_root`` (its WORKDIR)."""
    workdir = dest_root / BUILDER.one("WORKDIR").args.lstrip("/")
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.pyd")
    for instruction in BUILDER.all("COPY"):
        copy = df.copy_of(instruction)
        target = workdir / copy.dest
        for source in copy.sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, target, ignore=ignore, dirs_exist_ok=True)
            else:
                (target if copy.dest.endswith("/") else target.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name if copy.dest.endswith("/") else target)
    return workdir


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSIDECAR_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_builder_steps_produce_a_venv_whose_authsidecar_runs(tmp_path: Path) -> None:
    workdir = _context(tmp_path / "ctx")
    venv, wheels = tmp_path / "opt-venv", tmp_path / "wheels"
    mapping = {"/opt/venv": str(venv), "/wheels": str(wheels)}
    build_env = _env(BUILDER.pairs("ENV"))
    for run in BUILDER.all("RUN"):
        for command in df.run_commands(run):
            for image_path, here in mapping.items():
                command = command.replace(image_path, here)
            if command.startswith("python "):
                command = f"{sys.executable} {command.removeprefix('python ')}"
            result = subprocess.run(  # noqa: S603 - the Dockerfile's own RUN commands
                ["/bin/sh", "-c", command], cwd=workdir, env=build_env,
                capture_output=True, text=True, timeout=240, check=False,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    assert [w.name for w in wheels.iterdir()] == [f"authsidecar-{__version__}-py3-none-any.whl"]
    final_env = FINAL.pairs("ENV")
    path = final_env["PATH"].replace("/opt/venv", str(venv)).replace("$PATH", os.environ["PATH"])
    run_env = _env({"PATH": path})
    entrypoint = FINAL.one("ENTRYPOINT").exec_form()
    assert shutil.which(entrypoint[0], path=run_env["PATH"]) == str(venv / "bin" / entrypoint[0])

    def authsidecar(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the image's ENTRYPOINT, from the built venv
            [*entrypoint, *args], cwd=tmp_path, env=run_env,
            capture_output=True, text=True, timeout=60, check=False,
        )

    version = authsidecar("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"authsidecar {__version__}"

    checked = authsidecar("check-config", "--config", str(EXAMPLE_CONFIG))
    assert checked.returncode == 0, checked.stderr
    effective = json.loads(checked.stdout)
    assert effective["listen"]["port"] == 8080
    assert effective["admin"]["port"] == 9464
    assert effective["cookies"]["secret"] == "**********"  # masked, never printed

    # The installed package is the wheel, not this checkout (no editable path leaking in).
    where = subprocess.run(  # noqa: S603 - the built venv's interpreter
        [str(venv / "bin" / "python"), "-c", "import sidecar; print(sidecar.__file__)"],
        cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert where.stdout.strip().startswith(str(venv))
    # What the image needs at run time and the package data ship in the wheel.
    assert (Path(where.stdout.strip()).parent / "py.typed").exists()
