"""Why a query matched nothing: the likely causes, for a hint under the warning.

Called only after a query matched no repository, so it may read trees again:
each cause is checked against the same repositories and revisions the
evaluation used. Causes, most likely first:

- a ``repo:`` filter that matches no repository name runner knows;
- quotes in a ``standard`` (or ``literal``) pattern, which are characters to
  find there, not delimiters (``"import os"`` looks for the quotes too);
- ``case:yes``;
- a ``file:`` or ``lang:`` filter that matches no file of the repositories
  left after the ``repo:`` filters.
"""

from __future__ import annotations

from collections.abc import Sequence

from runner.query.evaluate import name_passes
from runner.query.lexer import tokenize
from runner.query.model import FileFilter, LocalRepository, PatternType, Query
from runner.query.options import take_options
from runner.query.trees import GitTreeReader, TreeReader

NAMES_SHOWN = 5


def known_names(names: Sequence[str], limit: int) -> str:
    """``a, b, c (and N more)``: the first ``limit`` of ``names``, sorted."""
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    rest = len(ordered) - limit
    return f"{shown} (and {rest} more)" if rest > 0 else shown


def no_match_reasons(
    query: Query, repos: Sequence[LocalRepository], *, reader: TreeReader | None = None
) -> list[str]:
    """The likely reasons ``query`` matched none of ``repos``, one sentence each."""
    if not repos:
        return ["there are no repositories to search: pass --repos-root DIR or --repo PATH"]
    reasons = _repo_name_reasons(query, repos)
    reasons += _quote_reasons(query)
    if query.options.case_sensitive:
        reasons.append("case:yes makes every pattern case-sensitive; remove it to match any case")
    reasons += _file_filter_reasons(query, repos, reader or GitTreeReader())
    if not reasons:
        searched = len(_searched(query, repos))
        reasons.append(
            f"no file's path or content matched the patterns in the {searched} "
            f"repositor{'y' if searched == 1 else 'ies'} searched"
        )
    return reasons


def _repo_name_reasons(query: Query, repos: Sequence[LocalRepository]) -> list[str]:
    names = [r.name for r in repos]
    out: list[str] = []
    seen: set[str] = set()
    for basic in query.basics:
        for f in basic.repo_filters:
            if f.kind != "name" or f.negated or f.text in seen:
                continue
            seen.add(f.text)
            if not any(f.regex.search(name) for name in names):
                out.append(
                    f"{f.text} matches no repository name; runner knows "
                    f"{known_names(names, NAMES_SHOWN)}"
                )
    return out


def _quote_reasons(query: Query) -> list[str]:
    mode = query.options.pattern_type
    if mode not in (PatternType.STANDARD, PatternType.LITERAL):
        return []
    slash = mode is PatternType.STANDARD
    _, rest = take_options(tokenize(query.text, slash_regexps=slash))
    quoted = [t.text for t in rest if t.kind == "quoted"]
    if not quoted:
        return []
    return [
        f"quotes are literal in {mode} patterns: {quoted[0]} searches for the quote "
        "characters too; remove the quotes, or add patterntype:keyword or patterntype:regexp "
        "to make them delimiters"
    ]


def _searched(query: Query, repos: Sequence[LocalRepository]) -> list[LocalRepository]:
    return [r for r in repos if any(name_passes(b, r.name) for b in query.basics)]


def _file_filter_reasons(
    query: Query, repos: Sequence[LocalRepository], reader: TreeReader
) -> list[str]:
    filters: dict[str, FileFilter] = {}
    for basic in query.basics:
        for f in basic.file_filters:
            if f.kind == "path" and not f.negated:
                filters.setdefault(f.text, f)
    searched = _searched(query, repos)
    if not filters or not searched:
        return []
    unmatched = dict(filters)
    for repo in searched:
        with reader.open(repo) as tree:
            for entry in tree.entries():
                for text in [t for t, f in unmatched.items() if f.regex.search(entry.path)]:
                    del unmatched[text]
                if not unmatched:
                    return []
    count = len(searched)
    where = f"the {count} repositor{'y' if count == 1 else 'ies'} searched"
    return [f"{text} matches no file in {where}" for text in unmatched]
