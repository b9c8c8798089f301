"""Go's ``fmt`` printing (``Sprint``, ``Sprintln``, ``Sprintf``) over template values.

Templates print values exactly as Go does, so a list shows as ``[a b]``, a
float as ``1e+06`` and a mismatched verb as ``%!d(string=x)``. This follows the
behaviour of Go 1.19's ``fmt`` and ``strconv`` for the types in
:mod:`runner.spec.template_values`; nothing here reads Go code at run time.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

from runner.spec.template_values import (
    INVALID,
    SearchResultPaths,
    StrList,
    Uint8,
    go_bytes,
    is_raw_byte,
    type_name,
)

_LOWER: Final = "0123456789abcdefx"
_UPPER: Final = "0123456789ABCDEFX"
_MASK64: Final = (1 << 64) - 1
_MAX_RUNE: Final = 0x10FFFF
_TOO_LARGE: Final = 1_000_000


# -- strconv ---------------------------------------------------------------


def is_print(ch: str) -> bool:
    """strconv.IsPrint: letters, marks, numbers, punctuation, symbols and ASCII space."""
    return ch.isprintable() and not is_raw_byte(ch)


def _valid_rune(r: int) -> bool:
    return 0 <= r <= _MAX_RUNE and not 0xD800 <= r <= 0xDFFF


def _escaped_rune(r: int, quote: str, ascii_only: bool) -> str:
    ch = chr(r)
    if ch == quote or ch == "\\":
        return "\\" + ch
    if ascii_only:
        if r < 0x80 and is_print(ch):
            return ch
    elif _valid_rune(r) and is_print(ch):
        return ch
    simple = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
    if r in simple:
        return simple[r]
    if r < 0x20 or r == 0x7F:
        return f"\\x{r:02x}"
    if not _valid_rune(r):
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
    if not _valid_rune(r):
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
    digits = _LOWER if fmt == "x" else _UPPER
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


# -- the printer -----------------------------------------------------------


class _Printer:
    """One Go ``pp``: a buffer plus the flags of the verb being printed."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.arg: Any = None
        self.value: Any = INVALID
        self.erroring = False
        self.clear_flags()

    def clear_flags(self) -> None:
        self.wid = 0
        self.prec = 0
        self.wid_present = False
        self.prec_present = False
        self.minus = False
        self.plus = False
        self.sharp = False
        self.space = False
        self.zero = False
        self.plus_v = False
        self.sharp_v = False

    def text(self) -> str:
        return "".join(self.buf)

    # -- padding (fmt.fmt) ----------------------------------------------------
    def _padding(self, n: int) -> None:
        if n > 0:
            self.buf.append(("0" if self.zero else " ") * n)

    def pad(self, s: str) -> None:
        if not self.wid_present or self.wid == 0:
            self.buf.append(s)
            return
        width = self.wid - len(s)
        if not self.minus:
            self._padding(width)
            self.buf.append(s)
        else:
            self.buf.append(s)
            self._padding(width)

    def _truncate(self, s: str) -> str:
        if self.prec_present:
            return s[: self.prec]
        return s

    def fmt_s(self, s: str) -> None:
        self.pad(self._truncate(s))

    def fmt_sx(self, s: str, digits: str) -> None:
        data = go_bytes(s)
        length = len(data)
        if self.prec_present and self.prec < length:
            length = self.prec
        width = 2 * length
        if width > 0:
            if self.space:
                if self.sharp:
                    width *= 2
                width += length - 1
            elif self.sharp:
                width += 2
        else:
            if self.wid_present:
                self._padding(self.wid)
            return
        if self.wid_present and self.wid > width and not self.minus:
            self._padding(self.wid - width)
        out = []
        if self.sharp:
            out.append("0" + digits[16])
        for i in range(length):
            if self.space and i > 0:
                out.append(" ")
                if self.sharp:
                    out.append("0" + digits[16])
            c = data[i]
            out.append(digits[c >> 4] + digits[c & 0xF])
        self.buf.append("".join(out))
        if self.wid_present and self.wid > width and self.minus:
            self._padding(self.wid - width)

    def fmt_q(self, s: str) -> None:
        s = self._truncate(s)
        if self.sharp and can_backquote(s):
            self.pad("`" + s + "`")
            return
        self.pad(quote(s, ascii_only=self.plus))

    def fmt_boolean(self, v: bool) -> None:
        self.pad("true" if v else "false")

    def fmt_unicode(self, u: int) -> None:
        prec = 4
        if self.prec_present and self.prec > 4:
            prec = self.prec
        tail = ""
        if self.sharp and u <= _MAX_RUNE and _valid_rune(u) and is_print(chr(u)):
            tail = " '" + chr(u) + "'"
        hexpart = f"{u:X}"
        if len(hexpart) < prec:
            hexpart = "0" * (prec - len(hexpart)) + hexpart
        old_zero = self.zero
        self.zero = False
        self.pad("U+" + hexpart + tail)
        self.zero = old_zero

    def fmt_integer(self, u: int, base: int, signed: bool, verb: str, digits: str) -> None:
        negative = signed and u < 0
        if negative:
            u = -u
        prec = 0
        if self.prec_present:
            prec = self.prec
            if prec == 0 and u == 0:
                old_zero = self.zero
                self.zero = False
                self._padding(self.wid)
                self.zero = old_zero
                return
        elif self.zero and self.wid_present:
            prec = self.wid
            if negative or self.plus or self.space:
                prec -= 1
        if base == 10:
            num = str(u)
        elif base == 16:
            num = "".join(digits[int(c, 16)] for c in format(u, "x"))
        elif base == 8:
            num = format(u, "o")
        else:
            num = format(u, "b")
        if len(num) < prec:
            num = "0" * (prec - len(num)) + num
        if self.sharp:
            if base == 2:
                num = "0b" + num
            elif base == 8:
                if num[0] != "0":
                    num = "0" + num
            elif base == 16:
                num = "0" + digits[16] + num
        if verb == "O":
            num = "0o" + num
        if negative:
            num = "-" + num
        elif self.plus:
            num = "+" + num
        elif self.space:
            num = " " + num
        old_zero = self.zero
        self.zero = False
        self.pad(num)
        self.zero = old_zero

    def fmt_c(self, c: int) -> None:
        r = c if c <= _MAX_RUNE and _valid_rune(c) else 0xFFFD
        self.pad(chr(r))

    def fmt_qc(self, c: int) -> None:
        r = c if c <= _MAX_RUNE else 0xFFFD
        self.pad(quote_rune(r, ascii_only=self.plus))

    def fmt_float_raw(self, v: float, verb: str, prec: int) -> None:
        if self.prec_present:
            prec = self.prec
        num = format_float(v, verb, prec)
        if num[0] not in "+-":
            num = "+" + num
        if self.space and num[0] == "+" and not self.plus:
            num = " " + num[1:]
        if num[1] in "IN":
            old_zero = self.zero
            self.zero = False
            if num[1] == "N" and not self.space and not self.plus:
                num = num[1:]
            self.pad(num)
            self.zero = old_zero
            return
        if self.sharp and verb != "b":
            num = self._sharp_float(num, verb, prec)
        if self.plus or num[0] != "+":
            if self.zero and self.wid_present and self.wid > len(num):
                self.buf.append(num[0])
                self._padding(self.wid - len(num))
                self.buf.append(num[1:])
                return
            self.pad(num)
            return
        self.pad(num[1:])

    @staticmethod
    def _sharp_float(num: str, verb: str, prec: int) -> str:
        digits = 0
        if verb in "vgGx":
            digits = 6 if prec == -1 else prec
        tail = ""
        has_point = False
        saw_nonzero = False
        body = [num[0]]
        i = 1
        while i < len(num):
            c = num[i]
            if c == ".":
                has_point = True
            elif c in "pP" or (c in "eE" and verb not in "xX"):
                tail = num[i:]
                break
            else:
                if c != "0":
                    saw_nonzero = True
                if saw_nonzero:
                    digits -= 1
            body.append(c)
            i += 1
        out = "".join(body)
        if not has_point:
            if len(out) == 2 and out[1] == "0":
                digits -= 1
            out += "."
        if digits > 0:
            out += "0" * digits
        return out + tail

    # -- pp ---------------------------------------------------------------
    def bad_verb(self, verb: str) -> None:
        self.erroring = True
        self.buf.append("%!" + verb + "(")
        if self.arg is not None:
            self.buf.append(type_name(self.arg) + "=")
            self.print_arg(self.arg, "v")
        elif self.value is not INVALID and self.value is not None:
            self.buf.append(type_name(self.value) + "=")
            self.print_value(self.value, "v", 0)
        else:
            self.buf.append("<nil>")
        self.buf.append(")")
        self.erroring = False

    def fmt_bool(self, v: bool, verb: str) -> None:
        if verb in "tv":
            self.fmt_boolean(v)
        else:
            self.bad_verb(verb)

    def fmt_0x64(self, v: int, leading0x: bool) -> None:
        sharp = self.sharp
        self.sharp = leading0x
        self.fmt_integer(v, 16, False, "v", _LOWER)
        self.sharp = sharp

    def print_integer(self, v: int, signed: bool, verb: str) -> None:
        u64 = v & _MASK64
        if verb == "v":
            if self.sharp_v and not signed:
                self.fmt_0x64(v, True)
            else:
                self.fmt_integer(v, 10, signed, verb, _LOWER)
        elif verb == "d":
            self.fmt_integer(v, 10, signed, verb, _LOWER)
        elif verb == "b":
            self.fmt_integer(v, 2, signed, verb, _LOWER)
        elif verb in "oO":
            self.fmt_integer(v, 8, signed, verb, _LOWER)
        elif verb == "x":
            self.fmt_integer(v, 16, signed, verb, _LOWER)
        elif verb == "X":
            self.fmt_integer(v, 16, signed, verb, _UPPER)
        elif verb == "c":
            self.fmt_c(u64)
        elif verb == "q":
            self.fmt_qc(u64)
        elif verb == "U":
            self.fmt_unicode(u64)
        else:
            self.bad_verb(verb)

    def print_float(self, v: float, verb: str) -> None:
        if verb == "v":
            self.fmt_float_raw(v, "g", -1)
        elif verb in "bgGxX":
            self.fmt_float_raw(v, verb, -1)
        elif verb in "feE":
            self.fmt_float_raw(v, verb, 6)
        elif verb == "F":
            self.fmt_float_raw(v, "f", 6)
        else:
            self.bad_verb(verb)

    def print_complex(self, v: complex, verb: str) -> None:
        if verb in "vbgGxXfFeE":
            old_plus = self.plus
            self.buf.append("(")
            self.print_float(v.real, verb)
            self.plus = True
            self.print_float(v.imag, verb)
            self.buf.append("i)")
            self.plus = old_plus
        else:
            self.bad_verb(verb)

    def print_string(self, v: str, verb: str) -> None:
        if verb == "v":
            if self.sharp_v:
                self.fmt_q(v)
            else:
                self.fmt_s(v)
        elif verb == "s":
            self.fmt_s(v)
        elif verb == "x":
            self.fmt_sx(v, _LOWER)
        elif verb == "X":
            self.fmt_sx(v, _UPPER)
        elif verb == "q":
            self.fmt_q(v)
        else:
            self.bad_verb(verb)

    def fmt_pointer(self, value: Any, verb: str) -> None:
        if not isinstance(value, list | dict):
            self.bad_verb(verb)
            return
        # Addresses are not reproducible; print a fixed stand-in of Go's shape.
        u = 0xC000000000
        if verb == "v":
            if self.sharp_v:
                self.buf.append("(" + type_name(value) + ")(")
                self.fmt_0x64(u, True)
                self.buf.append(")")
            else:
                self.fmt_0x64(u, not self.sharp)
        elif verb == "p":
            self.fmt_0x64(u, not self.sharp)
        elif verb in "bodxX":
            self.print_integer(u, False, verb)
        else:
            self.bad_verb(verb)

    def handle_methods(self, verb: str) -> bool:
        if self.erroring:
            return False
        if verb == "w":
            self.bad_verb(verb)
            return True
        if isinstance(self.arg, SearchResultPaths) and not self.sharp_v and verb in "vsxXq":
            self.print_string(str(self.arg), verb)
            return True
        return False

    def print_arg(self, arg: Any, verb: str) -> None:
        self.arg = arg
        self.value = INVALID
        if arg is None:
            if verb in "Tv":
                self.pad("<nil>")
            else:
                self.bad_verb(verb)
            return
        if verb == "T":
            self.fmt_s(type_name(arg))
            return
        if verb == "p":
            self.fmt_pointer(arg, "p")
            return
        if isinstance(arg, bool):
            self.fmt_bool(arg, verb)
        elif isinstance(arg, float):
            self.print_float(arg, verb)
        elif isinstance(arg, complex):
            self.print_complex(arg, verb)
        elif isinstance(arg, int):
            self.print_integer(arg, not isinstance(arg, Uint8), verb)
        elif isinstance(arg, str):
            self.print_string(arg, verb)
        elif not self.handle_methods(verb):
            self.print_value(arg, verb, 0)

    def print_value(self, value: Any, verb: str, depth: int, *, iface: bool = False) -> None:
        """``iface``: the value sits in an ``interface{}`` slot (a list or map element)."""
        if iface and value is None:
            if self.sharp_v:
                self.buf.append("interface {}(nil)")
            else:
                self.buf.append("<nil>")
            return
        if iface:
            depth += 1
        if depth > 0 and value is not None:
            self.arg = value
            if self.handle_methods(verb):
                return
        self.arg = None
        self.value = value
        if isinstance(value, bool):
            self.fmt_bool(value, verb)
        elif isinstance(value, float):
            self.print_float(value, verb)
        elif isinstance(value, complex):
            self.print_complex(value, verb)
        elif isinstance(value, int):
            self.print_integer(value, not isinstance(value, Uint8), verb)
        elif isinstance(value, str):
            self.print_string(value, verb)
        elif isinstance(value, dict):
            self._print_map(value, verb, depth)
        elif isinstance(value, list):
            self._print_list(value, verb, depth)
        else:
            self.buf.append("<nil>" if depth else "<invalid reflect.Value>")

    def _print_map(self, value: dict[str, Any], verb: str, depth: int) -> None:
        if self.sharp_v:
            self.buf.append(type_name(value) + "{")
        else:
            self.buf.append("map[")
        for i, key in enumerate(sorted(value, key=go_bytes)):
            if i > 0:
                self.buf.append(", " if self.sharp_v else " ")
            self.print_value(key, verb, depth + 1)
            self.buf.append(":")
            self.print_value(value[key], verb, depth + 1, iface=True)
        self.buf.append("}" if self.sharp_v else "]")

    def _print_list(self, value: list[Any], verb: str, depth: int) -> None:
        iface = not isinstance(value, StrList)
        if self.sharp_v:
            self.buf.append(type_name(value) + "{")
            sep = ", "
        else:
            self.buf.append("[")
            sep = " "
        for i, item in enumerate(value):
            if i > 0:
                self.buf.append(sep)
            self.print_value(item, verb, depth + 1, iface=iface)
        self.buf.append("}" if self.sharp_v else "]")

    # -- Printf -------------------------------------------------------------
    def do_printf(self, fmt: str, args: Sequence[Any]) -> None:
        end = len(fmt)
        argnum = 0
        after_index = False
        reordered = False
        i = 0
        while i < end:
            good_argnum = True
            last = i
            while i < end and fmt[i] != "%":
                i += 1
            if i > last:
                self.buf.append(fmt[last:i])
            if i >= end:
                break
            i += 1
            self.clear_flags()
            simple_done = False
            while i < end:
                c = fmt[i]
                if c == "#":
                    self.sharp = True
                elif c == "0":
                    self.zero = not self.minus
                elif c == "+":
                    self.plus = True
                elif c == "-":
                    self.minus = True
                    self.zero = False
                elif c == " ":
                    self.space = True
                else:
                    if "a" <= c <= "z" and argnum < len(args):
                        if c == "v":
                            self.sharp_v, self.sharp = self.sharp, False
                            self.plus_v, self.plus = self.plus, False
                        self.print_arg(args[argnum], c)
                        argnum += 1
                        i += 1
                        simple_done = True
                    break
                i += 1
            if simple_done:
                continue

            argnum, i, after_index, ok, reordered = self._arg_number(
                argnum, fmt, i, len(args), reordered
            )
            good_argnum = good_argnum and ok
            if i < end and fmt[i] == "*":
                i += 1
                self.wid, self.wid_present, argnum = _int_from_arg(args, argnum)
                if not self.wid_present:
                    self.buf.append("%!(BADWIDTH)")
                if self.wid < 0:
                    self.wid = -self.wid
                    self.minus = True
                    self.zero = False
                after_index = False
            else:
                self.wid, self.wid_present, i = _parse_num(fmt, i, end)
                if after_index and self.wid_present:
                    good_argnum = False

            if i + 1 < end and fmt[i] == ".":
                i += 1
                if after_index:
                    good_argnum = False
                argnum, i, after_index, ok, reordered = self._arg_number(
                    argnum, fmt, i, len(args), reordered
                )
                good_argnum = good_argnum and ok
                if i < end and fmt[i] == "*":
                    i += 1
                    self.prec, self.prec_present, argnum = _int_from_arg(args, argnum)
                    if self.prec < 0:
                        self.prec = 0
                        self.prec_present = False
                    if not self.prec_present:
                        self.buf.append("%!(BADPREC)")
                    after_index = False
                else:
                    self.prec, self.prec_present, i = _parse_num(fmt, i, end)
                    if not self.prec_present:
                        self.prec = 0
                        self.prec_present = True

            if not after_index:
                argnum, i, after_index, ok, reordered = self._arg_number(
                    argnum, fmt, i, len(args), reordered
                )
                good_argnum = good_argnum and ok

            if i >= end:
                self.buf.append("%!(NOVERB)")
                break
            verb = fmt[i]
            i += 1
            if verb == "%":
                self.buf.append("%")
            elif not good_argnum:
                self.buf.append("%!" + verb + "(BADINDEX)")
            elif argnum >= len(args):
                self.buf.append("%!" + verb + "(MISSING)")
            else:
                if verb == "v":
                    self.sharp_v, self.sharp = self.sharp, False
                    self.plus_v, self.plus = self.plus, False
                self.print_arg(args[argnum], verb)
                argnum += 1

        if not reordered and argnum < len(args):
            self.clear_flags()
            self.buf.append("%!(EXTRA ")
            for n, arg in enumerate(args[argnum:]):
                if n > 0:
                    self.buf.append(", ")
                if arg is None:
                    self.buf.append("<nil>")
                else:
                    self.buf.append(type_name(arg) + "=")
                    self.print_arg(arg, "v")
            self.buf.append(")")

    @staticmethod
    def _arg_number(
        argnum: int, fmt: str, i: int, nargs: int, reordered: bool
    ) -> tuple[int, int, bool, bool, bool]:
        """Returns (argnum, i, found, good, reordered)."""
        if len(fmt) <= i or fmt[i] != "[":
            return argnum, i, False, True, reordered
        index, wid, ok = _parse_arg_number(fmt[i:])
        if ok and 0 <= index < nargs:
            return index, i + wid, True, True, True
        return argnum, i + wid, ok, False, True


def _parse_num(s: str, start: int, end: int) -> tuple[int, bool, int]:
    if start >= end:
        return 0, False, end
    num = 0
    isnum = False
    i = start
    while i < end and "0" <= s[i] <= "9":
        if num > _TOO_LARGE or num < -_TOO_LARGE:
            return 0, False, end
        num = num * 10 + ord(s[i]) - 48
        isnum = True
        i += 1
    return num, isnum, i


def _parse_arg_number(fmt: str) -> tuple[int, int, bool]:
    if len(fmt) < 3:
        return 0, 1, False
    for i in range(1, len(fmt)):
        if fmt[i] == "]":
            width, ok, newi = _parse_num(fmt, 1, i)
            if not ok or newi != i:
                return 0, i + 1, False
            return width - 1, i + 1, True
    return 0, 1, False


def _int_from_arg(args: Sequence[Any], argnum: int) -> tuple[int, bool, int]:
    num = 0
    is_int = False
    new_argnum = argnum
    if argnum < len(args):
        arg = args[argnum]
        if isinstance(arg, int) and not isinstance(arg, bool):
            num = arg
            is_int = True
        new_argnum = argnum + 1
        if num > _TOO_LARGE or num < -_TOO_LARGE:
            num = 0
            is_int = False
    return num, is_int, new_argnum


def sprint(args: Sequence[Any]) -> str:
    p = _Printer()
    prev_string = False
    for n, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if n > 0 and not is_string and not prev_string:
            p.buf.append(" ")
        p.print_arg(arg, "v")
        prev_string = is_string
    return p.text()


def sprintln(args: Sequence[Any]) -> str:
    p = _Printer()
    for n, arg in enumerate(args):
        if n > 0:
            p.buf.append(" ")
        p.print_arg(arg, "v")
    p.buf.append("\n")
    return p.text()


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    p = _Printer()
    p.do_printf(fmt, args)
    return p.text()
