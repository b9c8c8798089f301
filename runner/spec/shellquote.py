"""Quoting words for ``/bin/sh``, by the rules Sourcegraph's templates use.

Sourcegraph quotes every file name it hands to a template, and offers
``shellquote_join`` and ``shellquote_split``, with the rules of the Go library
kballard/go-shellquote. These are those rules, written afresh and checked
against that library's own test cases (tests/data/shellquote_cases.json):

- ``quote``: the empty word is ``''``. A word holding a space, a tab or a
  newline is single-quoted whole, each ``'`` in it written ``'\\''``. Any other
  word gets a backslash before each of ``\\ ' " ` $ { [ | & ; < > ( ) * ? !``,
  and before a ``~`` that starts it.
- ``split``: words part at spaces, tabs and newlines; ``'…'`` is literal;
  inside ``"…"`` a backslash escapes only ``$ ` " \\`` and a newline; outside
  quotes a backslash escapes the next character; a backslash-newline vanishes.
  Nothing is expanded. An unterminated quote or escape is an error.

One difference, on purpose: a ``#`` that starts a word is escaped too. The
library leaves it bare, and a bare ``#`` starts a comment, so a file named
``#x`` would silently drop the rest of the command line it was joined into.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["ShellQuoteError", "is_canonical", "join", "quote", "split"]

_ESCAPED: Final = frozenset("\\'\"`${[|&;<>()*?!")
_ESCAPED_FIRST: Final = frozenset("~#")
_BLANKS: Final = frozenset(" \t\n")
_ESCAPED_IN_DOUBLE: Final = frozenset('$`"\\\n')

UNTERMINATED_SINGLE: Final = "Unterminated single-quoted string"
UNTERMINATED_DOUBLE: Final = "Unterminated double-quoted string"
UNTERMINATED_ESCAPE: Final = "Unterminated backslash-escape"


class ShellQuoteError(ValueError):
    """``split`` met an unterminated quote or escape; the message says which."""


def quote(word: str) -> str:
    """``word`` as one shell word that expands to nothing but itself."""
    if word == "":
        return "''"
    if not _BLANKS.isdisjoint(word):
        # Backslashes cannot carry a newline through, so quote the whole word;
        # a single quote cannot appear inside '…' and is escaped between runs.
        return "\\'".join(f"'{run}'" if run else "" for run in word.split("'"))
    out: list[str] = []
    for i, ch in enumerate(word):
        if ch in _ESCAPED or (i == 0 and ch in _ESCAPED_FIRST):
            out.append("\\")
        out.append(ch)
    return "".join(out)


def join(words: Iterable[str]) -> str:
    """Each word quoted, separated by single spaces."""
    return " ".join(map(quote, words))


def split(text: str) -> list[str]:
    """The words ``text`` holds, as ``/bin/sh`` would part them; raises ShellQuoteError."""
    words: list[str] = []
    i, end = 0, len(text)
    while i < end:
        ch = text[i]
        if ch in _BLANKS:
            i += 1
            continue
        if ch == "\\":
            if i + 1 == end:
                raise ShellQuoteError(UNTERMINATED_ESCAPE)
            if text[i + 1] == "\n":  # a line continuation between words
                i += 2
                continue
        word, i = _word(text, i)
        words.append(word)
    return words


def is_canonical(text: str) -> bool:
    """Whether ``text`` is exactly what ``quote`` makes of some one word."""
    try:
        words = split(text)
    except ShellQuoteError:
        return False
    return len(words) == 1 and quote(words[0]) == text


def _word(text: str, i: int) -> tuple[str, int]:
    """The word starting at ``i``, and where the text after it (and its blank) starts."""
    out: list[str] = []
    end = len(text)
    while i < end:
        ch = text[i]
        if ch in _BLANKS:
            return "".join(out), i + 1
        if ch == "'":
            close = text.find("'", i + 1)
            if close < 0:
                raise ShellQuoteError(UNTERMINATED_SINGLE)
            out.append(text[i + 1 : close])
            i = close + 1
        elif ch == '"':
            i = _double_quoted(text, i + 1, out)
        elif ch == "\\":
            if i + 1 == end:
                raise ShellQuoteError(UNTERMINATED_ESCAPE)
            if text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out), i


def _double_quoted(text: str, i: int, out: list[str]) -> int:
    """Read ``"…"`` from just after its opening quote into ``out``; return what follows."""
    end = len(text)
    while i < end:
        ch = text[i]
        if ch == '"':
            return i + 1
        if ch == "\\" and i + 1 < end:
            nxt = text[i + 1]
            if nxt in _ESCAPED_IN_DOUBLE:
                if nxt != "\n":
                    out.append(nxt)
            else:  # not an escape here: both characters stay
                out.append(ch + nxt)
            i += 2
        else:
            out.append(ch)
            i += 1
    raise ShellQuoteError(UNTERMINATED_DOUBLE)
