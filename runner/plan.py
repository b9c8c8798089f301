"""Spec + local repositories → the workspaces to run.

Repositories are git repositories on disk, found two ways:

- under ``--repos-root``, each named by its path below the root, such as
  ``github.com/org/repo``;
- one by one with ``--repo``: ``--repo NAME=PATH`` names it; ``--repo PATH``
  names it after its path below ``--repos-root`` when it lies there (one
  rule for the whole root), else after its ``origin`` remote
  (``https://github.com/psf/requests.git`` and ``git@github.com:psf/requests.git``
  are ``github.com/psf/requests``), else after its folder.

Queries run through ``runner.query``.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from runner.errors import (
    GitError,
    Problem,
    QueryError,
    RepositoryNotFoundError,
    SpecError,
    UsageError,
)
from runner.git import git, git_text, is_repository
from runner.git_refs import branch_commit, head_branch
from runner.spec.glob import Glob
from runner.spec.models import BatchSpec, OnQuery, OnRepository, WorkspaceConfig

if TYPE_CHECKING:
    from runner.query import Query

MAX_DEPTH = 4  # github.com/org/repo sits three levels below the root
NAMES_LISTED = 20  # in the error for a repository runner does not know

# A repository name: slash-separated segments of these characters. It becomes
# a path under the results folder, so no segment may be empty, "." or "..".
_NAME_SEGMENT = re.compile(r"[A-Za-z0-9._~@+-]+")
# git's scp-like remote: [user@]host:path, with no slash before the colon.
_SCP_REMOTE = re.compile(r"(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.+)")


@dataclass(frozen=True)
class Repo:
    name: str
    path: Path


@dataclass(frozen=True)
class RepoArg:
    """One ``--repo``: a path, and the name it was given (None: find one)."""

    path: Path
    name: str | None = None


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


@dataclass(frozen=True)
class NoMatch:
    """A ``repositoriesMatchingQuery`` that selected no repository, and the likely reasons."""

    where: str  # FILE:LINE:COL of the `on` entry
    query: str
    reasons: tuple[str, ...]

    def headline(self) -> str:
        return f"{self.where}: repositoriesMatchingQuery `{self.query}` matched no repository"


def is_repo_name(text: str) -> bool:
    """Whether ``text`` can name a repository (``github.com/org/repo`` and the like)."""
    segments = text.split("/")
    return all(_NAME_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments)


def parse_repo_arg(text: str) -> RepoArg:
    """``--repo``'s value: ``NAME=PATH``, or a ``PATH``.

    It is ``NAME=PATH`` when the text before the first ``=`` is a repository
    name (``github.com/psf/requests=../requests``); otherwise all of it is a
    path. So a path holding ``=`` is read as one when it starts with ``/`` or
    ``./`` (``./a=b``), since no name does. Raises ``UsageError``.
    """
    name, sep, path = text.partition("=")
    if not sep or not is_repo_name(name):
        return RepoArg(Path(text))
    if not path:
        raise UsageError(
            f"--repo {text}: no path after =", hint="write --repo NAME=PATH or --repo PATH"
        )
    return RepoArg(Path(path), name)


def name_from_remote(url: str) -> str | None:
    """``host/path`` of a remote's URL, as Sourcegraph names repositories; None if local.

    Credentials, the port, a trailing ``/`` and ``.git`` are dropped and the
    host is lowercased: ``ssh://git@Host:22/a/b.git`` is ``host/a/b``.
    """
    url = url.strip()
    if "://" in url:
        try:
            parts = urlsplit(url)
            host = parts.hostname  # without user, password and port
        except ValueError:
            return None
        if parts.scheme == "file" or not host:
            return None
        path = parts.path
    else:
        scp = _SCP_REMOTE.fullmatch(url)
        if scp is None:
            return None  # a path on this machine
        host, path = scp["host"], scp["path"]
    path = path.strip("/").removesuffix(".git").rstrip("/")
    name = f"{host.lower()}/{path}"
    return name if path and is_repo_name(name) else None


def origin_name(path: Path) -> str | None:
    """The name the ``origin`` remote gives the repository at ``path``, if it has one.

    Read from the repository's own config only (runner's git ignores the
    user's and the system's); the URL itself is never shown or logged.
    """
    try:
        url = git_text(["config", "--local", "--get", "remote.origin.url"], cwd=path)
    except GitError:
        return None
    return name_from_remote(url)


def discover(repos_root: Path | None, extra: Sequence[Path | RepoArg] = ()) -> list[Repo]:
    """Every repository under ``repos_root`` and each ``--repo`` (see the module doc)."""
    found: dict[str, Repo] = {}
    root: Path | None = None
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
    given: dict[str, Path] = {}  # name -> the --repo that named it
    for item in extra:
        arg = item if isinstance(item, RepoArg) else RepoArg(item)
        resolved = arg.path.resolve()
        if not is_repository(resolved):
            raise RepositoryNotFoundError(
                f"--repo {arg.path} is not a git repository",
                hint="pass the folder that holds .git (a path holding = is read as NAME=PATH "
                "unless it starts with / or ./)",
            )
        name = arg.name or _name_for(resolved, root)
        twice = [n for n, path in given.items() if path.resolve() == resolved and n != name]
        if twice:
            raise UsageError(
                f"--repo {arg.path} is given twice, as {twice[0]} and as {name}",
                hint="give each repository once",
            )
        other = found.get(name)
        if other is not None and other.path != resolved:
            first = given.get(name, other.path)
            raise UsageError(
                f"two repositories are named {name}: {first} and {arg.path}",
                hint=f"name one of them yourself with --repo NAME={arg.path}",
            )
        # A repository under the root that --repo names otherwise is known by that name only.
        for old in [n for n, r in found.items() if r.path == resolved and n != name]:
            del found[old]
        found[name] = Repo(name, resolved)
        given[name] = arg.path
    return sorted(found.values(), key=lambda r: r.name)


def _name_for(path: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
    return origin_name(path) or path.name


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
    if (read := head_branch(repo.path)) is not None:
        return read
    try:
        return git_text(["symbolic-ref", "--short", "HEAD"], cwd=repo.path)
    except GitError:
        raise RepositoryNotFoundError(
            f"repository {repo.name} has a detached HEAD",
            hint="check out a branch or name one in the spec's `branch`",
        ) from None


def resolve_commit(repo: Repo, branch: str) -> str:
    if (read := branch_commit(repo.path, branch)) is not None:
        return read
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


def plan_workspaces(
    spec: BatchSpec, repos: Sequence[Repo], *, no_match: list[NoMatch] | None = None
) -> list[Workspace]:
    """Workspaces for a spec, in a stable order. Raises for a missing repository.

    Given ``no_match``, each query that selects no repository adds a
    ``NoMatch`` there with the likely reasons (which costs a second look at
    the trees, so only callers that show it ask).
    """
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
    for index, item in enumerate(spec.on, start=1):
        if isinstance(item, OnRepository):
            named = by_name.get(item.repository)
            if named is None:
                raise _unknown_repository(spec, item, by_name)
            for branch in item.branches or (None,):
                add(named, branch)
        elif isinstance(item, OnQuery):
            matches = _query(spec, index, item, repos, heads, no_match)
            for repo, paths in matches:
                add(repo, None, paths)
    workspaces: list[Workspace] = []
    for target in sorted(targets.values(), key=lambda t: (t.repo.name, t.branch)):
        workspaces.extend(_workspaces_for(spec, target))
    return workspaces


def _unknown_repository(
    spec: BatchSpec, item: OnRepository, known: dict[str, Repo]
) -> RepositoryNotFoundError:
    from runner.query.hints import known_names

    wanted = item.repository
    if known:
        listing = f"runner knows {known_names(list(known), NAMES_LISTED)}"
    else:
        listing = "runner knows no repository (pass --repos-root DIR or --repo PATH)"
    return RepositoryNotFoundError(
        f"repository {wanted} ({spec.path}:{item.pos.line}) is not under --repos-root "
        "nor given with --repo",
        hint=f"{listing}; name a clone with --repo {wanted}=PATH, or clone it under "
        f"--repos-root as {wanted}",
    )


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


def _where(spec: BatchSpec, item: OnQuery) -> str:
    return f"{spec.path}:{item.pos.line}:{item.pos.column}"


def parsed_query(spec: BatchSpec, index: int, item: OnQuery) -> Query:
    """The `on` entry's query parsed, or its ``QueryError`` saying where it stands in the spec."""
    from runner.query import parse_query

    try:
        return parse_query(item.query)
    except QueryError as exc:
        raise QueryError(
            f"{_where(spec, item)}: on[{index}].repositoriesMatchingQuery: {exc.message}",
            what=exc.what,
            hint=exc.hint,
            offset=exc.offset,
            unsupported=exc.unsupported,
        ) from None


def _query(
    spec: BatchSpec,
    index: int,
    item: OnQuery,
    repos: Sequence[Repo],
    heads: _Heads,
    no_match: list[NoMatch] | None,
) -> list[tuple[Repo, tuple[str, ...]]]:
    from runner.query import LocalRepository, evaluate_query
    from runner.query.hints import no_match_reasons

    query = parsed_query(spec, index, item)
    local = []
    by_name = {}
    for repo in repos:
        try:
            rev = heads.commit(repo, heads.branch(repo))
        except RepositoryNotFoundError:
            continue
        local.append(LocalRepository(name=repo.name, path=repo.path, revision=rev))
        by_name[repo.name] = repo
    matches = evaluate_query(query, local)
    if not matches and no_match is not None:
        reasons = no_match_reasons(query, local)
        no_match.append(NoMatch(_where(spec, item), item.query, tuple(reasons)))
    return [(by_name[m.repository.name], tuple(m.search_result_paths)) for m in matches]


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


def require_repositories(repos_root: Path | None, extra: Sequence[Path | RepoArg]) -> None:
    if repos_root is None and not extra:
        raise UsageError(
            "no repositories given", hint="pass --repos-root DIR or --repo PATH (repeatable)"
        )
