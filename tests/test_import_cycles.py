"""No import cycle in runner/: every import statement counts.

Imports inside functions and under ``if TYPE_CHECKING:`` count too: a cycle
hidden in a function is still two modules that cannot be understood apart.
A parent package imported implicitly (``runner.cli`` when ``runner.cli._app``
is imported) is not an edge; an explicit ``from runner.cli import x`` is.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _target(name: str, known: Mapping[str, Path]) -> str | None:
    """The module an import of ``name`` loads, within ``known`` (its longest known prefix)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement of ``module`` that names one of ours."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _target(alias.name, known)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in known else _target(base, known)
                if target:
                    yield target, node.lineno


def import_graph(package_dir: Path) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line importing it}."""
    known = modules(package_dir)
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(module, path, known):
            if target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return found


def describe(component: list[str], graph: Mapping[str, Mapping[str, int]]) -> str:
    members = set(component)
    lines = [
        f"  {module} imports {target} (line {line})"
        for module in component
        for target, line in sorted(graph[module].items())
        if target in members
    ]
    return "cycle between " + ", ".join(component) + ":\n" + "\n".join(lines)


def test_runner_has_no_import_cycle() -> None:
    graph = import_graph(ROOT / "runner")
    assert len(graph) > 50, "the walk found too few modules to be looking at runner/"
    found = cycles(graph)
    assert not found, "\n".join(describe(c, graph) for c in found)


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "import pkg.a\n"},
            [["pkg.a", "pkg.b"]],
            id="plain",
        ),
        pytest.param(
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "def f():\n    from pkg import b\n",
                "pkg/b.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.a import f\n",
            },
            [["pkg.a", "pkg.b"]],
            id="inside-function-and-type-checking",
        ),
        pytest.param(
            {
                "pkg/__init__.py": "from pkg.sub import x\nVALUE = 1\n",
                "pkg/sub/__init__.py": "from .. import VALUE\nx = VALUE\n",
            },
            [["pkg", "pkg.sub"]],
            id="relative-to-parent-package",
        ),
        pytest.param(
            {
                "pkg/__init__.py": "from pkg.a import f\n",
                "pkg/a.py": "import pkg.b\n\ndef f(): ...\n",
                "pkg/b.py": "",
            },
            [],
            id="no-cycle",
        ),
    ],
)
def test_the_walk_finds_every_kind_of_cycle(
    tmp_path: Path, files: dict[str, str], expected: list[list[str]]
) -> None:
    assert cycles(import_graph(_write(tmp_path, files))) == expected
