"""``repositoriesMatchingQuery``, evaluated locally over git repositories.

The subset of Sourcegraph's query language we evaluate is documented for
users in ``docs/query-language.md``; anything outside it is refused with a
``QueryError`` that names the construct, never guessed at.

Parsing goes: tokens (``query_lex``) → options that apply to the whole query
are taken out → Sourcegraph's hoisting heuristic → a tree with the usual
precedence (OR < AND < juxtaposition, NOT binding tightest) → a union of basic
queries (``query_ast``). Evaluation lives in ``query_eval``, file access
behind the ``TreeReader`` seam in ``query_git``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Literal

from runner.errors import RunnerError
from runner.query_ast import (
    AllOf,
    AnyOf,
    BasicQuery,
    ContentExpr,
    FileFilter,
    LocalRepository,
    Negation,
    PatternType,
    Query,
    QueryMatch,
    RepoFilter,
    Target,
    Term,
)
from runner.query_eval import evaluate
from runner.query_git import GitTreeReader, MemoryTreeReader, TreeReader
from runner.query_langs import LANGUAGES, find_language, language_path_regex
from runner.query_lex import Token, tokenize

__all__ = [
    "GitTreeReader",
    "LocalRepository",
    "MemoryTreeReader",
    "PatternType",
    "Query",
    "QueryError",
    "QueryMatch",
    "TreeReader",
    "evaluate_query",
    "parse_query",
    "unsupported_reason",
]

DOCS_HINT = "see docs/query-language.md for the part of the query language runner evaluates"
MAX_ALTERNATIVES = 64
MAX_NESTING = 50


class QueryError(RunnerError):
    """A query runner cannot evaluate.

    ``what`` names the construct at fault, like ``patterntype:structural``,
    ``repo:has.topic`` or ``rev:`` (None when the query is merely empty).
    """

    def __init__(self, message: str, *, what: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or DOCS_HINT)
        self.what = what


# Options for the whole query. The rest of the fields Sourcegraph knows but we
# do not evaluate are refused by name.
_GLOBAL_FIELDS = frozenset(
    {"patterntype", "case", "count", "select", "type", "fork", "archived", "context"}
)
_REPO_FIELDS = frozenset({"repo", "r"})
_FILE_FIELDS = frozenset({"file", "f", "path"})
_LANG_FIELDS = frozenset({"lang", "l", "language"})

_SUPPORTED_REPO_PREDICATES: dict[str, Literal["has_path", "has_content"]] = {
    "has.path": "has_path",
    "contains.path": "has_path",
    "has.content": "has_content",
    "contains.content": "has_content",
}
_SUPPORTED_FILE_PREDICATES = frozenset({"has.content", "contains.content"})
# Sourcegraph's predicate names; a value like ``foo(bar)`` is a plain regexp.
_PREDICATE = re.compile(r"(has|contains)(\.[A-Za-z]+)*\((.*)\)\Z", re.DOTALL)
_BOOLEAN = {"yes": True, "true": True, "no": False, "false": False}


@dataclass
class _Options:
    pattern_type: PatternType = PatternType.STANDARD
    case_sensitive: bool = False
    count: int | None = None
    select_repo: bool = False
    search_paths: bool = False
    only_forks_or_archived: bool = False
    seen: dict[str, str] = field(default_factory=dict)


# --- options ---------------------------------------------------------------


def _refuse_field(token: Token) -> QueryError:
    name = token.text.split(":", 1)[0].lstrip("-")
    return QueryError(
        f"the filter {name}: is not supported locally (in {token.text})", what=f"{name}:"
    )


def _apply_option(options: _Options, token: Token) -> None:
    name, value = token.field, token.value
    lowered = value.strip().lower()
    if token.negated:
        raise QueryError(f"{token.text}: {name}: cannot be negated", what=token.text)
    previous = options.seen.get(name)
    if previous is not None and previous != lowered:
        raise QueryError(
            f"{name}: is given twice with different values ({previous} and {value})",
            what=f"{name}:",
            hint="keep one of them",
        )
    options.seen[name] = lowered
    if name == "patterntype":
        if lowered == "structural":
            raise QueryError(
                "structural search (patterntype:structural) is not supported locally",
                what="patterntype:structural",
                hint="find the repositories with a literal or regexp query, and keep the "
                "structural pattern for comby in the steps",
            )
        try:
            options.pattern_type = PatternType(lowered)
        except ValueError:
            raise QueryError(
                f"unknown pattern type in {token.text}",
                what=token.text,
                hint="use patterntype:standard, literal, regexp or keyword",
            ) from None
    elif name == "case":
        if lowered not in _BOOLEAN:
            raise QueryError(f"{token.text}: case: takes yes or no", what=token.text)
        options.case_sensitive = _BOOLEAN[lowered]
    elif name == "count":
        if lowered == "all":
            options.count = None
        elif lowered.isdigit() and int(lowered) > 0:
            options.count = int(lowered)
        else:
            raise QueryError(
                f"{token.text}: count: takes a positive number or all", what=token.text
            )
    elif name in ("fork", "archived"):
        if lowered == "only":
            options.only_forks_or_archived = True
        elif lowered not in _BOOLEAN:
            raise QueryError(f"{token.text}: {name}: takes yes, no or only", what=token.text)
    elif name == "select":
        if lowered == "repo":
            options.select_repo = True
        elif lowered not in ("file", "content"):
            raise QueryError(
                f"{token.text} is not supported locally",
                what=token.text,
                hint="use select:repo, select:file or no select: — " + DOCS_HINT,
            )
    elif name == "type":
        if lowered == "path":
            options.search_paths = True
        elif lowered != "file":
            raise QueryError(
                f"{token.text} is not supported locally",
                what=token.text,
                hint="use type:file or type:path — " + DOCS_HINT,
            )
    elif name == "context" and lowered != "global":
        raise QueryError(
            f"search contexts ({token.text}) are not supported locally",
            what=token.text,
            hint="use context:global or leave it out",
        )


def _take_options(tokens: list[Token]) -> tuple[_Options, list[Token]]:
    options = _Options()
    rest: list[Token] = []
    for token in tokens:
        if token.kind == "field" and token.field in _GLOBAL_FIELDS:
            if rest and rest[-1].kind == "not":
                raise QueryError(f"NOT cannot apply to {token.text}", what=token.text)
            _apply_option(options, token)
        else:
            rest.append(token)
    return options, rest


# --- syntax tree -----------------------------------------------------------


@dataclass(frozen=True)
class _Pat:
    token: Token


@dataclass(frozen=True)
class _Flt:
    token: Token


@dataclass(frozen=True)
class _Not:
    node: _Node


@dataclass(frozen=True)
class _Op:
    kind: str  # "and", "or", "concat"
    parts: tuple[_Node, ...]


_Node = _Pat | _Flt | _Not | _Op


def _is_filter(token: Token) -> bool:
    return token.kind == "field" and token.field != "content"


def _hoist(tokens: list[Token]) -> list[Token]:
    """Sourcegraph's hoisting: ``repo:x a or b file:y`` means ``repo:x (a or b) file:y``.

    Without it OR would bind looser than the filters beside it. It applies
    when the top level reads: filters, then a pattern expression with a
    top-level AND/OR and no filters in it, then filters.
    """
    units: list[list[Token]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "lparen":
            depth, j = 0, i
            while j < len(tokens):
                depth += {"lparen": 1, "rparen": -1}.get(tokens[j].kind, 0)
                if depth == 0:
                    break
                j += 1
            if depth != 0:
                return tokens  # unbalanced: the parser says so
            units.append(tokens[i : j + 1])
            i = j + 1
        elif token.kind == "not" and i + 1 < len(tokens) and _is_filter(tokens[i + 1]):
            units.append(tokens[i : i + 2])
            i += 2
        else:
            units.append([token])
            i += 1

    def is_filter_unit(unit: list[Token]) -> bool:
        return _is_filter(unit[-1]) and (len(unit) == 1 or unit[0].kind == "not")

    if not any(len(u) == 1 and u[0].kind in ("and", "or") for u in units):
        return tokens
    start, end = 0, len(units)
    while start < end and is_filter_unit(units[start]):
        start += 1
    while end > start and is_filter_unit(units[end - 1]):
        end -= 1
    middle = units[start:end]
    if not middle or middle[0][0].kind in ("and", "or") or middle[-1][0].kind in ("and", "or"):
        return tokens
    if any(_is_filter(t) for unit in middle for t in unit):
        return tokens
    if start == 0 and end == len(units):
        return tokens
    lparen = Token("lparen", "(", middle[0][0].pos)
    rparen = Token("rparen", ")", middle[-1][-1].pos)
    inner = [t for unit in middle for t in unit]
    before = [t for unit in units[:start] for t in unit]
    after = [t for unit in units[end:] for t in unit]
    return [*before, lparen, *inner, rparen, *after]


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.depth = 0
        self.i = 0

    def _peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _error(self, token: Token, problem: str) -> QueryError:
        return QueryError(
            f"{token.text} at column {token.pos + 1} {problem}",
            what=token.text,
            hint="check the query's operators and parentheses — " + DOCS_HINT,
        )

    def parse(self) -> _Node:
        node = self._binary("or")
        token = self._peek()
        if token is not None:  # only an unmatched operator can be left here
            raise self._error(token, "needs a search term or filter on each side")
        return node

    def _binary(self, kind: str) -> _Node:
        """``kind`` is "or" (operands are AND expressions) or "and" (juxtapositions)."""

        def parse() -> _Node:
            return self._binary("and") if kind == "or" else self._concat()

        parts = [parse()]
        while (token := self._peek()) is not None and token.kind == kind:
            self.i += 1
            if (nxt := self._peek()) is None or nxt.kind in ("and", "or", "rparen"):
                raise self._error(token, "needs a search term or filter on each side")
            parts.append(parse())
        return parts[0] if len(parts) == 1 else _Op(kind, tuple(parts))

    def _concat(self) -> _Node:
        parts: list[_Node] = []
        while (token := self._peek()) is not None and token.kind not in ("and", "or", "rparen"):
            parts.append(self._unit())
        if not parts:
            token = self._peek() or (self.tokens[self.i - 1] if self.i else None)
            if token is None:
                raise QueryError("the query is empty", hint="write a search pattern or filter")
            raise self._error(token, "needs a search term or filter on each side")
        return parts[0] if len(parts) == 1 else _Op("concat", tuple(parts))

    def _unit(self) -> _Node:
        token = self.tokens[self.i]
        self.i += 1
        if token.kind == "not":
            negations = 1
            while (nxt := self._peek()) is not None and nxt.kind == "not":
                negations += 1
                self.i += 1
            if nxt is None or nxt.kind in ("and", "or", "rparen"):
                raise self._error(token, "must be followed by a search term, filter or group")
            inner = self._unit()
            return _Not(inner) if negations % 2 else inner
        if token.kind == "lparen":
            if (nxt := self._peek()) is None:
                raise self._error(token, "is never closed")
            if nxt.kind == "rparen":
                raise self._error(token, "opens an empty group")
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self._error(token, f"nests groups deeper than {MAX_NESTING}")
            node = self._binary("or")
            self.depth -= 1
            close = self._peek()
            if close is None or close.kind != "rparen":
                raise self._error(token, "is never closed")
            self.i += 1
            return node
        if _is_filter(token):
            return _Flt(token)
        return _Pat(token)


# --- basic queries ---------------------------------------------------------


def _has_filters(node: _Node) -> bool:
    match node:
        case _Flt():
            return True
        case _Pat():
            return False
        case _Not(node=inner):
            return _has_filters(inner)
        case _Op(parts=parts):
            return any(_has_filters(p) for p in parts)


_Filter = RepoFilter | FileFilter
_Alternative = tuple[tuple[_Filter, ...], tuple[ContentExpr, ...]]


def _unquote(value: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), value)


class _Builder:
    def __init__(self, options: _Options) -> None:
        self.options = options
        self.mode = options.pattern_type
        self.case_flags = 0 if options.case_sensitive else re.IGNORECASE
        self.target: Target = (
            "path"
            if options.search_paths
            else "either"
            if self.mode is PatternType.KEYWORD
            else "content"
        )

    def compile(self, source: str, text: str, flags: int) -> re.Pattern[str]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Python's "possible nested set" notes
                return re.compile(source, flags)
        except (re.error, OverflowError) as exc:
            raise QueryError(
                f"{text} is not a valid regular expression ({exc})",
                what=text,
                hint="fix the regular expression (RE2 syntax, as in Sourcegraph)",
            ) from None

    def term(self, source: str, text: str) -> Term:
        regex = self.compile(source, text, re.MULTILINE | self.case_flags)
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
        if self.mode is PatternType.REGEXP:
            pieces = [t.text if t.kind == "word" else re.escape(_unquote(t.value)) for t in tokens]
            if len(pieces) == 1:
                return self.term(pieces[0], text)
            # Sourcegraph's regexp mode: a space between patterns matches anything.
            return self.term("(?:.*?)".join(f"(?:{p})" for p in pieces), text)
        if self.mode is PatternType.KEYWORD:
            (token,) = tokens
            if token.kind == "slash":
                return self.term(token.value, token.text)
            if token.kind == "quoted":
                return self.term(re.escape(_unquote(token.value)), token.text)
            return self.term(re.escape(token.text), token.text)
        if len(tokens) == 1 and tokens[0].kind == "slash":
            return self.term(tokens[0].value, tokens[0].text)
        # standard and literal: the words as written, quotes included, one space apart
        return self.term(re.escape(text), text)

    def content_field(self, token: Token) -> ContentExpr:
        if self.mode is PatternType.REGEXP:
            term = self.term(token.value, token.text)
        else:
            term = self.term(re.escape(token.value), token.text)
        return Negation(term) if token.negated else term

    def pattern_exprs(self, parts: Sequence[_Node]) -> list[ContentExpr]:
        """Content of filter-free juxtaposed parts, joining runs of words."""
        out: list[ContentExpr] = []
        run: list[Token] = []
        for part in parts:
            if isinstance(part, _Pat) and self.joinable(part.token):
                run.append(part.token)
                continue
            if run:
                out.append(self.run_term(run))
                run = []
            out.append(self.content(part))
        if run:
            out.append(self.run_term(run))
        return out

    def content(self, node: _Node) -> ContentExpr:
        match node:
            case _Pat(token=token):
                if token.kind == "field":
                    return self.content_field(token)
                return self.run_term([token])
            case _Not(node=inner):
                return Negation(self.content(inner))
            case _Op(kind="or", parts=parts):
                return AnyOf(tuple(self.content(p) for p in parts))
            case _Op(kind="and", parts=parts):
                return AllOf(tuple(self.content(p) for p in parts))
            case _Op(parts=parts):
                exprs = self.pattern_exprs(parts)
                return exprs[0] if len(exprs) == 1 else AllOf(tuple(exprs))
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    # Filters ----------------------------------------------------------------

    def filter(self, token: Token, negated: bool) -> _Filter:
        name, value = token.field, token.value
        if not value:
            raise QueryError(f"{token.text} needs a value", what=token.text)
        if name in _REPO_FIELDS:
            return self.repo_filter(token, negated)
        if name in _FILE_FIELDS:
            return self.file_filter(token, negated)
        if name in _LANG_FIELDS:
            language = find_language(value)
            if language is None:
                known = ", ".join(lang.name for lang in LANGUAGES)
                raise QueryError(
                    f"unknown language in {token.text}",
                    what=token.text,
                    hint=f"use one of: {known}",
                )
            regex = self.compile(language_path_regex(language), token.text, 0)
            return FileFilter("path", regex, negated, token.text)
        raise _refuse_field(token)

    def predicate(self, token: Token) -> tuple[str, str] | None:
        match = _PREDICATE.match(token.value)
        if match is None:
            return None
        name = token.value[: token.value.index("(")]
        return name.lower(), match.group(3)

    def repo_filter(self, token: Token, negated: bool) -> RepoFilter:
        predicate = self.predicate(token)
        if predicate is not None:
            name, argument = predicate
            kind = _SUPPORTED_REPO_PREDICATES.get(name)
            if kind is None:
                raise QueryError(
                    f"the predicate repo:{name}(…) is not supported locally (in {token.text})",
                    what=f"repo:{name}",
                )
            flags = self.case_flags | (re.MULTILINE if kind == "has_content" else 0)
            regex = self.compile(argument, token.text, flags)
            return RepoFilter(kind, regex, negated, token.text)
        if re.search(r"(?<!\\)@", token.value):
            raise QueryError(
                f"searching another revision with repo:…@revision ({token.text}) "
                "is not supported locally",
                what="repo:…@revision",
                hint="runner searches the revision it checked out; drop the @revision",
            )
        # Repository names compare case-insensitively, as in Sourcegraph.
        regex = self.compile(token.value, token.text, re.IGNORECASE)
        return RepoFilter("name", regex, negated, token.text)

    def file_filter(self, token: Token, negated: bool) -> FileFilter:
        predicate = self.predicate(token)
        if predicate is not None:
            name, argument = predicate
            if name not in _SUPPORTED_FILE_PREDICATES:
                raise QueryError(
                    f"the predicate file:{name}(…) is not supported locally (in {token.text})",
                    what=f"file:{name}",
                )
            regex = self.compile(argument, token.text, self.case_flags | re.MULTILINE)
            return FileFilter("has_content", regex, negated, token.text)
        regex = self.compile(token.value, token.text, self.case_flags)
        return FileFilter("path", regex, negated, token.text)

    # Expansion into basic queries -------------------------------------------

    def expand(self, node: _Node) -> list[_Alternative]:
        if not _has_filters(node):
            return [((), (self.content(node),))]
        match node:
            case _Flt(token=token):
                return [((self.filter(token, token.negated),), ())]
            case _Not(node=_Flt(token=token)):
                return [((self.filter(token, not token.negated),), ())]
            case _Not(node=_Not(node=inner)):
                return self.expand(inner)
            case _Not():
                raise QueryError(
                    "NOT (…) around a group that holds filters is not supported locally",
                    what="NOT (…)",
                    hint="negate each filter instead, like -repo:NAME or -file:PATH",
                )
            case _Op(kind="or", parts=parts):
                return [alt for part in parts for alt in self.expand(part)]
            case _Op(kind="and", parts=parts):
                return self.product([self.expand(p) for p in parts])
            case _Op(parts=parts):
                return self.product(self.concat_choices(parts))
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    def concat_choices(self, parts: Sequence[_Node]) -> list[list[_Alternative]]:
        # Filters between words do not break the words apart: in
        # ``foo repo:x bar`` the pattern is ``foo bar``.
        words = [p for p in parts if not _has_filters(p)]
        choices: list[list[_Alternative]] = [[((), (expr,))] for expr in self.pattern_exprs(words)]
        choices += [self.expand(p) for p in parts if _has_filters(p)]
        return choices

    def product(self, choices: list[list[_Alternative]]) -> list[_Alternative]:
        total = 1
        for options in choices:
            total *= len(options)
        if total > MAX_ALTERNATIVES:
            raise QueryError(
                f"the query expands to {total} alternatives (at most {MAX_ALTERNATIVES})",
                what="OR",
                hint="simplify the OR groups that hold filters",
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


# --- public API ------------------------------------------------------------


def parse_query(text: str) -> Query:
    """Parse ``text``; raises ``QueryError`` naming what runner cannot evaluate."""
    options, rest = _take_options(tokenize(text, slash_regexps=True))
    if options.pattern_type in (PatternType.LITERAL, PatternType.REGEXP):
        # Only standard and keyword give /…/ its meaning; elsewhere a slash is a character.
        options, rest = _take_options(tokenize(text, slash_regexps=False))
    for token in rest:
        if token.kind == "field" and not (
            token.field in _REPO_FIELDS
            or token.field in _FILE_FIELDS
            or token.field in _LANG_FIELDS
            or token.field == "content"
        ):
            raise _refuse_field(token)
    if not rest:
        raise QueryError(
            f"the query {text.strip()!r} has no search pattern or filter",
            hint="add a pattern, or a filter like repo:NAME or file:PATH",
        )
    node = _Parser(_hoist(rest)).parse()
    builder = _Builder(options)
    basics = tuple(_basic(alt) for alt in builder.expand(node))
    return Query(
        text=text,
        pattern_type=options.pattern_type,
        case_sensitive=options.case_sensitive,
        count=options.count,
        select_repo=options.select_repo,
        basics=basics,
        only_forks_or_archived=options.only_forks_or_archived,
    )


def unsupported_reason(text: str) -> str | None:
    """None when ``text`` can be evaluated locally, else what stands in the way."""
    try:
        parse_query(text)
    except QueryError as exc:
        return exc.message
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
    otherwise.
    """
    return evaluate(query, repos, reader or GitTreeReader())
