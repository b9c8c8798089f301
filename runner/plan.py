"""Spec + local repositories → the workspaces to run.

Repositories are git repositories on disk: under ``--repos-root`` (named by
their path below it, such as ``github.com/org/repo``) and added one by one
with ``--repo``. Queries run through ``runner.query``.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.errors import GitError, Problem, RepositoryNotFoundError, SpecError, UsageError
from runner.git import git, git_text, is_repository
from runner.spec.glob import Glob
from runner.spec.models import BatchSpec, OnQuery, OnRepository, WorkspaceConfig

MAX_DEPTH = 4  # github.com/org/repo sits three levels below the root


@dataclass(frozen=True)
class Repo:
    name: str
    path: Path


@dataclass(frozen=True)
class Workspace:
    repository: str
    repo_path: Path
    branch: str
    commit: str
    path: str  # "" for the repository's root
    only_fetch_workspace: bool
    search_result_paths: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.repository}@{self.branch}:{self.path or '.'}"


def discover(repos_root: Path | None, extra: Sequence[Path] = ()) -> list[Repo]:
    """Every repository under ``repos_root`` and each ``--repo`` path."""
    found: dict[str, Repo] = {}
    if repos_root is not None:
        root = repos_root.resolve()
        if not root.is_dir():
            raise RepositoryNotFoundError(
                f"--repos-root {repos_root} is not a folder",
                hint="pass the folder holding your repositories",
            )
        for repo_path in _walk(root, 0):
            name = repo_path.relative_to(root).as_posix()
            found[name] = Repo(name, repo_path)
    for path in extra:
        resolved = path.resolve()
        if not is_repository(resolved):
            raise RepositoryNotFoundError(
                f"--repo {path} is not a git repository", hint="pass the folder that holds .git"
            )
        name = resolved.name
        if repos_root is not None:
            with contextlib.suppress(ValueError):
                name = resolved.relative_to(repos_root.resolve()).as_posix()
        found[name] = Repo(name, resolved)
    return sorted(found.values(), key=lambda r: r.name)


def _walk(folder: Path, depth: int) -> list[Path]:
    if is_repository(folder):
        return [folder]
    if depth >= MAX_DEPTH:
        return []
    out: list[Path] = []
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    for child in children:
        out.extend(_walk(child, depth + 1))
    return out


def current_branch(repo: Repo) -> str:
    try:
        return git_text(["symbolic-ref", "--short", "HEAD"], cwd=repo.path)
    except GitError:
        raise RepositoryNotFoundError(
            f"repository {repo.name} has a detached HEAD",
            hint="check out a branch or name one in the spec's `branch`",
        ) from None


def resolve_commit(repo: Repo, branch: str) -> str:
    try:
        return git_text(["rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}"], cwd=repo.path)
    except GitError:
        raise RepositoryNotFoundError(
            f"repository {repo.name} has no branch {branch!r}",
            hint="create the branch or fix `branch` in the spec",
        ) from None


@dataclass(frozen=True)
class _Target:
    repo: Repo
    branch: str
    commit: str
    paths: tuple[str, ...]


def plan_workspaces(spec: BatchSpec, repos: Sequence[Repo]) -> list[Workspace]:
    """Workspaces for a spec, in a stable order. Raises for a missing repository."""
    if not spec.on and not repos:
        return []
    by_name = {r.name: r for r in repos}
    targets: dict[tuple[str, str], _Target] = {}
    heads = _Heads()

    def add(repo: Repo, branch: str | None, paths: Sequence[str] = ()) -> None:
        chosen = branch or heads.branch(repo)
        key = (repo.name, chosen)
        old = targets.get(key)
        merged = tuple(sorted(set(paths) | set(old.paths if old else ())))
        commit = old.commit if old else heads.commit(repo, chosen)
        targets[key] = _Target(repo, chosen, commit, merged)

    if not spec.on:
        for repo in repos:
            add(repo, None)
    for item in spec.on:
        if isinstance(item, OnRepository):
            named = by_name.get(item.repository)
            if named is None:
                raise RepositoryNotFoundError(
                    f"repository {item.repository} (line {item.pos.line}) is not under "
                    "--repos-root nor given with --repo",
                    hint="clone it under --repos-root as that path, or pass --repo PATH",
                )
            for branch in item.branches or (None,):
                add(named, branch)
        elif isinstance(item, OnQuery):
            for repo, paths in _query(item.query, repos, heads):
                add(repo, None, paths)
    workspaces: list[Workspace] = []
    for target in sorted(targets.values(), key=lambda t: (t.repo.name, t.branch)):
        workspaces.extend(_workspaces_for(spec, target))
    return workspaces


class _Heads:
    """Branches and commits asked of git once per planning, however often needed."""

    def __init__(self) -> None:
        self._branches: dict[str, str] = {}
        self._commits: dict[tuple[str, str], str] = {}

    def branch(self, repo: Repo) -> str:
        if repo.name not in self._branches:
            self._branches[repo.name] = current_branch(repo)
        return self._branches[repo.name]

    def commit(self, repo: Repo, branch: str) -> str:
        key = (repo.name, branch)
        if key not in self._commits:
            self._commits[key] = resolve_commit(repo, branch)
        return self._commits[key]


def _query(text: str, repos: Sequence[Repo], heads: _Heads) -> list[tuple[Repo, tuple[str, ...]]]:
    from runner.query import LocalRepository, evaluate_query, parse_query

    query = parse_query(text)
    local = []
    by_name = {}
    for repo in repos:
        try:
            rev = heads.commit(repo, heads.branch(repo))
        except RepositoryNotFoundError:
            continue
        local.append(LocalRepository(name=repo.name, path=repo.path, revision=rev))
        by_name[repo.name] = repo
    return [
        (by_name[m.repository.name], tuple(m.search_result_paths))
        for m in evaluate_query(query, local)
    ]


def _workspaces_for(spec: BatchSpec, target: _Target) -> list[Workspace]:
    config = _workspace_config(spec, target.repo.name)
    if config is None:
        return [_workspace(target, "", False, target.paths)]
    listing = git(["ls-tree", "-r", "-z", "--name-only", target.commit], cwd=target.repo.path)
    folders = sorted(
        {
            posixpath.dirname(p)
            for p in listing.decode("utf-8", "replace").split("\0")
            if p and posixpath.basename(p) == config.root_at_location_of
        }
    )
    out = []
    for folder in folders:
        inside = tuple(
            p for p in target.paths if not folder or p == folder or p.startswith(folder + "/")
        )
        if target.paths and not inside:
            continue  # the query's matches lie in other workspaces
        out.append(_workspace(target, folder, config.only_fetch_workspace, inside))
    return out


def _workspace_config(spec: BatchSpec, repository: str) -> WorkspaceConfig | None:
    """The `workspaces` entry for a repository, as Sourcegraph picks it.

    An entry without `in` applies to every repository; `in` is a glob in
    Sourcegraph's syntax. A repository that two entries apply to is an error
    there, and here.
    """
    chosen: WorkspaceConfig | None = None
    for config in spec.workspaces:
        if config.in_glob is not None and not Glob(config.in_glob).match(repository):
            continue
        if chosen is not None:
            where = f"in={config.in_glob!r}" if config.in_glob is not None else "without `in`"
            raise SpecError(
                [
                    Problem(
                        spec.path,
                        config.pos.line,
                        config.pos.column,
                        f"repository {repository} matches more than one `workspaces` entry "
                        f"(this one, {where}, and the one at line {chosen.pos.line})",
                    )
                ],
                hint="make the `in` globs of the `workspaces` entries exclusive",
            )
        chosen = config
    return chosen


def _workspace(target: _Target, path: str, only_fetch: bool, paths: tuple[str, ...]) -> Workspace:
    return Workspace(
        repository=target.repo.name,
        repo_path=target.repo.path,
        branch=target.branch,
        commit=target.commit,
        path=path,
        only_fetch_workspace=only_fetch,
        search_result_paths=paths,
    )


def require_repositories(repos_root: Path | None, extra: Sequence[Path]) -> None:
    if repos_root is None and not extra:
        raise UsageError(
            "no repositories given", hint="pass --repos-root DIR or --repo PATH (repeatable)"
        )
