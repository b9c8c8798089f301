"""What a parsed ``repositoriesMatchingQuery`` is made of.

A query becomes a union of *basic queries* (Sourcegraph's own model): each
one has repository filters, file filters and at most one content expression.
Options that apply to the whole query (pattern type, case, count, select,
type, fork, archived) are kept once, on ``Query.options``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class LocalRepository:
    """A repository under ``--repos-root``, searched at ``revision``."""

    name: str
    path: Path
    revision: str


@dataclass(frozen=True)
class QueryMatch:
    """A repository the query selects, with the files whose content matched.

    ``search_result_paths`` is empty when the query selects whole repositories.
    """

    repository: LocalRepository
    search_result_paths: tuple[str, ...]


class PatternType(StrEnum):
    STANDARD = "standard"
    LITERAL = "literal"
    REGEXP = "regexp"
    KEYWORD = "keyword"


@dataclass(frozen=True)
class QueryOptions:
    """What the whole query asks for, whatever its patterns and filters."""

    pattern_type: PatternType = PatternType.STANDARD
    case_sensitive: bool = False
    count: int | None = None  # None: no limit (``count:all`` or no count at all)
    select_repo: bool = False
    search_paths: bool = False  # ``type:path``
    # fork:only / archived:only: local repositories are never forks or archived.
    only_forks_or_archived: bool = False


# What a content term is matched against: the file's text, its path, or either
# (keyword search matches a term in the document or in its file name).
Target = Literal["content", "path", "either"]


@dataclass(frozen=True)
class Term:
    """One search pattern, compiled. ``text`` is how the query wrote it."""

    text: str
    regex: re.Pattern[str]
    target: Target


@dataclass(frozen=True)
class AllOf:
    parts: tuple[ContentExpr, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[ContentExpr, ...]


@dataclass(frozen=True)
class Negation:
    part: ContentExpr


ContentExpr = Term | AllOf | AnyOf | Negation


@dataclass(frozen=True)
class RepoFilter:
    """``repo:`` (on the name), ``repo:has.path()`` or ``repo:has.content()``."""

    kind: Literal["name", "has_path", "has_content"]
    regex: re.Pattern[str]
    negated: bool
    text: str


@dataclass(frozen=True)
class FileFilter:
    """``file:``/``lang:`` (on the path) or ``file:has.content()``."""

    kind: Literal["path", "has_content"]
    regex: re.Pattern[str]
    negated: bool
    text: str


@dataclass(frozen=True)
class BasicQuery:
    repo_filters: tuple[RepoFilter, ...]
    file_filters: tuple[FileFilter, ...]
    content: ContentExpr | None

    @property
    def selects_files(self) -> bool:
        """False when only repository filters are left: whole repositories match."""
        return bool(self.file_filters) or self.content is not None


@dataclass(frozen=True)
class Query:
    """A parsed query; build one with ``runner.query.parse_query``."""

    text: str
    options: QueryOptions
    basics: tuple[BasicQuery, ...]

    @property
    def selects_whole_repositories(self) -> bool:
        return self.options.select_repo or not any(b.selects_files for b in self.basics)


def needs_content(expr: ContentExpr) -> bool:
    """Whether evaluating ``expr`` reads file contents (not only paths)."""
    match expr:
        case Term(target=target):
            return target != "path"
        case AllOf(parts=parts) | AnyOf(parts=parts):
            return any(needs_content(p) for p in parts)
        case Negation(part=part):
            return needs_content(part)
