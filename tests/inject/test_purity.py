"""The reviewer is pure: the modules that turn an AdmissionReview into a patch import no web
framework, no file or network I/O (the server does that around them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

INJECT = Path(__file__).resolve().parents[2] / "sidecar" / "inject"
PURE = ["settings", "annotations", "container", "patch", "review"]
IMPURE_ROOTS = {"aiohttp", "asyncio", "socket", "ssl", "subprocess", "os"}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    tree = ast.parse((INJECT / f"{module}.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    roots = {name.split(".")[0] for name in imported}
    assert roots & IMPURE_ROOTS == set()
    assert not {name for name in imported if name.startswith("sidecar.") and
                name.split(".")[-1] in {"server", "tls"}}
