"""``repositoriesMatchingQuery``, evaluated locally over git repositories.

The subset of Sourcegraph's query language we evaluate is documented for
users in ``docs/query-language.md``; anything outside it is refused with a
``QueryError`` that names the construct, never guessed at.

The modules follow the data flow:

- ``lexer``: text → tokens, the way Sourcegraph's scanner splits them;
- ``options``: the options of the whole query, taken out of the tokens;
- ``syntax``: tokens → a tree (hoisting, precedence, groups);
- ``build``: tree → a union of basic queries with compiled patterns
  (``languages`` says which files a ``lang:`` covers);
- ``parse``: the three above in a row, ``parse_query``;
- ``model``: what a parsed query is made of (``QueryError`` is in ``runner.errors``);
- ``evaluate``: a ``Query`` over repositories → matches, reading files
  through the ``TreeReader`` seam of ``trees`` (git, or memory);
- ``hints``: why a query matched nothing, for the warning that says so.

A ``QueryError``'s ``unsupported`` tells a query Sourcegraph would accept
(runner alone cannot evaluate it: a warning at validation) from a malformed
one (an error everywhere).
"""

from __future__ import annotations

from runner.errors import QueryError
from runner.query.evaluate import evaluate_query
from runner.query.model import LocalRepository, PatternType, Query, QueryMatch, QueryOptions
from runner.query.parse import parse_query, unsupported_reason
from runner.query.trees import GitTreeReader, MemoryTreeReader, TreeReader

__all__ = [
    "GitTreeReader",
    "LocalRepository",
    "MemoryTreeReader",
    "PatternType",
    "Query",
    "QueryError",
    "QueryMatch",
    "QueryOptions",
    "TreeReader",
    "evaluate_query",
    "parse_query",
    "unsupported_reason",
]
