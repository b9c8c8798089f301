"""A commit's tree read from the object store agrees with git, or is left to git."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runner.execute.source import resolve_source
from runner.git_objects import commit_tree
from runner.plan import Workspace
from tests.helpers import git, make_repo


def _tree(repo: Path, commit: str) -> str:
    return git(repo, "rev-parse", f"{commit}^{{tree}}").strip()


def _history(repo: Path, commits: int) -> list[str]:
    made = []
    for index in range(commits):
        (repo / f"f{index}.txt").write_text(f"{index}\n" * (index + 1))
        git(repo, "add", "-A")
        # Some commits longer than one read of the pack, one spanning several.
        body = "with a body long enough to matter " * (3 if index % 3 else 40 * index)
        git(repo, "commit", "-q", "-m", f"commit {index}\n\n{body}")
        made.append(git(repo, "rev-parse", "HEAD").strip())
    return made


def test_loose_and_packed_commits_give_gits_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "r", {"a.txt": "a\n"})
    commits = _history(repo, 40)
    objects = repo / ".git" / "objects"
    for commit in commits:
        assert commit_tree(objects, commit) == _tree(repo, commit)
    git(repo, "gc", "-q", "--aggressive")  # packed, many of them as deltas
    assert not (objects / commits[0][:2] / commits[0][2:]).exists()
    read = {c: commit_tree(objects, c) for c in commits}
    assert any(read.values()), "whole packed commits are read"
    for commit, tree in read.items():
        assert tree in (None, _tree(repo, commit)), "a delta is left to git, never misread"
    assert commit_tree(objects, "0" * 40) is None
    assert commit_tree(objects, "HEAD") is None
    # A tree or blob named as a commit is not one.
    assert commit_tree(objects, _tree(repo, commits[-1])) is None


def test_a_commit_in_an_alternate_store_is_left_to_git(tmp_path: Path) -> None:
    origin = make_repo(tmp_path, "origin", {"a.txt": "a\n"})
    (commit,) = _history(origin, 1)
    borrower = tmp_path / "borrower"
    subprocess.run(["git", "clone", "-q", "--shared", str(origin), str(borrower)], check=True)
    assert commit_tree(borrower / ".git" / "objects", commit) is None
    ws = Workspace("r", borrower, "main", commit, "", False, ())
    assert resolve_source(ws).tree == _tree(origin, commit)
    # In its own store, the same answer without git.
    own = Workspace("r", origin, "main", commit, "", False, ())
    assert resolve_source(own).tree == _tree(origin, commit)
    assert resolve_source(own).objects == (origin / ".git" / "objects").absolute()
