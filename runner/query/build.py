"""A syntax tree → a union of basic queries, its patterns compiled.

Filters may stand anywhere in the tree, but a basic query has one set of
filters: so OR and AND groups that hold filters are multiplied out (at most
``MAX_ALTERNATIVES`` basic queries), while groups of patterns alone become a
content expression. The pattern type decides how words become regexps.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from itertools import product
from typing import Literal

from runner.errors import QueryError
from runner.query.languages import LANGUAGES, find_language, language_path_regex
from runner.query.lexer import Token
from runner.query.model import (
    AllOf,
    AnyOf,
    BasicQuery,
    ContentExpr,
    FileFilter,
    Negation,
    PatternType,
    QueryOptions,
    RepoFilter,
    Target,
    Term,
)
from runner.query.syntax import Filter, Node, Not, Op, Pattern, has_filters

MAX_ALTERNATIVES = 64

REPO_FIELDS = frozenset({"repo", "r"})
FILE_FIELDS = frozenset({"file", "f", "path"})
LANG_FIELDS = frozenset({"lang", "l", "language"})

_SUPPORTED_REPO_PREDICATES: dict[str, Literal["has_path", "has_content"]] = {
    "has.path": "has_path",
    "contains.path": "has_path",
    "has.content": "has_content",
    "contains.content": "has_content",
}
_SUPPORTED_FILE_PREDICATES = frozenset({"has.content", "contains.content"})
# Sourcegraph's predicate names; a value like ``foo(bar)`` is a plain regexp.
_PREDICATE = re.compile(r"(has|contains)(\.[A-Za-z]+)*\((.*)\)\Z", re.DOTALL)
_PREDICATE_OPEN = re.compile(r"(has|contains)(\.[A-Za-z]+)*\(")

_Filter = RepoFilter | FileFilter
_Alternative = tuple[tuple[_Filter, ...], tuple[ContentExpr, ...]]


def refuse_field(token: Token) -> QueryError:
    """The error for a field Sourcegraph knows but runner does not evaluate."""
    name = token.text.split(":", 1)[0].lstrip("-")
    return QueryError(
        f"the filter {name}: is not supported locally (in {token.text})",
        what=f"{name}:",
        offset=token.pos,
        unsupported=True,
    )


def _unquote(value: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), value)


def _compile(source: str, text: str, flags: int, offset: int | None = None) -> re.Pattern[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Python's "possible nested set" notes
            return re.compile(source, flags)
    except (re.error, OverflowError) as exc:
        raise QueryError(
            f"{text} is not a valid regular expression ({exc})",
            what=text,
            hint="fix the regular expression (RE2 syntax, as in Sourcegraph)",
            offset=offset,
        ) from None


def _unclosed_predicate(token: Token) -> QueryError | None:
    """The error for ``has.path(…`` never closed, which Sourcegraph cannot read as a predicate."""
    if _PREDICATE_OPEN.match(token.value) is None:
        return None
    name = token.value[: token.value.index("(")]
    return QueryError(
        f"the predicate {token.field}:{name}( in {token.text} is never closed",
        what=f"{token.field}:{name}",
        hint="close its parenthesis, like repo:has.path(README)",
        offset=token.pos,
    )


def _predicate(token: Token) -> tuple[str, str] | None:
    """``(name, argument)`` of a ``has.…(…)`` value, lowercased name; None for a regexp."""
    match = _PREDICATE.match(token.value)
    if match is None:
        return None
    name = token.value[: token.value.index("(")]
    return name.lower(), match.group(3)


class _Builder:
    def __init__(self, options: QueryOptions) -> None:
        self.mode = options.pattern_type
        self.case_flags = 0 if options.case_sensitive else re.IGNORECASE
        self.target: Target = (
            "path"
            if options.search_paths
            else "either"
            if self.mode is PatternType.KEYWORD
            else "content"
        )

    def term(self, source: str, text: str, offset: int | None = None) -> Term:
        regex = _compile(source, text, re.MULTILINE | self.case_flags, offset)
        return Term(text, regex, self.target)

    # Patterns ---------------------------------------------------------------

    def joinable(self, token: Token) -> bool:
        if self.mode is PatternType.KEYWORD or token.kind == "field":
            return False
        if self.mode is PatternType.STANDARD or self.mode is PatternType.REGEXP:
            return token.kind in ("word", "quoted")
        return True

    def run_term(self, tokens: list[Token]) -> Term:
        """One term from adjacent pattern tokens, joined as the pattern type says."""
        text = " ".join(t.text for t in tokens)
        at = tokens[0].pos
        if self.mode is PatternType.REGEXP:
            pieces = [t.text if t.kind == "word" else re.escape(_unquote(t.value)) for t in tokens]
            if len(pieces) == 1:
                return self.term(pieces[0], text, at)
            # Sourcegraph's regexp mode: a space between patterns matches anything.
            return self.term("(?:.*?)".join(f"(?:{p})" for p in pieces), text, at)
        if self.mode is PatternType.KEYWORD:
            (token,) = tokens
            if token.kind == "slash":
                return self.term(token.value, token.text, at)
            if token.kind == "quoted":
                return self.term(re.escape(_unquote(token.value)), token.text)
            return self.term(re.escape(token.text), token.text)
        if len(tokens) == 1 and tokens[0].kind == "slash":
            return self.term(tokens[0].value, tokens[0].text, at)
        # standard and literal: the words as written, quotes included, one space apart
        return self.term(re.escape(text), text)

    def content_field(self, token: Token) -> ContentExpr:
        if self.mode is PatternType.REGEXP:
            term = self.term(token.value, token.text, token.pos)
        else:
            term = self.term(re.escape(token.value), token.text)
        return Negation(term) if token.negated else term

    def pattern_exprs(self, parts: Sequence[Node]) -> list[ContentExpr]:
        """Content of filter-free juxtaposed parts, joining runs of words."""
        out: list[ContentExpr] = []
        run: list[Token] = []
        for part in parts:
            if isinstance(part, Pattern) and self.joinable(part.token):
                run.append(part.token)
                continue
            if run:
                out.append(self.run_term(run))
                run = []
            out.append(self.content(part))
        if run:
            out.append(self.run_term(run))
        return out

    def content(self, node: Node) -> ContentExpr:
        match node:
            case Pattern(token=token):
                if token.kind == "field":
                    return self.content_field(token)
                return self.run_term([token])
            case Not(node=inner):
                return Negation(self.content(inner))
            case Op(kind="or", parts=parts):
                return AnyOf(tuple(self.content(p) for p in parts))
            case Op(kind="and", parts=parts):
                return AllOf(tuple(self.content(p) for p in parts))
            case Op(parts=parts):
                exprs = self.pattern_exprs(parts)
                return exprs[0] if len(exprs) == 1 else AllOf(tuple(exprs))
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    # Filters ----------------------------------------------------------------

    def filter(self, token: Token, negated: bool) -> _Filter:
        name, value = token.field, token.value
        if not value:
            raise QueryError(
                f"{token.text} needs a value",
                what=token.text,
                hint=f"write {token.text}VALUE, or remove it",
                offset=token.pos,
            )
        if name in REPO_FIELDS:
            return self.repo_filter(token, negated)
        if name in FILE_FIELDS:
            return self.file_filter(token, negated)
        if name in LANG_FIELDS:
            language = find_language(value)
            if language is None:
                # Sourcegraph knows hundreds of languages (go-enry); runner knows fewer,
                # so an unknown name may be valid there.
                known = ", ".join(lang.name for lang in LANGUAGES)
                raise QueryError(
                    f"unknown language in {token.text}",
                    what=token.text,
                    hint=f"use one of: {known}",
                    offset=token.pos,
                    unsupported=True,
                )
            regex = _compile(language_path_regex(language), token.text, 0)
            return FileFilter("path", regex, negated, token.text)
        raise refuse_field(token)

    def repo_filter(self, token: Token, negated: bool) -> RepoFilter:
        predicate = _predicate(token)
        if predicate is not None:
            name, argument = predicate
            kind = _SUPPORTED_REPO_PREDICATES.get(name)
            if kind is None:
                raise QueryError(
                    f"the predicate repo:{name}(…) is not supported locally (in {token.text})",
                    what=f"repo:{name}",
                    offset=token.pos,
                    unsupported=True,
                )
            flags = self.case_flags | (re.MULTILINE if kind == "has_content" else 0)
            regex = _compile(argument, token.text, flags, token.pos)
            return RepoFilter(kind, regex, negated, token.text)
        if (unclosed := _unclosed_predicate(token)) is not None:
            raise unclosed
        if re.search(r"(?<!\\)@", token.value):
            raise QueryError(
                f"searching another revision with repo:…@revision ({token.text}) "
                "is not supported locally",
                what="repo:…@revision",
                hint="runner searches the revision it checked out; drop the @revision",
                offset=token.pos,
                unsupported=True,
            )
        # Repository names compare case-insensitively, as in Sourcegraph.
        regex = _compile(token.value, token.text, re.IGNORECASE, token.pos)
        return RepoFilter("name", regex, negated, token.text)

    def file_filter(self, token: Token, negated: bool) -> FileFilter:
        predicate = _predicate(token)
        if predicate is not None:
            name, argument = predicate
            if name not in _SUPPORTED_FILE_PREDICATES:
                raise QueryError(
                    f"the predicate file:{name}(…) is not supported locally (in {token.text})",
                    what=f"file:{name}",
                    offset=token.pos,
                    unsupported=True,
                )
            regex = _compile(argument, token.text, self.case_flags | re.MULTILINE, token.pos)
            return FileFilter("has_content", regex, negated, token.text)
        if (unclosed := _unclosed_predicate(token)) is not None:
            raise unclosed
        regex = _compile(token.value, token.text, self.case_flags, token.pos)
        return FileFilter("path", regex, negated, token.text)

    # Expansion into basic queries -------------------------------------------

    def expand(self, node: Node) -> list[_Alternative]:
        if not has_filters(node):
            return [((), (self.content(node),))]
        match node:
            case Filter(token=token):
                return [((self.filter(token, token.negated),), ())]
            case Not(node=Filter(token=token)):
                return [((self.filter(token, not token.negated),), ())]
            case Not(node=Not(node=inner)):
                return self.expand(inner)
            case Not():
                # Sourcegraph refuses any expression after NOT.
                raise QueryError(
                    "NOT (…) around a group that holds filters cannot be evaluated",
                    what="NOT (…)",
                    hint="negate each filter instead, like -repo:NAME or -file:PATH",
                )
            case Op(kind="or", parts=parts):
                return [alt for part in parts for alt in self.expand(part)]
            case Op(kind="and", parts=parts):
                return _product([self.expand(p) for p in parts])
            case Op(parts=parts):
                return _product(self.concat_choices(parts))
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    def concat_choices(self, parts: Sequence[Node]) -> list[list[_Alternative]]:
        # Filters between words do not break the words apart: in
        # ``foo repo:x bar`` the pattern is ``foo bar``.
        words = [p for p in parts if not has_filters(p)]
        choices: list[list[_Alternative]] = [[((), (expr,))] for expr in self.pattern_exprs(words)]
        choices += [self.expand(p) for p in parts if has_filters(p)]
        return choices


def _product(choices: list[list[_Alternative]]) -> list[_Alternative]:
    total = 1
    for options in choices:
        total *= len(options)
    if total > MAX_ALTERNATIVES:
        raise QueryError(
            f"the query expands to {total} alternatives (at most {MAX_ALTERNATIVES})",
            what="OR",
            hint="simplify the OR groups that hold filters",
            unsupported=True,
        )
    combined: list[_Alternative] = []
    for picks in product(*choices):
        filters = tuple(f for fs, _ in picks for f in fs)
        contents = tuple(c for _, cs in picks for c in cs)
        combined.append((filters, contents))
    return combined


def _basic(alternative: _Alternative) -> BasicQuery:
    filters, contents = alternative
    content: ContentExpr | None
    if not contents:
        content = None
    elif len(contents) == 1:
        content = contents[0]
    else:
        content = AllOf(contents)
    return BasicQuery(
        repo_filters=tuple(f for f in filters if isinstance(f, RepoFilter)),
        file_filters=tuple(f for f in filters if isinstance(f, FileFilter)),
        content=content,
    )


def basic_queries(node: Node, options: QueryOptions) -> tuple[BasicQuery, ...]:
    """The union of basic queries ``node`` means, compiled under ``options``."""
    return tuple(_basic(alt) for alt in _Builder(options).expand(node))
