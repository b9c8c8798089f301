"""runner.gotemplate is Go's text/template and nothing else: it imports no other part of runner.

Batch-spec knowledge (the ``${{ }}`` delimiters, Sourcegraph's helpers, the
root names) lives in runner.spec.template; the engine may lean only on
runner.errors for TemplateError.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import runner.gotemplate

PACKAGE_DIR = Path(runner.gotemplate.__file__).parent
MODULES = sorted(PACKAGE_DIR.rglob("*.py"))
ALLOWED = ("runner.gotemplate", "runner.errors")


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, anywhere in the file, relative ones made absolute."""
    package = ["runner", "gotemplate", *path.relative_to(PACKAGE_DIR).parent.parts]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # ``from runner import x`` imports the module runner.x.
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def is_allowed(name: str) -> bool:
    if name != "runner" and not name.startswith("runner."):
        return True
    return any(name == ok or name.startswith(ok + ".") for ok in ALLOWED)


def test_the_package_has_modules() -> None:
    assert {p.name for p in MODULES} >= {"__init__.py", "lex.py", "parse.py", "exec.py"}


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_imports_only_itself_and_errors(path: Path) -> None:
    bad = [name for name in imported_modules(path) if not is_allowed(name)]
    assert bad == [], f"{path.name} imports {bad}"


def test_the_check_catches_what_it_should() -> None:
    assert not is_allowed("runner.spec.template.render_template")
    assert not is_allowed("runner.spec")
    assert not is_allowed("runner")
    assert is_allowed("runner.errors.TemplateError")
    assert is_allowed("runner.gotemplate.values.StrList")
    assert is_allowed("dataclasses.dataclass")
    assert not is_allowed("runner.errorsx")
