"""Split a query into tokens, the way Sourcegraph's scanner does for our subset.

The scanner never fails: text that is not a field, an operator, a group or a
quoted or ``/slash/`` pattern is a word, so odd input ends up searched for
literally rather than refused. Heuristics, each mirroring Sourcegraph:

- ``word:`` is a field only when ``word`` is a field name we know (in any case);
  otherwise the whole thing is search text (``entrypoint:``).
- A quoted string or ``/regexp/`` counts only when its closing delimiter is
  followed by a space, a closing parenthesis or the end; otherwise the quote
  or slash is an ordinary character (``"bootstrap":``).
- ``(`` opens a group, except in a run without spaces whose first
  parenthesis closes before the run ends, like ``(\\w+/)?\\w+:latest``: that
  run is a pattern. Parentheses inside a word belong to the word.
- ``)`` closes a group only when one is open and the word it ends has no
  unclosed ``(`` of its own. A ``)`` that closes no parenthesis before it
  stays in its word here, but Sourcegraph's parser rejects the query;
  ``unmatched_close`` finds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

TokenKind = Literal["word", "quoted", "slash", "field", "and", "or", "not", "lparen", "rparen"]

# Every field name Sourcegraph knows (with aliases), lowercased. The ones we
# evaluate are taken up by ``options`` and ``build``; ``parse`` refuses the
# rest by name rather than searching for them as text.
FIELD_NAMES = frozenset(
    {
        "repo", "r", "file", "f", "path", "lang", "l", "language", "content",
        "patterntype", "case", "count", "select", "type", "fork", "archived", "context",
        "rev", "revision", "repogroup", "g", "visibility", "timeout", "repohasfile",
        "repohascommitafter", "repohasdescription", "repohaskvp", "repohastopic",
        "author", "committer", "message", "m", "msg", "before", "until", "after", "since",
        "index", "stable", "rule", "combyrule",
    }
)  # fmt: skip

_FIELD = re.compile(r"(-?)([A-Za-z][A-Za-z0-9_]*):")
_PREDICATE_START = re.compile(r"[A-Za-z]+(?:\.[A-Za-z]+)*\(")
_OPERATORS: dict[str, TokenKind] = {"and": "and", "or": "or", "not": "not"}


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # as written
    pos: int  # 0-based offset in the query
    value: str = ""  # pattern text without delimiters, or a field's value
    field: str = ""  # lowercased field name
    negated: bool = False  # ``-field:``


class _Scanner:
    def __init__(self, text: str, *, slash_regexps: bool) -> None:
        self.s = text
        self.n = len(text)
        self.slash_regexps = slash_regexps
        self.open_groups = 0
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
        i = 0
        while True:
            while i < self.n and self.s[i].isspace():
                i += 1
            if i >= self.n:
                return self.tokens
            i = self._one(i)

    def _boundary(self, i: int) -> bool:
        """Whether a token may end just before offset ``i``."""
        if i >= self.n or self.s[i].isspace():
            return True
        return self.s[i] == ")" and self.open_groups > 0

    def _emit(
        self,
        kind: TokenKind,
        start: int,
        end: int,
        *,
        value: str = "",
        field: str = "",
        negated: bool = False,
    ) -> int:
        self.tokens.append(Token(kind, self.s[start:end], start, value, field, negated))
        return end

    def _one(self, i: int) -> int:
        c = self.s[i]
        if c == "(":
            end = self._pattern_run_from_paren(i)
            if end is not None:
                return self._emit("word", i, end, value=self.s[i:end])
            self.open_groups += 1
            return self._emit("lparen", i, i + 1)
        if c == ")" and self.open_groups > 0:
            self.open_groups -= 1
            return self._emit("rparen", i, i + 1)
        if c in "\"'":
            end = self._delimited(i, c)
            if end is not None:
                return self._emit("quoted", i, end, value=self.s[i + 1 : end - 1])
        if c == "/" and self.slash_regexps:
            end = self._delimited(i, "/")
            if end is not None and end - i > 2:
                return self._emit("slash", i, end, value=self.s[i + 1 : end - 1])
        field = _FIELD.match(self.s, i)
        if field and field.group(2).lower() in FIELD_NAMES:
            return self._field(i, field)
        end = self._word_end(i)
        word = self.s[i:end]
        operator = _OPERATORS.get(word.lower())
        if operator is not None:
            return self._emit(operator, i, end)
        return self._emit("word", i, end, value=word)

    def _field(self, i: int, match: re.Match[str]) -> int:
        start = match.end()
        negated = bool(match.group(1))
        name = match.group(2).lower()
        end: int | None = None
        value = ""
        if start < self.n and self.s[start] in "\"'":
            end = self._delimited(start, self.s[start])
            if end is not None:
                value = self.s[start + 1 : end - 1]
        if end is None and _PREDICATE_START.match(self.s, start):
            # Predicate arguments may hold spaces: has.commit.after(1 year ago).
            close = self._matching_paren(self.s.index("(", start))
            if close is not None:
                end = self._word_end(close + 1, depth=0)
                value = self.s[start:end]
        if end is None:
            end = self._word_end(start)
            value = self.s[start:end]
        return self._emit("field", i, end, value=value, field=name, negated=negated)

    def _unescaped(self, start: int, end: int) -> Iterator[int]:
        """Offsets in ``[start, end)`` of the characters no backslash escapes."""
        j = start
        while j < end:
            if self.s[j] == "\\":
                j += 2  # the escaped character is never a delimiter, space or paren
            else:
                yield j
                j += 1

    def _run_end(self, i: int) -> int:
        """End of the run of non-space characters at ``i`` (an escaped space is no end)."""
        j = i
        while j < self.n and not self.s[j].isspace():
            j += 2 if self.s[j] == "\\" else 1
        return min(j, self.n)

    def _delimited(self, i: int, delimiter: str) -> int | None:
        """End (exclusive) of the delimited string opening at ``i``, if it closes."""
        for j in self._unescaped(i + 1, self.n):
            if self.s[j] == delimiter:
                return j + 1 if self._boundary(j + 1) else None
        return None

    def _matching_paren(self, i: int) -> int | None:
        depth = 0
        for j in self._unescaped(i, self.n):
            if self.s[j] == "(":
                depth += 1
            elif self.s[j] == ")":
                depth -= 1
                if depth == 0:
                    return j
        return None

    def _word_end(self, i: int, depth: int = 0) -> int:
        end = self._run_end(i)
        for j in self._unescaped(i, end):
            if self.s[j] == "(":
                depth += 1
            elif self.s[j] == ")":
                if depth == 0 and self.open_groups > 0:
                    return j
                depth = max(0, depth - 1)
        return end

    def _pattern_run_from_paren(self, i: int) -> int | None:
        """End of ``(…)…`` when it is a pattern rather than a group (see module doc)."""
        close = self._matching_paren(i)
        if close is None or any(ch.isspace() for ch in self.s[i:close]):
            return None
        if close + 1 >= self.n or self.s[close + 1].isspace() or self.s[close + 1] == ")":
            return None  # ``(foo)`` is a group around foo
        return self._word_end(close + 1)


def tokenize(text: str, *, slash_regexps: bool) -> list[Token]:
    """Tokens of ``text``; ``slash_regexps`` makes ``/…/`` a regexp pattern."""
    return _Scanner(text, slash_regexps=slash_regexps).run()


def unmatched_close(tokens: list[Token]) -> int | None:
    """Offset of the first ``)`` that closes no ``(`` before it, or None.

    Parentheses count across the whole query, groups and patterns alike, as
    Sourcegraph balances them (``foo(a, b)`` is one pattern there); quoted
    and ``/slash/`` patterns, quoted field values and escaped characters do
    not count.
    """
    depth = 0
    for token in tokens:
        if token.kind in ("quoted", "slash"):
            continue
        text, start = token.text, token.pos
        if token.kind == "field":
            colon = text.index(":") + 1
            if text[colon : colon + 1] in ("'", '"') and token.value != text[colon:]:
                continue  # a delimited value
        j = 0
        while j < len(text):
            c = text[j]
            if c == "\\":
                j += 2
                continue
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth < 0:
                return start + j
            j += 1
    return None
