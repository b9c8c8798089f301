"""Glob patterns for the ``matches`` helper, read as github.com/gobwas/glob reads them.

src-cli compiles the pattern with no separators, so ``*`` and ``**`` both match
any run of characters. The syntax: ``?`` one character, ``[abc]`` / ``[!abc]``,
``[a-z]`` / ``[!a-z]``, ``{a,b}`` alternatives, ``\\`` escapes. The scanner keeps
that library's quirks (an unclosed ``{`` is accepted, ``[]`` is an error, a NUL
ends the pattern, U+FFFD cannot be read).

Matching follows what the pattern says, run as a set of states over the input
so no pattern takes more than linear time per state. gobwas/glob's own
matchers get some patterns wrong, and those we do not copy: there ``a*a``
matches ``"a"``, ``?`` and ``[!x]`` match ``""``, ``?a`` does not match
``"éa"``, and some ``{…}`` alternatives next to ``*`` or with an empty branch
match (or fail to compile) unlike their meaning. Elsewhere the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Final

from runner.gotemplate import is_raw_byte

_EOF: Final = "\x00"


class GlobError(ValueError):
    pass


class _K(Enum):
    EOF = auto()
    ERROR = auto()
    TEXT = auto()
    ANY = auto()
    SUPER = auto()
    SINGLE = auto()
    NOT = auto()
    SEPARATOR = auto()
    RANGE_OPEN = auto()
    RANGE_CLOSE = auto()
    RANGE_LO = auto()
    RANGE_HI = auto()
    RANGE_BETWEEN = auto()
    TERMS_OPEN = auto()
    TERMS_CLOSE = auto()


_TEXT_BREAKERS: Final = "?*[{"
_TERMS_BREAKERS: Final = "?*[{},"


class _Lexer:
    def __init__(self, data: str) -> None:
        self.data = data
        self.pos = 0
        self.err: str | None = None
        self.tokens: list[tuple[_K, str]] = []
        self.terms_level = 0
        self.last_rune = _EOF
        self.last_size = 0
        self.has_rune = False

    def next(self) -> tuple[_K, str]:
        while True:
            if self.err is not None:
                return _K.ERROR, self.err
            if self.tokens:
                return self.tokens.pop(0)
            self.fetch_item()

    def peek(self) -> tuple[str, int]:
        if self.pos == len(self.data):
            return _EOF, 0
        r = self.data[self.pos]
        if r == "\ufffd" or is_raw_byte(r):
            self.err = "could not read rune"
            return _EOF, 0
        return r, 1

    def read(self) -> str:
        if self.has_rune:
            self.has_rune = False
            self.pos += self.last_size
            return self.last_rune
        r, s = self.peek()
        self.pos += s
        self.last_rune = r
        self.last_size = s
        return r

    def unread(self) -> None:
        if self.has_rune:
            self.err = "could not unread rune"
            return
        self.pos -= self.last_size
        self.has_rune = True

    def fetch_item(self) -> None:
        r = self.read()
        in_terms = self.terms_level > 0
        if r == _EOF:
            self.tokens.append((_K.EOF, ""))
        elif r == "{":
            self.terms_level += 1
            self.tokens.append((_K.TERMS_OPEN, r))
        elif r == "," and in_terms:
            self.tokens.append((_K.SEPARATOR, r))
        elif r == "}" and in_terms:
            self.tokens.append((_K.TERMS_CLOSE, r))
            self.terms_level -= 1
        elif r == "[":
            self.tokens.append((_K.RANGE_OPEN, r))
            self.fetch_range()
        elif r == "?":
            self.tokens.append((_K.SINGLE, r))
        elif r == "*":
            if self.read() == "*":
                self.tokens.append((_K.SUPER, "**"))
            else:
                self.unread()
                self.tokens.append((_K.ANY, r))
        else:
            self.unread()
            self.fetch_text(_TERMS_BREAKERS if in_terms else _TEXT_BREAKERS)

    def fetch_range(self) -> None:
        want_hi = want_close = seen_not = False
        while True:
            r = self.read()
            if r == _EOF:
                self.err = "unexpected end of input"
                return
            if want_close:
                if r != "]":
                    self.err = "expected close range character"
                else:
                    self.tokens.append((_K.RANGE_CLOSE, r))
                return
            if want_hi:
                self.tokens.append((_K.RANGE_HI, r))
                want_close = True
                continue
            if not seen_not and r == "!":
                self.tokens.append((_K.NOT, r))
                seen_not = True
                continue
            n, w = self.peek()
            if n == "-":
                self.pos += w
                self.tokens.append((_K.RANGE_LO, r))
                self.tokens.append((_K.RANGE_BETWEEN, n))
                want_hi = True
                continue
            self.unread()
            self.fetch_text("]")
            want_close = True

    def fetch_text(self, breakers: str) -> None:
        data: list[str] = []
        escaped = False
        while True:
            r = self.read()
            if r == _EOF:
                break
            if not escaped:
                if r == "\\":
                    escaped = True
                    continue
                if r in breakers:
                    self.unread()
                    break
            escaped = False
            data.append(r)
        if data:
            self.tokens.append((_K.TEXT, "".join(data)))


# -- syntax tree ---------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    kind: str  # pattern, any_of, text, any, single, list, range
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)
    text: str = ""
    lo: str = ""
    hi: str = ""
    negate: bool = False

    def insert(self, child: _Node) -> None:
        child.parent = self
        self.children.append(child)


_MAX_NESTING: Final = 100


def _parse(pattern: str) -> _Node:
    lexer = _Lexer(pattern)
    root = _Node("pattern")
    tree = root
    depth = 0
    while True:
        kind, raw = lexer.next()
        if kind == _K.EOF:
            return root
        if kind == _K.ERROR:
            raise GlobError(raw)
        if kind == _K.TEXT:
            tree.insert(_Node("text", text=raw))
        elif kind in (_K.ANY, _K.SUPER):
            tree.insert(_Node("any"))
        elif kind == _K.SINGLE:
            tree.insert(_Node("single"))
        elif kind == _K.RANGE_OPEN:
            _parse_range(lexer, tree)
        elif kind == _K.TERMS_OPEN:
            depth += 1
            if depth > _MAX_NESTING:
                raise GlobError(f"pattern nests {{}} more than {_MAX_NESTING} levels deep")
            any_of = _Node("any_of")
            tree.insert(any_of)
            tree = _Node("pattern")
            any_of.insert(tree)
        elif kind == _K.SEPARATOR:
            assert tree.parent is not None
            alternative = _Node("pattern")
            tree.parent.insert(alternative)
            tree = alternative
        elif kind == _K.TERMS_CLOSE:
            assert tree.parent is not None
            assert tree.parent.parent is not None
            tree = tree.parent.parent
            depth -= 1
        else:
            raise GlobError(f"unexpected {kind.name.lower().replace('_', ' ')} in pattern")


def _parse_range(lexer: _Lexer, tree: _Node) -> None:
    negate = False
    lo = hi = chars = ""
    while True:
        kind, raw = lexer.next()
        if kind == _K.EOF:
            raise GlobError("unexpected end")
        if kind == _K.ERROR:
            raise GlobError(raw)
        if kind == _K.NOT:
            negate = True
        elif kind == _K.RANGE_LO:
            lo = raw
        elif kind == _K.RANGE_HI:
            hi = raw
            if hi < lo:
                # The characters stay out of the message: a pattern may come from a value.
                raise GlobError("a range's last character sorts before its first")
        elif kind == _K.TEXT:
            chars = raw
        elif kind == _K.RANGE_CLOSE:
            is_range = lo != "" and hi != ""
            if (chars != "") == is_range:
                raise GlobError("could not parse range")
            if is_range:
                tree.insert(_Node("range", lo=lo, hi=hi, negate=negate))
            else:
                tree.insert(_Node("list", text=chars, negate=negate))
            return


# -- matching ------------------------------------------------------------------


@dataclass(eq=False)
class _State:
    kind: str  # char, any, star, split, match
    test: _Node | None = None
    out: list[_State] = field(default_factory=list)


def _build(node: _Node, nxt: _State) -> _State:
    if node.kind == "pattern":
        for child in reversed(node.children):
            nxt = _build(child, nxt)
        return nxt
    if node.kind == "any_of":
        return _State("split", out=[_build(alt, nxt) for alt in node.children])
    if node.kind == "text":
        for ch in reversed(node.text):
            nxt = _State("char", _Node("text", text=ch), [nxt])
        return nxt
    if node.kind == "any":
        return _State("star", out=[nxt])
    return _State("char", node, [nxt])


def _accepts(test: _Node, ch: str) -> bool:
    if test.kind == "single":
        return True
    if test.kind == "text":
        return ch == test.text
    if test.kind == "list":
        return (ch in test.text) != test.negate
    return (test.lo <= ch <= test.hi) != test.negate


class Glob:
    def __init__(self, pattern: str) -> None:
        self._start = _build(_parse(pattern), _State("match"))

    def match(self, s: str) -> bool:
        current = self._closure([self._start])
        for raw in s:
            ch = "\ufffd" if is_raw_byte(raw) else raw
            step: list[_State] = []
            for state in current:
                if state.kind == "star":
                    step.append(state)
                elif state.kind == "char" and state.test is not None and _accepts(state.test, ch):
                    step.extend(state.out)
            if not step:
                return False
            current = self._closure(step)
        return any(state.kind == "match" for state in current)

    @staticmethod
    def _closure(states: list[_State]) -> list[_State]:
        seen: set[int] = set()
        out: list[_State] = []
        stack = list(states)
        while stack:
            state = stack.pop()
            if id(state) in seen:
                continue
            seen.add(id(state))
            out.append(state)
            if state.kind in ("split", "star"):
                stack.extend(state.out)
        return out


def glob_match(pattern: str, s: str) -> bool:
    """src-cli's ``matches``: raises GlobError if the pattern does not compile."""
    return Glob(pattern).match(s)
