"""The options that apply to the whole query: ``patterntype:``, ``case:``, ``count:``, …

They are taken out of the token list before parsing, wherever they stand, as
Sourcegraph does; what is left is patterns, filters and operators.
"""

from __future__ import annotations

from dataclasses import replace

from runner.errors import QUERY_DOCS_HINT as DOCS_HINT
from runner.errors import QueryError
from runner.query.lexer import Token
from runner.query.model import PatternType, QueryOptions

GLOBAL_FIELDS = frozenset(
    {"patterntype", "case", "count", "select", "type", "fork", "archived", "context"}
)
_BOOLEAN = {"yes": True, "true": True, "no": False, "false": False}


def _pattern_type(token: Token, value: str) -> PatternType:
    if value == "structural":
        raise QueryError(
            "structural search (patterntype:structural) is not supported locally",
            what="patterntype:structural",
            hint="find the repositories with a literal or regexp query, and keep the "
            "structural pattern for comby in the steps",
        )
    try:
        return PatternType(value)
    except ValueError:
        raise QueryError(
            f"unknown pattern type in {token.text}",
            what=token.text,
            hint="use patterntype:standard, literal, regexp or keyword",
        ) from None


def _count(token: Token, value: str) -> int | None:
    if value == "all":
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise QueryError(f"{token.text}: count: takes a positive number or all", what=token.text)


def _one_of(token: Token, value: str, allowed: tuple[str, ...], hint: str) -> None:
    if value not in allowed:
        raise QueryError(f"{token.text} is not supported locally", what=token.text, hint=hint)


def _apply(options: QueryOptions, token: Token, value: str) -> QueryOptions:
    """``options`` with ``token`` (a global field, its value lowercased) applied."""
    name = token.field
    if name == "patterntype":
        return replace(options, pattern_type=_pattern_type(token, value))
    if name == "case":
        if value not in _BOOLEAN:
            raise QueryError(f"{token.text}: case: takes yes or no", what=token.text)
        return replace(options, case_sensitive=_BOOLEAN[value])
    if name == "count":
        return replace(options, count=_count(token, value))
    if name in ("fork", "archived"):
        if value != "only" and value not in _BOOLEAN:
            raise QueryError(f"{token.text}: {name}: takes yes, no or only", what=token.text)
        # yes/no change nothing: local repositories are never forks or archived
        return replace(options, only_forks_or_archived=True) if value == "only" else options
    if name == "select":
        hint = "use select:repo, select:file or no select: — " + DOCS_HINT
        _one_of(token, value, ("repo", "file", "content"), hint)
        return replace(options, select_repo=True) if value == "repo" else options
    if name == "type":
        _one_of(token, value, ("path", "file"), "use type:file or type:path — " + DOCS_HINT)
        return replace(options, search_paths=True) if value == "path" else options
    if value != "global":  # context:
        raise QueryError(
            f"search contexts ({token.text}) are not supported locally",
            what=token.text,
            hint="use context:global or leave it out",
        )
    return options


def take_options(tokens: list[Token]) -> tuple[QueryOptions, list[Token]]:
    """The query's options, and the tokens that are not options."""
    options = QueryOptions()
    seen: dict[str, str] = {}
    rest: list[Token] = []
    for token in tokens:
        if token.kind != "field" or token.field not in GLOBAL_FIELDS:
            rest.append(token)
            continue
        if rest and rest[-1].kind == "not":
            raise QueryError(f"NOT cannot apply to {token.text}", what=token.text)
        name, value = token.field, token.value.strip().lower()
        if token.negated:
            raise QueryError(f"{token.text}: {name}: cannot be negated", what=token.text)
        previous = seen.setdefault(name, value)
        if previous != value:
            raise QueryError(
                f"{name}: is given twice with different values ({previous} and {token.value})",
                what=f"{name}:",
                hint="keep one of them",
            )
        options = _apply(options, token, value)
    return options, rest
