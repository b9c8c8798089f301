"""The scanner: Go 1.19 text/template's lexer, with the delimiters as parameters.

It runs eagerly to a token list (Go's runs in a goroutine, but the parser reads
it in order, so the first error met is the same). Offsets are in characters.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, NamedTuple, Protocol

LEFT_DELIM: Final = "{{"
RIGHT_DELIM: Final = "}}"
_LEFT_COMMENT: Final = "/*"
_RIGHT_COMMENT: Final = "*/"
_SPACE: Final = " \t\r\n"


class T(IntEnum):
    ERROR = 0
    BOOL = 1
    CHAR = 2
    CHAR_CONSTANT = 3
    COMPLEX = 5
    ASSIGN = 6
    DECLARE = 7
    EOF = 8
    FIELD = 9
    IDENTIFIER = 10
    LEFT_DELIM = 11
    LEFT_PAREN = 12
    NUMBER = 13
    PIPE = 14
    RAW_STRING = 15
    RIGHT_DELIM = 16
    RIGHT_PAREN = 17
    SPACE = 18
    STRING = 19
    TEXT = 20
    VARIABLE = 21
    KEYWORD = 22  # keywords sort after this
    BLOCK = 23
    BREAK = 24
    CONTINUE = 25
    DOT = 26
    DEFINE = 27
    ELSE = 28
    END = 29
    IF = 30
    NIL = 31
    RANGE = 32
    TEMPLATE = 33
    WITH = 34


KEYWORDS: Final = {
    "block": T.BLOCK,
    "break": T.BREAK,
    "continue": T.CONTINUE,
    "define": T.DEFINE,
    "else": T.ELSE,
    "end": T.END,
    "if": T.IF,
    "range": T.RANGE,
    "nil": T.NIL,
    "template": T.TEMPLATE,
    "with": T.WITH,
}


class _State(Protocol):
    def __call__(self) -> _State: ...


class Token(NamedTuple):
    """One lexeme: its type, where it starts (in characters) and its text."""

    typ: T
    pos: int
    val: str

    def describe(self) -> str:
        """How Go's parser names the token in a message."""
        if self.typ == T.EOF:
            return "EOF"
        if self.typ == T.ERROR:
            return self.val
        if self.typ > T.KEYWORD:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return f'"{self.val[:10]}"...'
        return f'"{self.val}"'


def is_space(c: str) -> bool:
    return c in _SPACE and c != ""


def is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def lex(text: str, left: str = LEFT_DELIM, right: str = RIGHT_DELIM) -> list[Token]:
    """The tokens of ``text``, whose actions sit between ``left`` and ``right``."""
    return _Lexer(text, left, right).run()


class _Lexer:
    def __init__(self, text: str, left: str, right: str) -> None:
        self.input = text
        self.left = left
        self.right = right
        self.pos = 0
        self.start = 0
        self.paren_depth = 0
        self.items: list[Token] = []
        self.done = False

    def run(self) -> list[Token]:
        state = self.lex_text
        while not self.done:
            state = state()
        return self.items

    # -- helpers -----------------------------------------------------------
    def next(self) -> str:
        if self.pos >= len(self.input):
            self.pos = len(self.input) + 1  # Go's atEOF: a following backup stays put
            return ""
        c = self.input[self.pos]
        self.pos += 1
        return c

    def backup(self) -> None:
        if self.pos > len(self.input):
            self.pos = len(self.input)
            return
        if self.pos > 0:
            self.pos -= 1

    def peek(self) -> str:
        return self.input[self.pos] if self.pos < len(self.input) else ""

    def emit(self, typ: T) -> None:
        self.items.append(Token(typ, self.start, self.input[self.start : self.pos]))
        self.start = self.pos

    def ignore(self) -> None:
        self.start = self.pos

    def accept(self, valid: str) -> bool:
        c = self.next()
        if c and c in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            c = self.next()
            if not c or c not in valid:
                break
        self.backup()

    def errorf(self, message: str) -> _State:
        self.items.append(Token(T.ERROR, self.start, message))
        self.done = True
        return self.lex_text

    def has_left_trim(self, at: int) -> bool:
        s = self.input
        return at + 1 < len(s) and s[at] == "-" and is_space(s[at + 1])

    def has_right_trim(self, at: int) -> bool:
        s = self.input
        return at >= 0 and at + 1 < len(s) and is_space(s[at]) and s[at + 1] == "-"

    def at_right_delim(self) -> tuple[bool, bool]:
        if self.has_right_trim(self.pos) and self.input.startswith(self.right, self.pos + 2):
            return True, True
        if self.input.startswith(self.right, self.pos):
            return True, False
        return False, False

    def skip_spaces(self) -> None:
        s = self.input
        while self.pos < len(s) and s[self.pos] in _SPACE:
            self.pos += 1

    def at_terminator(self) -> bool:
        c = self.peek()
        if c == "" or is_space(c) or c in ".,|:)(":
            return True
        return self.input.startswith(self.right, self.pos)

    # -- states ------------------------------------------------------------
    def lex_text(self) -> _State:
        x = self.input.find(self.left, self.pos)
        if x >= 0:
            end = x
            if self.has_left_trim(x + len(self.left)):
                while end > self.start and self.input[end - 1] in _SPACE:
                    end -= 1
            if end > self.start:
                self.pos = end
                self.emit(T.TEXT)
            self.pos = x
            self.ignore()
            return self.lex_left_delim
        self.pos = len(self.input)
        if self.pos > self.start:
            self.emit(T.TEXT)
        self.emit(T.EOF)
        self.done = True
        return self.lex_text

    def lex_left_delim(self) -> _State:
        self.pos += len(self.left)
        trim = self.has_left_trim(self.pos)
        after = 2 if trim else 0
        if self.input.startswith(_LEFT_COMMENT, self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        self.emit(T.LEFT_DELIM)
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        return self.lex_inside_action

    def lex_comment(self) -> _State:
        self.pos += len(_LEFT_COMMENT)
        i = self.input.find(_RIGHT_COMMENT, self.pos)
        if i < 0:
            return self.errorf("unclosed comment")
        self.pos = i + len(_RIGHT_COMMENT)
        delim, trim = self.at_right_delim()
        if not delim:
            return self.errorf("comment ends before closing delimiter")
        if trim:
            self.pos += 2
        self.pos += len(self.right)
        if trim:
            self.skip_spaces()
        self.ignore()
        return self.lex_text

    def lex_right_delim(self) -> _State:
        trim = self.has_right_trim(self.pos)
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += len(self.right)
        self.emit(T.RIGHT_DELIM)
        if trim:
            self.skip_spaces()
            self.ignore()
        return self.lex_text

    def lex_inside_action(self) -> _State:
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            return self.errorf("unclosed left paren")
        c = self.next()
        if c == "":
            return self.errorf("unclosed action")
        if is_space(c):
            self.backup()
            return self.lex_space
        if c == "=":
            self.emit(T.ASSIGN)
        elif c == ":":
            if self.next() != "=":
                return self.errorf("expected :=")
            self.emit(T.DECLARE)
        elif c == "|":
            self.emit(T.PIPE)
        elif c == '"':
            return self.lex_quote
        elif c == "`":
            return self.lex_raw_quote
        elif c == "$":
            return self.lex_variable
        elif c == "'":
            return self.lex_char
        elif c == "." and self.pos < len(self.input) and not "0" <= self.input[self.pos] <= "9":
            return self.lex_field
        elif c in ".+-" or "0" <= c <= "9":
            self.backup()
            return self.lex_number
        elif is_alnum(c):
            self.backup()
            return self.lex_identifier
        elif c == "(":
            self.emit(T.LEFT_PAREN)
            self.paren_depth += 1
        elif c == ")":
            self.emit(T.RIGHT_PAREN)
            self.paren_depth -= 1
            if self.paren_depth < 0:
                return self.errorf("unexpected right paren")
        elif ord(c) < 0x80 and c.isprintable():
            self.emit(T.CHAR)
        else:
            return self.errorf(f"unrecognized character in action: U+{ord(c):04X}")
        return self.lex_inside_action

    def lex_space(self) -> _State:
        spaces = 0
        while is_space(self.peek()):
            self.pos += 1
            spaces += 1
        if self.has_right_trim(self.pos - 1) and self.input.startswith(self.right, self.pos + 1):
            self.pos -= 1
            if spaces == 1:
                return self.lex_right_delim
        self.emit(T.SPACE)
        return self.lex_inside_action

    def lex_identifier(self) -> _State:
        while is_alnum(self.peek()):
            self.pos += 1
        word = self.input[self.start : self.pos]
        if not self.at_terminator():
            return self.errorf(f"bad character {_rune(self.peek())}")
        keyword = KEYWORDS.get(word)
        if keyword is not None:
            self.emit(keyword)
        elif word in ("true", "false"):
            self.emit(T.BOOL)
        else:
            self.emit(T.IDENTIFIER)
        return self.lex_inside_action

    def lex_field(self) -> _State:
        return self.lex_field_or_variable(T.FIELD)

    def lex_variable(self) -> _State:
        if self.at_terminator():
            self.emit(T.VARIABLE)
            return self.lex_inside_action
        return self.lex_field_or_variable(T.VARIABLE)

    def lex_field_or_variable(self, typ: T) -> _State:
        if self.at_terminator():
            self.emit(T.VARIABLE if typ == T.VARIABLE else T.DOT)
            return self.lex_inside_action
        while is_alnum(self.peek()):
            self.pos += 1
        if not self.at_terminator():
            return self.errorf(f"bad character {_rune(self.peek())}")
        self.emit(typ)
        return self.lex_inside_action

    def lex_char(self) -> _State:
        return self.lex_quoted("'", T.CHAR_CONSTANT, "unterminated character constant")

    def lex_quote(self) -> _State:
        return self.lex_quoted('"', T.STRING, "unterminated quoted string")

    def lex_quoted(self, quote: str, typ: T, unterminated: str) -> _State:
        """A string or character literal, up to its closing ``quote``."""
        while True:
            c = self.next()
            if c == "\\":
                c = self.next()
                if c not in ("", "\n"):
                    continue
            if c in ("", "\n"):
                return self.errorf(unterminated)
            if c == quote:
                break
        self.emit(typ)
        return self.lex_inside_action

    def lex_number(self) -> _State:
        if not self.scan_number():
            return self.errorf(f"bad number syntax: {self.input[self.start : self.pos]!r}")
        if self.peek() in ("+", "-"):
            if not self.scan_number() or self.input[self.pos - 1] != "i":
                return self.errorf(f"bad number syntax: {self.input[self.start : self.pos]!r}")
            self.emit(T.COMPLEX)
        else:
            self.emit(T.NUMBER)
        return self.lex_inside_action

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if is_alnum(self.peek()):
            self.next()
            return False
        return True

    def lex_raw_quote(self) -> _State:
        end = self.input.find("`", self.pos)
        if end < 0:
            self.pos = len(self.input)
            return self.errorf("unterminated raw quoted string")
        self.pos = end + 1
        self.emit(T.RAW_STRING)
        return self.lex_inside_action


def _rune(c: str) -> str:
    if not c:
        return "EOF"
    return f"U+{ord(c):04X} {c!r}"
