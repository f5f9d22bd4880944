"""The project's import graph: no cycle among the modules of `app` and `workers`, and `app`
never imports `workers` (the worker side builds on the service's core, not the other way).

Every import statement counts, wherever it is (module level, inside functions, under
TYPE_CHECKING), relative ones resolved. Importing `a.b.c` also runs the packages `a` and `a.b`
first, so those count too, except a package the importer lies in (already running by then).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "workers")
# The bench times the worker's ingest pipeline itself, and a first load's int8 calibration
# (workers/pipeline.py and workers/int8_calibration.py need no Celery); any other import of
# `workers` from `app` fails the test.
APP_IMPORTS_OF_WORKERS = {
    ("app.bench.runs", "workers"),
    ("app.bench.runs", "workers.pipeline"),
    ("app.bench.runs", "workers.int8_calibration"),
    ("app.bench.processes", "workers"),
    ("app.bench.processes", "workers.pipeline"),
    ("app.bench.int8", "workers"),
    ("app.bench.int8", "workers.int8_calibration"),
}

Graph = dict[str, set[str]]


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted name -> file of every module under `root/<package>` (a package is its
    __init__.py)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, Path]
) -> list[str]:
    """The dotted names `node` makes Python run. `from x import y` runs x, then x.y when that is
    a submodule; inside x itself, x is already running, so it counts only when y is a name
    taken from x's __init__ (which may not have reached it yet)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        keep = len(here) - (node.level - 1)
        if keep < 1:
            raise ValueError(f"{module}: relative import beyond the top-level package")
        base = ".".join(here[:keep] + ([base] if base else []))
    submodules = [f"{base}.{alias.name}" for alias in node.names]
    if _inside(module, base) and all(name in modules for name in submodules):
        return submodules
    return [base, *submodules]


def import_graph(modules: Mapping[str, Path]) -> Graph:
    """Module -> the project modules whose code importing it runs (see the module docstring)."""
    graph: Graph = {name: set() for name in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, module, is_package, modules):
                if target in modules:
                    graph[module].add(target)
                graph[module].update(
                    package
                    for package in _ancestors(target)
                    if package in modules and not _inside(module, package)
                )
        graph[module].discard(module)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


@pytest.fixture(scope="module")
def project_graph() -> Graph:
    return import_graph(module_names(ROOT, PACKAGES))


def test_the_project_has_no_import_cycle(project_graph: Graph) -> None:
    assert {"app.cli", "app.bench", "app.evaluation", "workers.tasks"} <= set(project_graph)
    cycle = find_cycle(project_graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_app_never_imports_workers(project_graph: Graph) -> None:
    found = {
        (module, target)
        for module, targets in project_graph.items()
        if _inside(module, "app")
        for target in targets
        if _inside(target, "workers")
    }
    assert found - APP_IMPORTS_OF_WORKERS == set(), "app imports workers"
    # a stale exception would hide nothing today but invite new ones
    assert found == APP_IMPORTS_OF_WORKERS


def test_the_cli_uses_only_the_tools_public_entry_points(project_graph: Graph) -> None:
    tools = {t for t in project_graph["app.cli"] if _inside(t, "app.bench")}
    tools |= {t for t in project_graph["app.cli"] if _inside(t, "app.evaluation")}
    assert tools == {"app.bench", "app.evaluation"}


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return module_names(root, ["pkg"])


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.sub import b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def f():\n    from .. import c\n",
            "pkg/c.py": "import os\nif True:\n    from .a import name\n",
        },
    )
    graph = import_graph(modules)
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_a_package_run_first_by_an_import_closes_a_cycle(tmp_path: Path) -> None:
    # importing pkg.tool.x runs pkg/tool/__init__.py first, which imports pkg.shared
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/tool/__init__.py": "from pkg.tool.x import y\n",
            "pkg/tool/x.py": "from pkg.shared import z\ny = 1\n",
            "pkg/shared.py": "from pkg.tool.x import y\nz = 1\n",
        },
    )
    graph = import_graph(modules)
    assert graph["pkg.shared"] == {"pkg.tool", "pkg.tool.x"}
    assert graph["pkg.tool.x"] == {"pkg.shared"}  # pkg.tool is already running
    assert find_cycle(graph) == ["pkg.shared", "pkg.tool", "pkg.tool.x", "pkg.shared"]


def test_a_layered_tree_has_no_cycle(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.top import run\n",
            "pkg/top.py": "from . import low\nfrom pkg.mid import m\nrun = 1\n",
            "pkg/mid.py": "def m():\n    import pkg.low\n",
            "pkg/low.py": "import json\n",
        },
    )
    graph = import_graph(modules)
    assert graph["pkg.top"] == {"pkg.low", "pkg.mid"}
    assert find_cycle(graph) is None
