"""Query text → ``Query``: tokens, options, syntax tree, basic queries."""

from __future__ import annotations

from runner.errors import QueryError
from runner.query.build import FILE_FIELDS, LANG_FIELDS, REPO_FIELDS, basic_queries, refuse_field
from runner.query.lexer import Token, tokenize, unmatched_close
from runner.query.model import PatternType, Query
from runner.query.options import take_options
from runner.query.syntax import parse_tree

_EVALUATED_FIELDS = REPO_FIELDS | FILE_FIELDS | LANG_FIELDS | {"content"}
# Sourcegraph refuses these without type:commit or type:diff (validateCommitParameters).
_COMMIT_FIELDS = frozenset({"author", "before", "until", "after", "since", "message", "m", "msg"})
# Sourcegraph's ParseYesNoOnly, lowercased.
_INDEX_VALUES = frozenset({"y", "yes", "n", "no", "o", "only", "1", "0", "t", "f", "true", "false"})


def parse_query(text: str) -> Query:
    """Parse ``text``; raises ``QueryError`` naming what runner cannot evaluate.

    The error's ``unsupported`` says whether Sourcegraph would accept the
    query (runner alone cannot evaluate it) or rejects it too.
    """
    tokens = tokenize(text, slash_regexps=True)
    _refuse_unmatched_close(tokens)
    options, rest = take_options(tokens)
    if options.pattern_type in (PatternType.LITERAL, PatternType.REGEXP):
        # Only standard and keyword give /…/ its meaning; elsewhere a slash is a character.
        options, rest = take_options(tokenize(text, slash_regexps=False))
    # Refuse fields by name before any syntax error, whatever their place; a
    # malformed one before one that is merely not evaluated here.
    refused = [
        _field_error(t) for t in rest if t.kind == "field" and t.field not in _EVALUATED_FIELDS
    ]
    if refused:
        raise min(refused, key=lambda e: e.unsupported)  # the first malformed, if any
    if not rest:
        raise QueryError(
            f"the query {text.strip()!r} has no search pattern or filter",
            hint="add a pattern, or a filter like repo:NAME or file:PATH",
            unsupported=True,
        )
    return Query(text, options, basic_queries(parse_tree(rest), options))


def _refuse_unmatched_close(tokens: list[Token]) -> None:
    offset = unmatched_close(tokens)
    if offset is None:
        return
    raise QueryError(
        f") at column {offset + 1} closes no parenthesis",
        what=")",
        hint="remove it, write \\) or quote the pattern to search for a parenthesis",
        offset=offset,
    )


def _field_error(token: Token) -> QueryError:
    if token.field == "index" and token.value.lower() not in _INDEX_VALUES:
        return QueryError(
            f"unknown value in {token.text}",
            what=token.text,
            hint="index: takes yes, no or only (and runner searches every repository alike)",
            offset=token.pos,
        )
    if token.field in _COMMIT_FIELDS:
        name = token.text.split(":", 1)[0].lstrip("-")
        return QueryError(
            f"the filter {name}: applies to commit searches only (in {token.text})",
            what=f"{name}:",
            hint="Sourcegraph needs type:commit or type:diff for it, and runner searches "
            "files only; remove it",
            offset=token.pos,
        )
    return refuse_field(token)


def unsupported_reason(text: str) -> str | None:
    """None when ``text`` can be evaluated locally, else what stands in the way."""
    try:
        parse_query(text)
    except QueryError as exc:
        return exc.message
    return None
