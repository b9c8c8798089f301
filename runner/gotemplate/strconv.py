"""Go's ``strconv`` quoting and float formatting, as ``fmt`` uses them.

``quote`` is strconv.Quote over a Go string held as text (stray bytes as
surrogate escapes, see :mod:`runner.gotemplate.values`); ``format_float``
is strconv.FormatFloat(v, fmt, prec, 64) for the formats ``fmt`` prints with.
Both follow Go 1.19; "printable" is Python's Unicode table, which may be a
version newer than Go's.
"""

from __future__ import annotations

import math
import struct
from typing import Final

from runner.gotemplate.values import is_raw_byte

LOWER_DIGITS: Final = "0123456789abcdefx"
UPPER_DIGITS: Final = "0123456789ABCDEFX"
MAX_RUNE: Final = 0x10FFFF
_MASK64: Final = (1 << 64) - 1


def is_print(ch: str) -> bool:
    """strconv.IsPrint: letters, marks, numbers, punctuation, symbols and ASCII space."""
    return ch.isprintable() and not is_raw_byte(ch)


def valid_rune(r: int) -> bool:
    return 0 <= r <= MAX_RUNE and not 0xD800 <= r <= 0xDFFF


def _escaped_rune(r: int, quote: str, ascii_only: bool) -> str:
    ch = chr(r)
    if ch == quote or ch == "\\":
        return "\\" + ch
    if ascii_only:
        if r < 0x80 and is_print(ch):
            return ch
    elif valid_rune(r) and is_print(ch):
        return ch
    simple = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
    if r in simple:
        return simple[r]
    if r < 0x20 or r == 0x7F:
        return f"\\x{r:02x}"
    if not valid_rune(r):
        r = 0xFFFD
    if r < 0x10000:
        return f"\\u{r:04x}"
    return f"\\U{r:08x}"


def quote(s: str, *, ascii_only: bool = False) -> str:
    """strconv.Quote / QuoteToASCII."""
    out = ['"']
    for ch in s:
        if is_raw_byte(ch):
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(_escaped_rune(ord(ch), '"', ascii_only))
    out.append('"')
    return "".join(out)


def quote_rune(r: int, *, ascii_only: bool = False) -> str:
    if not valid_rune(r):
        r = 0xFFFD
    return "'" + _escaped_rune(r, "'", ascii_only) + "'"


def can_backquote(s: str) -> bool:
    for ch in s:
        if is_raw_byte(ch) or ch == "\ufeff" or ch == "\ufffd":
            return False
        if ord(ch) < 0x80 and ((ch < " " and ch != "\t") or ch in "`\x7f"):
            return False
    return True


def _shortest_digits(v: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip ``v`` (>= 0), and the point position."""
    if v == 0:
        return "", 0
    return _parse_digits(repr(v))


def _parse_digits(text: str) -> tuple[str, int]:
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    dp = len(whole) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    dp -= len(digits) - len(stripped)
    stripped = stripped.rstrip("0")
    if not stripped:
        return "", 0
    return stripped, dp


def _fmt_e(digits: str, dp: int, prec: int, ch: str) -> str:
    out = [digits[0] if digits else "0"]
    if prec > 0:
        out.append(".")
        frac = digits[1 : prec + 1]
        out.append(frac + "0" * (prec - len(frac)))
    exp = dp - 1 if digits else 0
    sign = "-" if exp < 0 else "+"
    exp = abs(exp)
    out.append(ch + sign + (f"{exp:02d}" if exp < 100 else str(exp)))
    return "".join(out)


def _fmt_f(digits: str, dp: int, prec: int) -> str:
    whole = digits[:dp] + "0" * (dp - min(len(digits), dp)) if dp > 0 else "0"
    if prec <= 0:
        return whole
    frac = "".join(digits[dp + i] if 0 <= dp + i < len(digits) else "0" for i in range(prec))
    return whole + "." + frac


def _format_digits(digits: str, dp: int, prec: int, fmt: str, shortest: bool) -> str:
    if fmt in "eE":
        return _fmt_e(digits, dp, prec, fmt)
    if fmt == "f":
        return _fmt_f(digits, dp, prec)
    nd = len(digits)
    eprec = prec
    if eprec > nd and nd >= dp:
        eprec = nd
    if shortest:
        eprec = 6
    exp = dp - 1
    if exp < -4 or exp >= eprec:
        prec = min(prec, nd)
        return _fmt_e(digits, dp, prec - 1, "e" if fmt == "g" else "E")
    if prec > dp:
        prec = nd
    return _fmt_f(digits, dp, max(prec - dp, 0))


def _float_bits(v: float) -> tuple[bool, int, int]:
    """Sign, mantissa (with the implicit bit) and unbiased exponent, as strconv sees them."""
    bits = struct.unpack("<Q", struct.pack("<d", v))[0]
    neg = bool(bits >> 63)
    exp = (bits >> 52) & 0x7FF
    mant = bits & ((1 << 52) - 1)
    if exp == 0:
        exp += 1
    else:
        mant |= 1 << 52
    return neg, mant, exp - 1023


def _fmt_hex(v: float, prec: int, fmt: str) -> str:
    neg, mant, exp = _float_bits(v)
    if mant == 0:
        exp = 0
    mant = (mant << 8) & _MASK64
    while mant != 0 and mant & (1 << 60) == 0:
        mant = (mant << 1) & _MASK64
        exp -= 1
    if 0 <= prec < 15:
        shift = prec * 4
        extra = (mant << shift) & ((1 << 60) - 1)
        mant >>= 60 - shift
        if extra | (mant & 1) > 1 << 59:
            mant += 1
        mant = (mant << (60 - shift)) & _MASK64
        if mant & (1 << 61):
            mant >>= 1
            exp += 1
    digits = LOWER_DIGITS if fmt == "x" else UPPER_DIGITS
    out = ["-" if neg else "", "0", fmt, "01"[(mant >> 60) & 1]]
    mant = (mant << 4) & _MASK64
    if prec < 0 and mant != 0:
        out.append(".")
        while mant != 0:
            out.append(digits[(mant >> 60) & 15])
            mant = (mant << 4) & _MASK64
    elif prec > 0:
        out.append(".")
        for _ in range(prec):
            out.append(digits[(mant >> 60) & 15])
            mant = (mant << 4) & _MASK64
    out.append("p" if fmt == "x" else "P")
    out.append("-" if exp < 0 else "+")
    out.append(f"{abs(exp):02d}")
    return "".join(out)


def format_float(v: float, fmt: str, prec: int) -> str:
    """strconv.FormatFloat(v, fmt, prec, 64)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if fmt == "b":
        neg, mant, exp = _float_bits(v)
        return ("-" if neg else "") + f"{mant}p{exp - 52:+d}"
    if fmt in "xX":
        return _fmt_hex(v, prec, fmt)
    sign = "-" if math.copysign(1.0, v) < 0 else ""
    a = abs(v)
    shortest = prec < 0
    if shortest:
        digits, dp = _shortest_digits(a)
        if fmt in "eE":
            prec = max(len(digits) - 1, 0)
        elif fmt == "f":
            prec = max(len(digits) - dp, 0)
        else:
            prec = len(digits)
    elif fmt in "eE":
        digits, dp = _parse_digits(format(a, f".{prec}e"))
    elif fmt == "f":
        digits, dp = _parse_digits(format(a, f".{prec}f"))
    else:
        prec = max(prec, 1)
        digits, dp = _parse_digits(format(a, f".{prec - 1}e"))
    return sign + _format_digits(digits, dp, prec, fmt, shortest)
