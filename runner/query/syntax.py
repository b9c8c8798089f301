"""Tokens → a syntax tree with Sourcegraph's precedence.

OR binds loosest, then AND, then juxtaposition; NOT binds tightest. Before
parsing, Sourcegraph's hoisting heuristic puts a pattern expression between
filters into a group of its own (see ``hoist``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runner.errors import QUERY_DOCS_HINT as DOCS_HINT
from runner.errors import QueryError
from runner.query.lexer import Token

MAX_NESTING = 50


@dataclass(frozen=True)
class Pattern:
    token: Token


@dataclass(frozen=True)
class Filter:
    token: Token


@dataclass(frozen=True)
class Not:
    node: Node


@dataclass(frozen=True)
class Op:
    kind: Literal["and", "or", "concat"]
    parts: tuple[Node, ...]


Node = Pattern | Filter | Not | Op


def is_filter(token: Token) -> bool:
    return token.kind == "field" and token.field != "content"


def has_filters(node: Node) -> bool:
    match node:
        case Filter():
            return True
        case Pattern():
            return False
        case Not(node=inner):
            return has_filters(inner)
        case Op(parts=parts):
            return any(has_filters(p) for p in parts)


def _units(tokens: list[Token]) -> list[list[Token]] | None:
    """Top-level units: a group, a negated filter or one token (None: unbalanced)."""
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
                return None
            units.append(tokens[i : j + 1])
            i = j + 1
        elif token.kind == "not" and i + 1 < len(tokens) and is_filter(tokens[i + 1]):
            units.append(tokens[i : i + 2])
            i += 2
        else:
            units.append([token])
            i += 1
    return units


def hoist(tokens: list[Token]) -> list[Token]:
    """Sourcegraph's hoisting: ``repo:x a or b file:y`` means ``repo:x (a or b) file:y``.

    Without it OR would bind looser than the filters beside it. It applies
    when the top level reads: filters, then a pattern expression with a
    top-level AND/OR and no filters in it, then filters.
    """
    units = _units(tokens)
    if units is None:
        return tokens  # unbalanced: the parser says so

    def is_filter_unit(unit: list[Token]) -> bool:
        return is_filter(unit[-1]) and (len(unit) == 1 or unit[0].kind == "not")

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
    if any(is_filter(t) for unit in middle for t in unit):
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

    def _error(
        self, token: Token, problem: str, *, unsupported: bool = False, hint: str | None = None
    ) -> QueryError:
        return QueryError(
            f"{token.text} at column {token.pos + 1} {problem}",
            what=token.text,
            hint=hint or "check the query's operators and parentheses — " + DOCS_HINT,
            offset=token.pos,
            unsupported=unsupported,
        )

    def _operand_error(self, token: Token) -> QueryError:
        # Sourcegraph reads an operator at either end of the query as a word
        # (AND, OR and NOT need a space on both sides), so only runner refuses
        # it there; between two operators it is an error in Sourcegraph too.
        at_an_end = token is self.tokens[0] or token is self.tokens[-1]
        problem = "needs a search term or filter on each side"
        if token.kind == "not":
            problem = "must be followed by a search term, filter or group"
        return self._error(token, problem, unsupported=at_an_end)

    def parse(self) -> Node:
        node = self._binary("or")
        token = self._peek()
        if token is not None:  # only an unmatched operator can be left here
            raise self._operand_error(token)
        return node

    def _binary(self, kind: Literal["and", "or"]) -> Node:
        """``kind`` is "or" (operands are AND expressions) or "and" (juxtapositions)."""

        def parse() -> Node:
            return self._binary("and") if kind == "or" else self._concat()

        parts = [parse()]
        while (token := self._peek()) is not None and token.kind == kind:
            self.i += 1
            if (nxt := self._peek()) is None or nxt.kind in ("and", "or", "rparen"):
                raise self._operand_error(token)
            parts.append(parse())
        return parts[0] if len(parts) == 1 else Op(kind, tuple(parts))

    def _concat(self) -> Node:
        parts: list[Node] = []
        while (token := self._peek()) is not None and token.kind not in ("and", "or", "rparen"):
            parts.append(self._unit())
        if not parts:
            token = self._peek() or (self.tokens[self.i - 1] if self.i else None)
            if token is None:
                raise QueryError("the query is empty", hint="write a search pattern or filter")
            raise self._operand_error(token)
        return parts[0] if len(parts) == 1 else Op("concat", tuple(parts))

    def _unit(self) -> Node:
        token = self.tokens[self.i]
        self.i += 1
        if token.kind == "not":
            negations = 1
            while (nxt := self._peek()) is not None and nxt.kind == "not":
                negations += 1
                self.i += 1
            if nxt is None or nxt.kind in ("and", "or", "rparen"):
                raise self._operand_error(token)
            inner = self._unit()
            return Not(inner) if negations % 2 else inner
        if token.kind == "lparen":
            return self._group(token)
        if is_filter(token):
            return Filter(token)
        return Pattern(token)

    def _group(self, lparen: Token) -> Node:
        # Sourcegraph reads an unclosed or empty group's parentheses as
        # characters to search for; runner refuses to guess what was meant.
        if (nxt := self._peek()) is None:
            raise self._unclosed(lparen)
        if nxt.kind == "rparen":
            raise self._error(lparen, "opens an empty group", unsupported=True)
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self._error(lparen, f"nests groups deeper than {MAX_NESTING}", unsupported=True)
        node = self._binary("or")
        self.depth -= 1
        close = self._peek()
        if close is None or close.kind != "rparen":
            raise self._unclosed(lparen)
        self.i += 1
        return node

    def _unclosed(self, lparen: Token) -> QueryError:
        return self._error(
            lparen,
            "is never closed",
            unsupported=True,
            hint="close the group, or write \\( (or quote the pattern) to search for a parenthesis",
        )


def parse_tree(tokens: list[Token]) -> Node:
    """The syntax tree of ``tokens`` (options already taken out), hoisting applied."""
    return _Parser(hoist(tokens)).parse()
