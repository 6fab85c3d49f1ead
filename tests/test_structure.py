"""The house rules, read from the code's own imports (ast): data flows one way, floor by floor;
no module takes another's `_private` names; no import cycles; the interfaces (app/) and the
benchmarks use only the names each package declares in its front door (`__all__`); the CLI
starts without torch, faiss or ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["util", "descriptors", "indexing", "matching", "pipelines", "app", "benchmarks"]
"""Ground floor first: a module may import its own floor and the floors below it."""
FRONT_DOOR_ONLY = ("app", "benchmarks")


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "copytrace." + ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_name(p): p for floor in FLOORS for p in (ROOT / floor).rglob("*.py")
            if p.name != "__main__.py"}


@cache
def packages() -> set[str]:
    return {m for m, p in modules().items() if p.name == "__init__.py"}


@cache
def exports(package: str) -> dict[str, str]:
    """A front door's public names -> the module defining each (its `_EXPORTS` literal)."""
    tree = ast.parse(modules()[package].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_EXPORTS":
            return {k: f"{package}.{v.split(':')[0]}" for k, v in ast.literal_eval(node.value).items()}
    return {}


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every copytrace import, at any depth."""
    out = []
    for node in ast.walk(ast.parse(modules()[module].read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("copytrace.")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("copytrace."):
            out += [(node.module, a.name, node.lineno) for a in node.names]
    return out


def _target(module: str, name: str | None) -> str:
    """The module an import really loads: a submodule, or the module behind a lazy name."""
    if name and f"{module}.{name}" in modules():
        return f"{module}.{name}"
    if name and module in packages() and name in exports(module):
        return exports(module)[name]
    return module


def _floor(module: str) -> int:
    return FLOORS.index(module.split(".")[1])


def _package(module: str) -> str:
    return module if module in packages() else module.rsplit(".", 1)[0]


@cache
def graph() -> dict[str, set[str]]:
    return {m: {_target(t, n) for t, n, _ in _imports(m)} - {m} for m in modules()}


def test_the_tree_is_what_the_rules_read() -> None:
    assert len(modules()) > 120
    assert {"copytrace.descriptors.training", "copytrace.pipelines.dedup", "copytrace.app.cli",
            "copytrace.app.service", "copytrace.util"} <= packages()
    assert all(t in modules() for edges in graph().values() for t in edges), \
        [(m, t) for m, e in graph().items() for t in e if t not in modules()]


def test_no_import_from_a_higher_floor() -> None:
    bad = [f"{m}:{line} imports {t}" for m in modules() for t, _, line in _imports(m)
           if _floor(t) > _floor(m)]
    assert not bad, "\n".join(bad)


def test_no_private_name_of_another_module() -> None:
    bad = [f"{m}:{line} imports {t}.{n}" for m in modules() for t, n, line in _imports(m)
           if (n or t.rsplit(".", 1)[1]).startswith("_") and t != m
           and not (n or "").startswith("__")]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    g, state, cycles = graph(), {}, []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    assert not cycles, "\n".join(cycles)


def test_interfaces_and_benchmarks_use_only_front_doors() -> None:
    bad = []
    for m in modules():
        if m.split(".")[1] not in FRONT_DOOR_ONLY:
            continue
        for t, n, line in _imports(m):
            own = t.split(".")[1] == m.split(".")[1] and (t.startswith("copytrace.benchmarks")
                                                          or _package(t) == _package(m))
            if own or (t == "copytrace.app.cli.output" and m.startswith("copytrace.benchmarks")):
                continue
            if t not in packages() or n not in exports(t):
                bad.append(f"{m}:{line} imports {t}.{n} (not in a front door's __all__)")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(["copytrace.util", "copytrace.descriptors",
                                            "copytrace.descriptors.training", "copytrace.indexing",
                                            "copytrace.matching", "copytrace.pipelines",
                                            "copytrace.pipelines.dedup", "copytrace.app",
                                            "copytrace.app.cli", "copytrace.app.service",
                                            "copytrace.app.threatexchange",
                                            "copytrace.benchmarks"]))
def test_each_package_maps_its_modules_and_names_no_module(package: str) -> None:
    """The docstring names every module; no public name hides a submodule (the old
    `copytrace.pipelines.query` was the function, not the module)."""
    init = modules()[package]
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    here = {p.stem for p in init.parent.glob("*.py")} - {"__init__", "__main__"}
    subs = {p.name for p in init.parent.iterdir() if (p / "__init__.py").exists()}
    assert not [m for m in here if f"{m}.py" not in doc], f"{package}: modules missing from its map"
    assert not set(exports(package)) & (here | subs)


def test_public_names_resolve() -> None:
    import importlib

    for package in packages():
        if exports(package):
            mod = importlib.import_module(package)
            missing = [n for n in mod.__all__ if not hasattr(mod, n)]
            assert not missing, f"{package}: {missing}"


def test_query_module_is_a_module_again() -> None:
    import copytrace.pipelines
    import copytrace.pipelines.query

    assert copytrace.pipelines.query.__name__ == "copytrace.pipelines.query"
    assert callable(copytrace.pipelines.query_index)


def test_the_cli_starts_without_torch_faiss_or_ray() -> None:
    code = ("import sys, copytrace.app.cli\n"
            "print(sorted(m for m in ('torch', 'faiss', 'ray', 'cv2', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
