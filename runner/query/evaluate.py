"""Evaluate a parsed query over local repositories.

A repository is read only as far as the query needs: repository-name filters
are checked before git is started, paths before contents, and a file's
content is fetched at most once per pass, only when its path passed the
file filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from runner.query.model import (
    AllOf,
    AnyOf,
    BasicQuery,
    ContentExpr,
    FileFilter,
    LocalRepository,
    Negation,
    Query,
    QueryMatch,
    RepoFilter,
    Term,
    needs_content,
)
from runner.query.trees import GitTreeReader, RepositoryTree, TreeEntry, TreeReader


def _matches(expr: ContentExpr, path: str, text: Callable[[], str | None]) -> bool:
    match expr:
        case Term(regex=regex, target=target):
            if target != "content" and regex.search(path):
                return True
            if target == "path":
                return False
            content = text()
            return content is not None and regex.search(content) is not None
        case AllOf(parts=parts):
            return all(_matches(p, path, text) for p in parts)
        case AnyOf(parts=parts):
            return any(_matches(p, path, text) for p in parts)
        case Negation(part=part):
            return not _matches(part, path, text)


def name_passes(basic: BasicQuery, name: str) -> bool:
    """Whether a repository called ``name`` passes the basic query's ``repo:`` name filters."""
    return all(
        bool(f.regex.search(name)) != f.negated for f in basic.repo_filters if f.kind == "name"
    )


class _Repo:
    """One repository under evaluation: its tree, opened on first need."""

    def __init__(self, repository: LocalRepository, reader: TreeReader) -> None:
        self.repository = repository
        self._reader = reader
        self._tree: RepositoryTree | None = None
        self._predicates: dict[RepoFilter, bool] = {}

    def tree(self) -> RepositoryTree:
        if self._tree is None:
            self._tree = self._reader.open(self.repository)
        return self._tree

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()

    def predicate(self, f: RepoFilter) -> bool:
        """Whether a has.path/has.content filter holds (negation applied)."""
        if f not in self._predicates:
            tree = self.tree()
            if f.kind == "has_path":
                found = any(f.regex.search(e.path) for e in tree.entries())
            else:
                found = any(
                    (content := tree.text(e)) is not None and f.regex.search(content)
                    for e in tree.entries()
                    if e.content_searchable
                )
            self._predicates[f] = found
        return self._predicates[f] != f.negated


def _file_filters_pass(
    filters: Sequence[FileFilter], entry: TreeEntry, text: Callable[[], str | None]
) -> bool:
    for f in filters:
        if f.kind == "path":
            hit = f.regex.search(entry.path) is not None
        else:
            content = text()
            hit = content is not None and f.regex.search(content) is not None
        if hit == f.negated:
            return False
    return True


def _file_basic_matches(
    basic: BasicQuery, entry: TreeEntry, text: Callable[[], str | None]
) -> bool:
    if not _file_filters_pass(basic.file_filters, entry, text):
        return False
    if basic.content is None:
        return True
    # Content search never returns a file it cannot read (binary, over 1 MiB,
    # a link), even when the expression would hold for empty content.
    if needs_content(basic.content) and text() is None:
        return False
    return _matches(basic.content, entry.path, text)


def _evaluate_repo(query: Query, repo: _Repo, limit: int | None) -> QueryMatch | None:
    select_repo = query.options.select_repo
    candidates = [b for b in query.basics if name_passes(b, repo.repository.name)]
    candidates = [
        b for b in candidates if all(repo.predicate(f) for f in b.repo_filters if f.kind != "name")
    ]
    if not candidates:
        return None
    whole = any(not b.selects_files for b in candidates)
    file_basics = [b for b in candidates if b.selects_files]
    if select_repo and whole:
        return QueryMatch(repo.repository, ())
    paths: list[str] = []
    if file_basics:
        tree = repo.tree()
        for entry in tree.entries():
            if limit is not None and len(paths) >= limit:
                break
            cache: list[str | None] = []

            def text(entry: TreeEntry = entry, cache: list[str | None] = cache) -> str | None:
                if not cache:
                    cache.append(tree.text(entry))
                return cache[0]

            if any(_file_basic_matches(b, entry, text) for b in file_basics):
                paths.append(entry.path)
                if select_repo:
                    break
    if select_repo:
        return QueryMatch(repo.repository, ()) if paths else None
    if paths or whole:
        return QueryMatch(repo.repository, tuple(paths))
    return None


def evaluate_query(
    query: Query,
    repos: Sequence[LocalRepository],
    *,
    reader: TreeReader | None = None,
) -> list[QueryMatch]:
    """The repositories (of ``repos``, in order) that ``query`` selects.

    Each match lists the files whose content matched, in path order; the
    list is empty when the query selects whole repositories. Files are read
    through git at each repository's ``revision`` unless ``reader`` says
    otherwise. ``count:N`` limits the number of results: matching files,
    where a repository selected as a whole (or by ``select:repo``) counts as one.
    """
    if query.options.only_forks_or_archived:
        return []
    reader = reader or GitTreeReader()
    remaining = query.options.count
    results: list[QueryMatch] = []
    for repository in repos:
        if remaining is not None and remaining <= 0:
            break
        repo = _Repo(repository, reader)
        try:
            match = _evaluate_repo(query, repo, remaining)
        finally:
            repo.close()
        if match is None:
            continue
        results.append(match)
        if remaining is not None:
            remaining -= max(1, len(match.search_result_paths))
    return results
