"""Query text → ``Query``: tokens, options, syntax tree, basic queries."""

from __future__ import annotations

from runner.errors import QueryError
from runner.query.build import FILE_FIELDS, LANG_FIELDS, REPO_FIELDS, basic_queries, refuse_field
from runner.query.lexer import tokenize
from runner.query.model import PatternType, Query
from runner.query.options import take_options
from runner.query.syntax import parse_tree

_EVALUATED_FIELDS = REPO_FIELDS | FILE_FIELDS | LANG_FIELDS | {"content"}


def parse_query(text: str) -> Query:
    """Parse ``text``; raises ``QueryError`` naming what runner cannot evaluate."""
    options, rest = take_options(tokenize(text, slash_regexps=True))
    if options.pattern_type in (PatternType.LITERAL, PatternType.REGEXP):
        # Only standard and keyword give /…/ its meaning; elsewhere a slash is a character.
        options, rest = take_options(tokenize(text, slash_regexps=False))
    # Refuse fields by name before any syntax error, whatever their place.
    for token in rest:
        if token.kind == "field" and token.field not in _EVALUATED_FIELDS:
            raise refuse_field(token)
    if not rest:
        raise QueryError(
            f"the query {text.strip()!r} has no search pattern or filter",
            hint="add a pattern, or a filter like repo:NAME or file:PATH",
        )
    return Query(text, options, basic_queries(parse_tree(rest), options))


def unsupported_reason(text: str) -> str | None:
    """None when ``text`` can be evaluated locally, else what stands in the way."""
    try:
        parse_query(text)
    except QueryError as exc:
        return exc.message
    return None
