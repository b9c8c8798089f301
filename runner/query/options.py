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
# Sourcegraph's parseBool: y/yes/n/no and what Go's strconv.ParseBool reads (values lowercased).
_BOOLEAN = {
    **dict.fromkeys(("y", "yes", "true", "t", "1"), True),
    **dict.fromkeys(("n", "no", "false", "f", "0"), False),
}
_PATTERN_ALIASES = {"regex": PatternType.REGEXP}
# Pattern types Sourcegraph knows that runner does not evaluate.
_OTHER_PATTERN_TYPES = frozenset({"lucky", "newstandardrc1"})
# Sourcegraph's select paths (internal/search/filter/select.go): valid there, but
# only repo, file and content are evaluated here.
_SYMBOL_KINDS = (
    *("file", "module", "namespace", "package", "class", "method", "property", "field"),
    *("constructor", "enum", "interface", "function", "variable", "constant", "string"),
    *("number", "boolean", "array", "object", "key", "null", "enum-member", "struct"),
    *("event", "operator", "type-parameter"),
)
_SELECT_PATHS = frozenset(
    {"repo", "file", "content", "symbol", "commit", "commit.diff.added", "commit.diff.removed"}
    | {"file.directory", "file.path", "file.owners", "owner", "owner.person", "owner.team"}
    | {f"symbol.{kind}" for kind in _SYMBOL_KINDS}
)
# Sourcegraph's result types (the web client's values for type:).
_TYPES = frozenset({"file", "path", "repo", "symbol", "diff", "commit"})


def _not_here(token: Token, message: str, hint: str, what: str | None = None) -> QueryError:
    """The error for an option Sourcegraph accepts and runner does not evaluate."""
    return QueryError(
        message, what=what or token.text, hint=hint, offset=token.pos, unsupported=True
    )


def _pattern_type(token: Token, value: str) -> PatternType:
    if value == "structural":
        raise _not_here(
            token,
            "structural search (patterntype:structural) is not supported locally",
            "find the repositories with a literal or regexp query, and keep the "
            "structural pattern for comby in the steps",
            what="patterntype:structural",
        )
    if value in _OTHER_PATTERN_TYPES:
        raise _not_here(
            token,
            f"{token.text} is not supported locally",
            "use patterntype:standard, literal, regexp or keyword",
        )
    try:
        return _PATTERN_ALIASES.get(value) or PatternType(value)
    except ValueError:
        raise QueryError(
            f"unknown pattern type in {token.text}",
            what=token.text,
            hint="use patterntype:standard, literal, regexp or keyword",
            offset=token.pos,
        ) from None


def _count(token: Token, value: str) -> int | None:
    if value == "all":
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise QueryError(
        f"{token.text}: count: takes a positive number or all",
        what=token.text,
        hint="write count:N with N above 0, or count:all",
        offset=token.pos,
    )


def _one_of(
    token: Token, value: str, allowed: tuple[str, ...], known: frozenset[str], hint: str
) -> None:
    """Refuse a value runner does not evaluate: unsupported if Sourcegraph ``known`` it."""
    if value in allowed:
        return
    if value in known:
        raise _not_here(token, f"{token.text} is not supported locally", hint)
    raise QueryError(f"unknown value in {token.text}", what=token.text, hint=hint, offset=token.pos)


def _apply(options: QueryOptions, token: Token, value: str) -> QueryOptions:
    """``options`` with ``token`` (a global field, its value lowercased) applied."""
    name = token.field
    if name == "patterntype":
        return replace(options, pattern_type=_pattern_type(token, value))
    if name == "case":
        if value not in _BOOLEAN:
            raise QueryError(
                f"{token.text}: case: takes yes or no",
                what=token.text,
                hint="write case:yes or case:no",
                offset=token.pos,
            )
        return replace(options, case_sensitive=_BOOLEAN[value])
    if name == "count":
        return replace(options, count=_count(token, value))
    if name in ("fork", "archived"):
        only = value in ("only", "o")
        if not only and value not in _BOOLEAN:
            raise QueryError(
                f"{token.text}: {name}: takes yes, no or only",
                what=token.text,
                hint=f"write {name}:yes, {name}:no or {name}:only",
                offset=token.pos,
            )
        # yes/no change nothing: local repositories are never forks or archived
        return replace(options, only_forks_or_archived=True) if only else options
    if name == "select":
        hint = "use select:repo, select:file or no select: — " + DOCS_HINT
        _one_of(token, value, ("repo", "file", "content"), _SELECT_PATHS, hint)
        return replace(options, select_repo=True) if value == "repo" else options
    if name == "type":
        _one_of(token, value, ("path", "file"), _TYPES, "use type:file or type:path — " + DOCS_HINT)
        return replace(options, search_paths=True) if value == "path" else options
    if value != "global":  # context:
        raise _not_here(
            token,
            f"search contexts ({token.text}) are not supported locally",
            "use context:global or leave it out",
        )
    return options


def take_options(tokens: list[Token]) -> tuple[QueryOptions, list[Token]]:
    """The query's options, and the tokens that are not options.

    An option runner does not evaluate is refused only after the others are
    checked, so a malformed one later in the query is the error reported.
    """
    options = QueryOptions()
    seen: dict[str, str] = {}
    rest: list[Token] = []
    unsupported: QueryError | None = None
    for token in tokens:
        if token.kind != "field" or token.field not in GLOBAL_FIELDS:
            rest.append(token)
            continue
        name, value = token.field, token.value.strip().lower()
        if token.negated or (rest and rest[-1].kind == "not"):
            raise QueryError(
                f"{token.text}: {name}: cannot be negated",
                what=token.text,
                hint=f"remove the - or NOT before {name}:",
                offset=token.pos,
            )
        previous = seen.setdefault(name, value)
        if previous != value:
            raise QueryError(
                f"{name}: is given twice with different values ({previous} and {token.value})",
                what=f"{name}:",
                hint="keep one of them",
                offset=token.pos,
            )
        try:
            options = _apply(options, token, value)
        except QueryError as exc:
            if not exc.unsupported:
                raise
            unsupported = unsupported or exc
    if unsupported is not None:
        raise unsupported
    return options, rest
