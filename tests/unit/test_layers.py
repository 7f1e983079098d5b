"""The layers of docs/adr/0006-layers-and-environments.md hold: the core never reaches into Spark.

The core (``streamops``: CLI, stack, dashboard, maintenance, supervision), the Airflow plugin and
the DAG files import neither ``spark_jobs`` nor ``pyspark``, not even lazily inside a function,
nor ``benchmarks``, which imports both (`streamops bench` runs them in a child process), and the
import graph of the three packages has no cycle. What both sides share lives in
``streamops.contract``. The scan reads the sources; the last test imports the real entry points
in a fresh interpreter and looks at what got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Import name → the folder holding its package.
PACKAGES = {
    "streamops": PROJECT_ROOT / "streamops",
    "streamops_airflow": PROJECT_ROOT / "plugins" / "streamops_airflow",
    "spark_jobs": PROJECT_ROOT / "spark_jobs",
}
CORE_FOLDERS = (
    PROJECT_ROOT / "streamops",
    PROJECT_ROOT / "plugins",
    PROJECT_ROOT / "dags",
)
# What the core must never import: the Spark side, Spark itself, and the benchmarks (they import
# both; `streamops bench` starts them as a child process).
FORBIDDEN_IN_CORE = ("spark_jobs", "pyspark", "benchmarks")


def imported_names(path: Path) -> Iterator[tuple[int, str]]:
    """Every module name ``path`` imports, at any depth (lazy imports too), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(package, root, path): path
        for package, root in PACKAGES.items()
        for path in root.rglob("*.py")
    }


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports (a name resolves to its longest known module)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for _, name in imported_names(path):
            target = resolve(name)
            # A module importing its own package (``from streamops.cli import _app`` inside
            # streamops.cli) is how Python loads a package's parts, not an arrow back.
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = lowest[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = lowest[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    lowest[node] = min(lowest[node], index[target])
            else:
                work.pop()
                if work:
                    lowest[work[-1][0]] = min(lowest[work[-1][0]], lowest[node])
                if lowest[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_core_never_imports_spark_or_the_jobs() -> None:
    arrows = [
        f"{path.relative_to(PROJECT_ROOT)}:{line} imports {name}"
        for folder in CORE_FOLDERS
        for path in sorted(folder.rglob("*.py"))
        for line, name in imported_names(path)
        if name.split(".")[0] in FORBIDDEN_IN_CORE
    ]
    assert not arrows, "arrows from the core into Spark or the benchmarks:\n" + "\n".join(
        sorted(set(arrows))
    )


def test_the_import_graph_has_no_cycle() -> None:
    found = cycles(import_graph(project_modules()))
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a made-up graph with a loop is caught, a tree is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.slow
def test_the_entry_points_load_no_spark() -> None:
    """The CLI, the dashboard, the Airflow plugin and every DAG file, imported for real."""
    probe = f"""
import importlib.util, sys
sys.path[:0] = [{str(PROJECT_ROOT / "plugins")!r}, {str(PROJECT_ROOT / "dags")!r}]
import streamops.cli, streamops.dashboard.app, streamops_airflow
for path in sorted(__import__("pathlib").Path({str(PROJECT_ROOT / "dags")!r}).glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN_IN_CORE!r})))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"loaded: {result.stdout.strip()}"
