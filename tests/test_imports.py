"""The house's import rules, read from the source: arrows point down, and nothing circles.

Every ``import`` counts: at module level, inside a function (a deferred import still ties
two modules together) and under ``if TYPE_CHECKING:`` (a type-only import is a circle
too; the shared type belongs in a lower module). Each module is its own node, at any
depth, so a circle between two modules of one subpackage (``service.jobs.store`` and its
engines) is found like any other. ``from package import name`` is an edge to
``package.name`` when that is a module, and to ``package`` itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "training", "robustness", "service", "client")
# What each package may import of ours (the house's arrows).
ALLOWED = {
    "models": set(),
    "training": {"models"},
    "robustness": {"models"},
    "service": {"models", "robustness"},
    "client": set(),  # a user's program imports it beside nothing else of ours
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, path: Path) -> str | None:
    """The module an ``ImportFrom`` names, with relative imports resolved against ``path``."""
    if node.level == 0:
        return node.module
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base) or None


def imports_of(path: Path) -> set[str]:
    """The modules of ours that ``path`` imports, wherever the import statement sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, path)
            if module:
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
    ours = {name for name in found if name.split(".")[0] in PACKAGES}
    return {name for name in ours if _exists(name)}


def _exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports; every module is a node of its own."""
    edges: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = module_name(path)
            edges.setdefault(source, set()).update(imports_of(path) - {source})
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_detector_finds_a_circle_and_passes_a_tree() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    inside = {"service.jobs.store": {"service.jobs.store.sqlite"}}
    inside["service.jobs.store.sqlite"] = {"service.jobs.store"}
    assert circles(inside) == [["service.jobs.store", "service.jobs.store.sqlite"]]


def test_deferred_and_type_only_imports_are_edges(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "service"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("")
    (package / "high.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from service.low import Thing\n"
        "def later():\n    from . import low\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports_of(package / "high.py") == {"service", "service.low"}


def test_no_module_of_ours_is_part_of_an_import_circle() -> None:
    edges = graph()
    # The graph was read, down to the modules inside subpackages.
    assert "service.jobs.store.sqlite" in edges["service.jobs.store"]
    assert "robustness.plan" in edges["robustness.judge"]  # a type-only import
    assert circles(edges) == []


def test_imports_point_down_the_house() -> None:
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imports_of(path):
                top = name.split(".")[0]
                if top != package and top not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []


@pytest.mark.slow  # a fresh interpreter imports the whole service
def test_the_service_never_loads_training() -> None:
    """At run time too: the app, the command line and the job process import no ``training``."""
    check = (
        "import sys\n"
        "import service.app, service.cli, service.jobs.worker, service.supervisor\n"
        "from service.app import create_app\n"
        "create_app()\n"
        "assert not any(m == 'training' or m.startswith('training.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True, timeout=300)
