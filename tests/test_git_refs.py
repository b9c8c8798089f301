"""Branches and commits read from a repository's files agree with git, or defer to it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runner.errors import RepositoryNotFoundError
from runner.git_refs import branch_commit, head_branch
from runner.plan import Repo, current_branch, resolve_commit
from tests.helpers import git, make_repo


def _rev(repo: Path, name: str) -> str:
    return git(repo, "rev-parse", "--verify", f"{name}^{{commit}}").strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = make_repo(tmp_path, "r", {"a.txt": "a\n"})
    git(path, "checkout", "-q", "-b", "feature/x")
    (path / "b.txt").write_text("b\n")
    git(path, "add", "b.txt")
    git(path, "commit", "-q", "-m", "b")
    git(path, "checkout", "-q", "main")
    return path


def test_loose_and_packed_branches_read_as_git_reads_them(repo: Path) -> None:
    assert head_branch(repo) == "main"
    assert branch_commit(repo, "main") == _rev(repo, "main")
    assert branch_commit(repo, "feature/x") == _rev(repo, "feature/x")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert branch_commit(repo, "main") == _rev(repo, "main")
    assert branch_commit(repo, "feature/x") == _rev(repo, "feature/x")
    # A loose ref written after packing wins over the packed one, as in git.
    git(repo, "checkout", "-q", "main")
    (repo / "c.txt").write_text("c\n")
    git(repo, "add", "c.txt")
    git(repo, "commit", "-q", "-m", "c")
    assert branch_commit(repo, "main") == _rev(repo, "main")
    assert branch_commit(repo, "nope") is None


def test_a_reftable_repository_is_left_to_git(repo: Path) -> None:
    (repo / ".git" / "reftable").mkdir()  # git 2.45's ref storage: refs are not files there
    assert head_branch(repo) is None and branch_commit(repo, "main") is None


def test_bare_repositories_are_read_too(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    assert head_branch(bare) == "main"
    assert branch_commit(bare, "feature/x") == _rev(repo, "feature/x")


def test_names_git_could_mean_otherwise_are_left_to_git(repo: Path, tmp_path: Path) -> None:
    main = _rev(repo, "main")
    # A tag named like the branch, pointing elsewhere: git warns and takes the tag.
    git(repo, "tag", "feature/x", "main")
    assert branch_commit(repo, "feature/x") is None
    assert resolve_commit(Repo("r", repo), "feature/x") == _rev(repo, "feature/x") == main
    git(repo, "checkout", "-q", "feature/x")
    assert head_branch(repo) is None
    assert current_branch(Repo("r", repo)) == "heads/feature/x"
    for name in ("HEAD", "main~1", main, "ma..in", "-x"):
        assert branch_commit(repo, name) is None, name
    # Detached HEAD: git's error stays the one the user sees.
    git(repo, "checkout", "-q", "--detach", "main")
    assert head_branch(repo) is None
    with pytest.raises(RepositoryNotFoundError, match="detached HEAD"):
        current_branch(Repo("r", repo))
    # A worktree has a `.git` file: git answers.
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(tree), "feature/x")
    assert head_branch(tree) is None and branch_commit(tree, "main") is None
    # (git names the branch `heads/feature/x` there: the tag shadows it.)
    assert current_branch(Repo("wt", tree)) == git(tree, "symbolic-ref", "--short", "HEAD").strip()
    assert resolve_commit(Repo("wt", tree), "main") == main
