"""Imports run one way: cli → app → {proxy, admin, server} → auth → oidc → {config, observability} → leaves.

The test reads every module of ``sidecar/`` (lazy imports inside functions included, ``if
TYPE_CHECKING:`` blocks excluded) and fails on an import that runs back up a layer or on any cycle
outside ``sidecar/dev/`` (the development provider and demo, which sit at the command line's level).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sidecar"

# Lower layers never import higher ones; within one layer, only modules of the same package
# import each other (and never in a loop).
LAYERS: dict[str, int] = {
    "sidecar": 0, "sidecar.__main__": 10, "sidecar.identity": 0, "sidecar.errors": 0, "sidecar.keys": 1,
    "sidecar.origin": 0, "sidecar.config_checks": 1, "sidecar.config": 2, "sidecar.config_load": 3,
    "sidecar.observability": 1,
    "sidecar.oidc": 3, "sidecar.store": 3, "sidecar.auth": 4, "sidecar.proxy": 5, "sidecar.admin": 5,
    "sidecar.server": 6, "sidecar.app": 7, "sidecar.supervisor": 7, "sidecar.dev": 8, "sidecar.cli": 9,
    "sidecar.inject": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[str, int]:
    """The layer entry that owns ``module`` (its longest prefix in LAYERS)."""
    parts = module.split(".")
    # Down to a package of sidecar (sidecar.auth, ...); the top-level modules are each listed.
    for end in range(len(parts), 1, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return prefix, LAYERS[prefix]
    if module == "sidecar":
        return module, LAYERS[module]
    raise AssertionError(f"{module}: add it to LAYERS in {__file__}")


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> Iterator[str]:
    """Every ``sidecar`` module ``path`` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            skip.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "sidecar")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sidecar":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists()
                yield candidate if is_module else node.module


def graph() -> dict[str, set[str]]:
    return {
        module_name(path): set(imports_of(path)) - {module_name(path)}
        for path in sorted(PACKAGE.rglob("*.py"))
    }


GRAPH = graph()
EDGES = sorted((src, dst) for src, targets in GRAPH.items() for dst in targets)


@pytest.mark.parametrize(("src", "dst"), EDGES, ids=[f"{s}->{d}" for s, d in EDGES])
def test_every_import_points_down_a_layer_or_stays_in_its_package(src: str, dst: str) -> None:
    (src_owner, src_layer), (dst_owner, dst_layer) = layer_of(src), layer_of(dst)
    if src_owner == dst_owner:
        return
    assert dst_layer < src_layer, (
        f"{src} (layer {src_layer}) imports {dst} (layer {dst_layer}): imports run "
        "cli → app → {proxy, admin, server} → auth → oidc → {config, observability} → leaves"
    )


def test_no_module_imports_itself_back_through_a_cycle_outside_dev() -> None:
    cycles = []
    for start in GRAPH:
        if start.startswith("sidecar.dev"):
            continue
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in GRAPH.get(node, ()):
                if nxt == start:
                    cycles.append(" → ".join((*path, start)))
                elif nxt not in seen and not nxt.startswith("sidecar.dev"):
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert cycles == []


def test_pure_modules_never_import_the_web_framework() -> None:
    pure = ["sidecar.identity", "sidecar.errors", "sidecar.config", "sidecar.auth.pkce",
            "sidecar.auth.csrf", "sidecar.auth.return_to", "sidecar.auth.cookies", "sidecar.proxy.rules",
            "sidecar.proxy.cors", "sidecar.proxy.headers"]
    offenders = []
    for module in pure:
        path = PACKAGE.parent / Path(*module.split("."))
        source = path.with_suffix(".py").read_text(encoding="utf-8")
        tree = ast.parse(source)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [f"{node.module}"] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n == "aiohttp.web" or n.startswith("aiohttp.web") for n in names) or (
                isinstance(node, ast.ImportFrom) and node.module == "aiohttp"
                and any(a.name == "web" for a in node.names)
            ):
                offenders.append(module)
    assert offenders == []


def test_the_map_knows_every_module() -> None:
    for module in GRAPH:
        layer_of(module)
