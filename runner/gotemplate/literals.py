"""Literals in actions: strings, characters and numbers, read as Go reads them.

``unquote`` is strconv.Unquote (a ``\\x`` escape can make a byte that is not
UTF-8; it is kept as a surrogate escape, see ``values``). ``parse_number``
is text/template/parse's newNumber: a literal may be valid as several types at
once (``1`` is an int, a uint and a float), and the executor picks by context.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from runner.gotemplate.lex import T
from runner.gotemplate.values import INT64_MAX, INT64_MIN, UINT64_MAX, go_str


@dataclass(slots=True)
class Number:
    is_int: bool = False
    int64: int = 0
    is_uint: bool = False
    uint64: int = 0
    is_float: bool = False
    float64: float = 0.0
    is_complex: bool = False
    complex128: complex = 0j


_SIMPLE_ESCAPES: Final = {
    "a": 7,
    "b": 8,
    "f": 12,
    "n": 10,
    "r": 13,
    "t": 9,
    "v": 11,
    "\\": 92,
}
_HEX: Final = "0123456789abcdefABCDEF"


def _unquote_char(s: str, i: int, quote: str) -> tuple[int, bool, int] | None:
    """strconv.UnquoteChar at ``s[i]``: (value, is_rune, next index), or None if invalid.

    ``is_rune`` False means the value is a single raw byte (from ``\\x`` or octal).
    """
    c = s[i]
    if c == quote and quote in "'\"":
        return None
    if c != "\\":
        return ord(c), True, i + 1
    if i + 1 >= len(s):
        return None
    c = s[i + 1]
    i += 2
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], True, i
    if c in "xuU":
        n = {"x": 2, "u": 4, "U": 8}[c]
        digits = s[i : i + n]
        if len(digits) < n or any(d not in _HEX for d in digits):
            return None
        v = int(digits, 16)
        if c == "x":
            return v, quote == "'", i + n
        if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            return None
        return v, True, i + n
    if "0" <= c <= "7":
        digits = s[i - 1 : i + 2]
        if len(digits) < 3 or any(not "0" <= d <= "7" for d in digits):
            return None
        v = int(digits, 8)
        if v > 255:
            return None
        return v, quote == "'", i + 2
    if c in "'\"":
        if c != quote:
            return None
        return ord(c), True, i
    return None


def unquote(quoted: str) -> str | None:
    """strconv.Unquote for string literals; stray bytes become surrogate escapes."""
    if len(quoted) < 2:
        return None
    if quoted[0] == "`":
        if quoted[-1] != "`" or "`" in quoted[1:-1]:
            return None
        return quoted[1:-1].replace("\r", "")
    if quoted[0] != '"' or quoted[-1] != '"':
        return None
    body = quoted[1:-1]
    if "\\" not in body and '"' not in body and "\n" not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == "\n":
            return None
        res = _unquote_char(body, i, '"')
        if res is None:
            return None
        value, is_rune, i = res
        if is_rune:
            out += _encode_rune(value)
        else:
            out.append(value)
    return go_str(bytes(out))


def _encode_rune(r: int) -> bytes:
    ch = chr(r)
    if "\udc80" <= ch <= "\udcff":
        return bytes([r - 0xDC00])
    return ch.encode("utf-8", "surrogatepass")


def _unquote_rune(text: str) -> int:
    body = text[1:]
    if not body or body == "'":
        raise ValueError("invalid syntax")
    res = _unquote_char(body, 0, "'")
    if res is None:
        raise ValueError("invalid syntax")
    value, _, i = res
    if body[i:] != "'":
        raise ValueError(f"malformed character constant: {text}")
    return value


_INT_RE: Final = re.compile(
    r"[+-]?(?:0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0(?:_?[0-7])*|[1-9](?:_?[0-9])*)"
)
_DEC_FLOAT_RE: Final = re.compile(
    r"[+-]?(?:(?:[0-9](?:_?[0-9])*)?\.?(?:[0-9](?:_?[0-9])*)?)(?:[eE][+-]?[0-9](?:_?[0-9])*)?"
)
_HEX_FLOAT_RE: Final = re.compile(
    r"[+-]?0[xX](?:_?[0-9a-fA-F])*(?:\.(?:[0-9a-fA-F](?:_?[0-9a-fA-F])*)?)?[pP][+-]?[0-9](?:_?[0-9])*"
)


def _parse_int_base0(text: str) -> int | None:
    """strconv.ParseInt(text, 0, ∞)'s syntax, without the range check."""
    if not _INT_RE.fullmatch(text):
        return None
    sign = -1 if text[0] == "-" else 1
    body = text.lstrip("+-").replace("_", "")
    if len(body) > 1 and body[0] == "0" and body[1] in "xXbBoO":
        return sign * int(body, 0)
    if len(body) > 1 and body[0] == "0":
        return sign * int(body, 8)
    return sign * int(body)


def _parse_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64), for the shapes the lexer can produce."""
    if _HEX_FLOAT_RE.fullmatch(text):
        sign = -1.0 if text[0] == "-" else 1.0
        body = text.lstrip("+-").replace("_", "")[2:]
        mant, _, exp = body.replace("P", "p").partition("p")
        if mant in ("", "."):
            return None
        if mant.startswith("."):
            mant = "0" + mant
        try:
            return sign * float.fromhex(f"0x{mant}p{exp}")
        except (OverflowError, ValueError):
            return None
    if not _DEC_FLOAT_RE.fullmatch(text):
        return None
    mantissa = text.lstrip("+-").replace("E", "e").partition("e")[0]
    if not any(ch.isdigit() for ch in mantissa):
        return None
    value = float(text.replace("_", ""))
    if math.isinf(value):
        return None  # out of range: ParseFloat reports an error
    return value


def parse_number(text: str, typ: T) -> Number:
    """text/template/parse's newNumber: every type the literal can stand for."""
    n = Number()
    if typ == T.CHAR_CONSTANT:
        r = _unquote_rune(text)
        n.is_int = n.is_uint = n.is_float = True
        n.int64 = n.uint64 = r
        n.float64 = float(r)
        return n
    if typ == T.COMPLEX:
        value = _parse_complex(text)
        if value is None:
            raise ValueError(f"bad number syntax: {text!r}")
        n.is_complex = True
        n.complex128 = value
        _simplify_complex(n)
        return n
    if text.endswith("i"):
        f = _parse_float(text[:-1])
        if f is not None:
            n.is_complex = True
            n.complex128 = complex(0, f)
            _simplify_complex(n)
            return n
    value = _parse_int_base0(text)
    if value is not None and 0 <= value <= UINT64_MAX and text[0] != "-" and text[0] != "+":
        n.is_uint = True
        n.uint64 = value
    if value is not None and INT64_MIN <= value <= INT64_MAX:
        n.is_int = True
        n.int64 = value
        if value == 0:
            n.is_uint = True
            n.uint64 = 0
    if n.is_int:
        n.is_float = True
        n.float64 = float(n.int64)
    elif n.is_uint:
        n.is_float = True
        n.float64 = float(n.uint64)
    else:
        f = _parse_float(text)
        if f is not None:
            if not any(c in text for c in ".eEpP"):
                raise ValueError(f"integer overflow: {text!r}")
            n.is_float = True
            n.float64 = f
            _integral_float(n, f)
    if not (n.is_int or n.is_uint or n.is_float):
        raise ValueError(f"illegal number syntax: {text!r}")
    return n


def _simplify_complex(n: Number) -> None:
    c = n.complex128
    n.is_float = c.imag == 0
    if n.is_float:
        n.float64 = c.real
        _integral_float(n, c.real)


def _integral_float(n: Number, f: float) -> None:
    """A float with a whole value is also an int and a uint, where it fits."""
    whole = math.isfinite(f) and f == int(f)
    n.is_int = whole and INT64_MIN <= int(f) <= INT64_MAX
    if n.is_int:
        n.int64 = int(f)
    n.is_uint = whole and 0 <= int(f) <= UINT64_MAX
    if n.is_uint:
        n.uint64 = int(f)


def _parse_complex(text: str) -> complex | None:
    """fmt.Sscan of a complex128 ``re±imi``, for what the lexer lets through."""
    if not text.endswith("i") or any(c in text for c in "xXpP"):
        return None
    for k in range(1, len(text) - 1):
        if text[k] in "+-" and text[k - 1] not in "eE":
            real = _parse_float(text[:k])
            imag = _parse_float(text[k:-1])
            if real is not None and imag is not None:
                return complex(real, imag)
    return None
