"""`workspaces[].in` globs pick a repository's workspace entry as Sourcegraph does.

Sourcegraph (`lib/batches` workspace resolution) compiles `in` with its glob
library and refuses a repository that more than one entry applies to; an
entry without `in` applies to every repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.plan import discover, plan_workspaces
from runner.spec import load_spec_text
from tests.helpers import make_repo

REPOS = {
    "github.com/acme/app": {"a/package.json": "{}", "b/package.json": "{}"},
    "github.com/acme/lib": {"x/package.json": "{}"},
    "gitlab.com/other/tool": {"t/package.json": "{}"},
}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repos")
    for name, files in REPOS.items():
        make_repo(root, name, files)
    return root


def _plan(root: Path, workspaces: str) -> list[tuple[str, str]]:
    spec = load_spec_text(
        "name: globs\n"
        "on:\n"
        + "".join(f"  - repository: {name}\n" for name in REPOS)
        + f"workspaces:\n{workspaces}"
        + "steps:\n  - run: 'true'\n    container: busybox\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: b\n  commit:\n    message: m\n",
        "globs.yaml",
    )
    return [(w.repository, w.path) for w in plan_workspaces(spec, discover(root))]


def test_braces_and_classes_select_repositories(repos: Path) -> None:
    got = _plan(repos, "  - rootAtLocationOf: package.json\n    in: github.com/acme/{app,lib}\n")
    assert got == [
        ("github.com/acme/app", "a"),
        ("github.com/acme/app", "b"),
        ("github.com/acme/lib", "x"),
        ("gitlab.com/other/tool", ""),
    ]


def test_a_repository_two_entries_apply_to_is_an_error(repos: Path) -> None:
    with pytest.raises(SpecError) as caught:
        _plan(
            repos,
            "  - rootAtLocationOf: package.json\n    in: github.com/acme/*\n"
            "  - rootAtLocationOf: package.json\n    in: github.com/*/app\n",
        )
    message = str(caught.value)
    assert "github.com/acme/app matches more than one `workspaces` entry" in message
    assert "globs.yaml:" in message


def test_an_entry_without_in_applies_to_every_repository(repos: Path) -> None:
    assert _plan(repos, "  - rootAtLocationOf: package.json\n") == [
        ("github.com/acme/app", "a"),
        ("github.com/acme/app", "b"),
        ("github.com/acme/lib", "x"),
        ("gitlab.com/other/tool", "t"),
    ]
    with pytest.raises(SpecError):
        _plan(
            repos,
            "  - rootAtLocationOf: package.json\n"
            "  - rootAtLocationOf: package.json\n    in: gitlab.com/*\n",
        )
