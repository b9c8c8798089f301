"""Go's ``fmt`` printing (``Sprint``, ``Sprintln``, ``Sprintf``) over template values.

Templates print values exactly as Go does, so a list shows as ``[a b]``, a
float as ``1e+06`` and a mismatched verb as ``%!d(string=x)``. This follows the
behaviour of Go 1.19's ``fmt`` for the types in :mod:`runner.gotemplate.values`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from runner.gotemplate.strconv import (
    LOWER_DIGITS,
    MAX_RUNE,
    UPPER_DIGITS,
    can_backquote,
    format_float,
    is_print,
    quote,
    quote_rune,
    valid_rune,
)
from runner.gotemplate.values import (
    INVALID,
    StringerList,
    StrList,
    Uint8,
    go_bytes,
    type_name,
)

_MASK64: Final = (1 << 64) - 1
_TOO_LARGE: Final = 1_000_000


class _Printer:
    """One Go ``pp``: a buffer plus the flags of the verb being printed."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.arg: Any = None
        self.value: Any = INVALID
        self.erroring = False
        self.clear_flags()

    def clear_flags(self) -> None:
        self.wid = self.prec = 0
        self.wid_present = self.prec_present = False
        self.minus = self.plus = self.sharp = self.space = self.zero = False
        self.plus_v = self.sharp_v = False

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
        if self.sharp and u <= MAX_RUNE and valid_rune(u) and is_print(chr(u)):
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
        r = c if c <= MAX_RUNE and valid_rune(c) else 0xFFFD
        self.pad(chr(r))

    def fmt_qc(self, c: int) -> None:
        r = c if c <= MAX_RUNE else 0xFFFD
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
        self.fmt_integer(v, 16, False, "v", LOWER_DIGITS)
        self.sharp = sharp

    def print_integer(self, v: int, signed: bool, verb: str) -> None:
        u64 = v & _MASK64
        if verb == "v":
            if self.sharp_v and not signed:
                self.fmt_0x64(v, True)
            else:
                self.fmt_integer(v, 10, signed, verb, LOWER_DIGITS)
        elif verb == "d":
            self.fmt_integer(v, 10, signed, verb, LOWER_DIGITS)
        elif verb == "b":
            self.fmt_integer(v, 2, signed, verb, LOWER_DIGITS)
        elif verb in "oO":
            self.fmt_integer(v, 8, signed, verb, LOWER_DIGITS)
        elif verb == "x":
            self.fmt_integer(v, 16, signed, verb, LOWER_DIGITS)
        elif verb == "X":
            self.fmt_integer(v, 16, signed, verb, UPPER_DIGITS)
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
            self.fmt_sx(v, LOWER_DIGITS)
        elif verb == "X":
            self.fmt_sx(v, UPPER_DIGITS)
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
        if isinstance(self.arg, StringerList) and not self.sharp_v and verb in "vsxXq":
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
        if not self.print_basic(arg, verb) and not self.handle_methods(verb):
            self.print_value(arg, verb, 0)

    def print_basic(self, value: Any, verb: str) -> bool:
        """Print a bool, number or string; False for any other value."""
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
        else:
            return False
        return True

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
        if self.print_basic(value, verb):
            return
        if isinstance(value, dict):
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
        cur = _Cursor(fmt, args)
        end = len(fmt)
        while cur.i < end:
            cur.good_argnum = True
            last = cur.i
            pct = fmt.find("%", last)
            cur.i = end if pct < 0 else pct
            if cur.i > last:
                self.buf.append(fmt[last : cur.i])
            if cur.i >= end:
                break
            cur.i += 1
            self.clear_flags()
            if self._flags_then_plain_verb(cur):
                continue

            cur.arg_index()
            self.wid, self.wid_present, star = cur.width()
            if star:
                if not self.wid_present:
                    self.buf.append("%!(BADWIDTH)")
                if self.wid < 0:
                    self.wid = -self.wid
                    self.minus = True
                    self.zero = False
            elif cur.after_index and self.wid_present:
                cur.good_argnum = False

            if cur.i + 1 < end and fmt[cur.i] == ".":
                cur.i += 1
                if cur.after_index:
                    cur.good_argnum = False
                cur.arg_index()
                self.prec, self.prec_present, star = cur.width()
                if star:
                    if self.prec < 0:
                        self.prec = 0
                        self.prec_present = False
                    if not self.prec_present:
                        self.buf.append("%!(BADPREC)")
                elif not self.prec_present:
                    self.prec = 0
                    self.prec_present = True

            if not cur.after_index:
                cur.arg_index()

            if cur.i >= end:
                self.buf.append("%!(NOVERB)")
                break
            verb = fmt[cur.i]
            cur.i += 1
            if verb == "%":
                self.buf.append("%")
            elif not cur.good_argnum:
                self.buf.append("%!" + verb + "(BADINDEX)")
            elif cur.argnum >= len(args):
                self.buf.append("%!" + verb + "(MISSING)")
            else:
                self.print_verb(args[cur.argnum], verb)
                cur.argnum += 1

        if not cur.reordered and cur.argnum < len(args):
            self.clear_flags()
            self.buf.append("%!(EXTRA ")
            for n, arg in enumerate(args[cur.argnum :]):
                if n > 0:
                    self.buf.append(", ")
                if arg is None:
                    self.buf.append("<nil>")
                else:
                    self.buf.append(type_name(arg) + "=")
                    self.print_arg(arg, "v")
            self.buf.append(")")

    def _flags_then_plain_verb(self, cur: _Cursor) -> bool:
        """Read the flags; a lower-case verb right after them prints at once (Go's fast path).

        True if it printed one; else ``cur`` stands where width, precision or an
        argument index may follow.
        """
        fmt = cur.fmt
        while cur.i < len(fmt):
            c = fmt[cur.i]
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
                if "a" <= c <= "z" and cur.argnum < len(cur.args):
                    self.print_verb(cur.args[cur.argnum], c)
                    cur.argnum += 1
                    cur.i += 1
                    return True
                return False
            cur.i += 1
        return False

    def print_verb(self, arg: Any, verb: str) -> None:
        if verb == "v":
            # With %v, "#" asks for Go syntax and "+" for field names, not their usual sense.
            self.sharp_v, self.sharp = self.sharp, False
            self.plus_v, self.plus = self.plus, False
        self.print_arg(arg, verb)


class _Cursor:
    """Where Printf stands in its format and its arguments (Go's argNum, afterIndex, …)."""

    def __init__(self, fmt: str, args: Sequence[Any]) -> None:
        self.fmt = fmt
        self.args = args
        self.i = 0
        self.argnum = 0
        self.after_index = False  # the last thing read was an index like [3]
        self.reordered = False
        self.good_argnum = True

    def arg_index(self) -> None:
        """An explicit argument index ``[n]`` at the cursor, if any (Go's argNumber)."""
        if self.i >= len(self.fmt) or self.fmt[self.i] != "[":
            self.after_index = False
            return
        self.reordered = True
        index, wid, ok = _parse_arg_number(self.fmt[self.i :])
        self.i += wid
        if ok and 0 <= index < len(self.args):
            self.argnum = index
            self.after_index = True
        else:
            self.after_index = ok
            self.good_argnum = False

    def width(self) -> tuple[int, bool, bool]:
        """A number at the cursor, or ``*`` taking it from the next argument.

        Returns (number, present, came from ``*``).
        """
        if self.i < len(self.fmt) and self.fmt[self.i] == "*":
            self.i += 1
            num, present, self.argnum = _int_from_arg(self.args, self.argnum)
            self.after_index = False
            return num, present, True
        num, present, self.i = _parse_num(self.fmt, self.i, len(self.fmt))
        return num, present, False


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
