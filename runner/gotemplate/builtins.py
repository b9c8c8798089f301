"""Go's built-in template functions, and ``Func``, the shape of any callable one.

The built-ins follow Go 1.19's text/template ``funcs.go`` (``and``/``or``
evaluate their arguments lazily, which the executor does for them). Each
function declares its parameter types as Go's reflection would see them,
because the executor checks arguments the way Go does. Failures raise
CallError with types, never values, in the message.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from runner.gotemplate.fmt import sprint, sprintf, sprintln
from runner.gotemplate.strconv import is_print
from runner.gotemplate.values import (
    INVALID,
    AnyList,
    Kind,
    StrList,
    Uint8,
    basic_kind,
    go_bytes,
    go_len,
    go_str,
    is_raw_byte,
    renorm,
    same_type,
    type_name,
)

# Parameter types a function can declare, as Go's reflection sees them.
REFLECT: Final = "reflect.Value"
ANY: Final = "interface {}"
STRING: Final = "string"
STRINGS: Final = "[]string"


# The most one call (and one rendering) may produce: without a bound a few bytes
# of template can ask for gigabytes, and nothing legitimate comes near this.
MAX_RESULT_CHARS: Final = 4 * 1024 * 1024


def check_result_size(size: int) -> None:
    if size > MAX_RESULT_CHARS:
        raise CallError(
            f"the result would be {size:,} characters, over the limit of "
            f"{MAX_RESULT_CHARS:,} for a template"
        )


class CallError(Exception):
    """A function failed; text/template reports it as ``error calling NAME: …``."""


@dataclass(frozen=True, slots=True)
class Func:
    """A function a template may call, typed as Go's reflection sees it.

    ``params`` are the fixed parameter types and ``variadic`` the type of the
    rest, if any (``None`` in ``params`` or ``variadic``: any value). With
    ``wants_ifaces`` the executor also passes ``ifaces=``, which arguments Go
    would still hold in an ``interface{}`` slot. ``result_in_iface``: the
    function returns ``interface{}``. ``short_circuit`` marks ``and`` and
    ``or``: the truth value that stops the lazy evaluation of the arguments.
    """

    params: tuple[str, ...]
    variadic: str | None
    impl: Callable[..., Any]
    wants_ifaces: bool = False
    result_in_iface: bool = False
    short_circuit: bool | None = None


# -- truth, comparison -------------------------------------------------------------


def _indirect(v: Any) -> Any:
    return INVALID if v is None else v


def is_true(v: Any) -> bool:
    if v is None or v is INVALID:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float | complex):
        return v != 0
    if isinstance(v, str | list | dict):
        return len(v) > 0
    return True


def _kind(v: Any) -> str:
    if v is INVALID:
        return "invalid"
    if isinstance(v, list):
        return "slice"
    if isinstance(v, dict):
        return "map"
    return "other"


def _eq(arg1: Any, *rest: Any) -> bool:
    arg1 = _indirect(arg1)
    if not rest:
        raise CallError("missing argument for comparison")
    k1 = basic_kind(arg1)
    for arg in rest:
        arg = _indirect(arg)
        k2 = basic_kind(arg)
        truth = False
        if k1 != k2:
            if k1 == Kind.INT and k2 == Kind.UINT:
                truth = arg1 >= 0 and arg1 == arg
            elif k1 == Kind.UINT and k2 == Kind.INT:
                truth = arg >= 0 and arg1 == arg
            elif arg1 is not INVALID and arg is not INVALID:
                raise CallError("incompatible types for comparison")
        elif k1 != Kind.NONE:
            truth = arg1 == arg
        else:
            either_nil = arg1 is INVALID or arg is INVALID
            if _kind(arg1) != _kind(arg) and not either_nil:
                raise CallError(f"non-comparable types {type_name(arg1)} and {type_name(arg)}")
            if either_nil:
                truth = arg1 is INVALID and arg is INVALID
            else:
                raise CallError(f"non-comparable type {type_name(arg)}")
        if truth:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _lt(a: Any, b: Any) -> bool:
    a = _indirect(a)
    b = _indirect(b)
    k1 = basic_kind(a)
    k2 = basic_kind(b)
    if Kind.NONE in (k1, k2):
        raise CallError("invalid type for comparison")
    if k1 != k2:
        if k1 == Kind.INT and k2 == Kind.UINT:
            return bool(a < 0 or a < b)
        if k1 == Kind.UINT and k2 == Kind.INT:
            return bool(b >= 0 and a < b)
        raise CallError("incompatible types for comparison")
    if k1 in (Kind.BOOL, Kind.COMPLEX):
        raise CallError("invalid type for comparison")
    if k1 == Kind.STRING and not (a.isascii() and b.isascii()):
        return go_bytes(a) < go_bytes(b)
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return _lt(a, b) or _eq(a, b)


def _gt(a: Any, b: Any) -> bool:
    return not _le(a, b)


def _ge(a: Any, b: Any) -> bool:
    return not _lt(a, b)


def _not(v: Any) -> bool:
    return not is_true(v)


# -- len, index, slice --------------------------------------------------------------


def _len(item: Any) -> int:
    if item is None:
        raise CallError("len of nil pointer")
    if item is INVALID:
        raise CallError("len of nil")
    if isinstance(item, str):
        return go_len(item)
    if isinstance(item, list | dict):
        return len(item)
    raise CallError(f"len of type {type_name(item)}")


def _index_arg(index: Any, cap: int) -> int:
    if index is INVALID:
        raise CallError("cannot index slice/array with nil")
    if isinstance(index, bool) or not isinstance(index, int):
        raise CallError(f"cannot index slice/array with type {type_name(index)}")
    if index < 0 or index > cap:
        raise CallError(f"index out of range: {index}")
    return int(index)


def _index(item: Any, *indexes: Any) -> Any:
    item = _indirect(item)
    if item is INVALID:
        raise CallError("index of untyped nil")
    for raw in indexes:
        index = _indirect(raw)
        if item is None:
            raise CallError("index of nil pointer")
        if isinstance(item, list):
            x = _index_arg(index, len(item))
            if x >= len(item):
                raise CallError(f"index out of range: {x}")
            item = item[x]
        elif isinstance(item, str):
            data = go_bytes(item)
            x = _index_arg(index, len(data))
            if x >= len(data):
                raise CallError(f"index out of range: {x}")
            item = Uint8(data[x])
        elif isinstance(item, dict):
            if index is INVALID:
                raise CallError("value is nil; should be of type string")
            if not isinstance(index, str):
                raise CallError(f"value has type {type_name(index)}; should be string")
            item = item.get(index)
        else:
            raise CallError(f"can't index item of type {type_name(item)}")
    return item


def _slice(item: Any, *indexes: Any, ifaces: Sequence[bool] = ()) -> Any:
    item = _indirect(item)
    if item is INVALID:
        raise CallError("slice of untyped nil")
    if len(indexes) > 3:
        raise CallError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise CallError("cannot 3-index slice a string")
        data: bytes | list[Any] = go_bytes(item)
    elif isinstance(item, list):
        data = item
    else:
        raise CallError(f"can't slice item of type {type_name(item)}")
    idx = [0, len(data), 0]
    for i, index in enumerate(indexes):
        if i + 1 < len(ifaces) and ifaces[i + 1]:
            # Go hands the index over still wrapped in its interface{} slot.
            raise CallError("cannot index slice/array with type interface {}")
        idx[i] = _index_arg(index, len(data))
    if idx[0] > idx[1]:
        raise CallError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise CallError(f"invalid slice index: {idx[1]} > {idx[2]}")
    part = data[idx[0] : idx[1]]
    if isinstance(part, bytes):
        return go_str(part)
    # A slice keeps its type, a named one included.
    return same_type(item, part) if isinstance(item, StrList | AnyList) else AnyList(part)


def _call(fn: Any, *args: Any) -> Any:
    if _indirect(fn) is INVALID:
        raise CallError("call of nil")
    raise CallError(f"non-function of type {type_name(fn)}")


# -- printing and escaping -------------------------------------------------------------


def _eval_args(args: Sequence[Any]) -> str:
    """Go's evalArgs: Sprint, except that a nil argument shows as ``<no value>``."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return renorm(sprint(["<no value>" if a is None else a for a in args]))


def _print(*args: Any) -> str:
    return renorm(sprint(args))


def _println(*args: Any) -> str:
    return renorm(sprintln(args))


def _printf(fmt: str, *args: Any) -> str:
    return renorm(sprintf(fmt, args))


_HTML: Final = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _html(*args: Any) -> str:
    s = _eval_args(args)
    if not any(c in s for c in _HTML):
        return s
    return "".join(_HTML.get(c, c) for c in s)


_JS: Final = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _js(*args: Any) -> str:
    s = _eval_args(args)
    out = []
    for c in s:
        if c in _JS:
            out.append(_JS[c])
        elif c < " ":
            out.append(f"\\u00{ord(c):02X}")
        elif ord(c) < 0x80 or is_raw_byte(c) or is_print(c):
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04X}")
    return "".join(out)


def _urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(go_bytes(_eval_args(args)), safe="")


def _lazy(*args: Any) -> Any:
    raise AssertionError("the executor evaluates and/or itself")


BUILTINS: Final[Mapping[str, Func]] = {
    "and": Func((REFLECT,), REFLECT, _lazy, short_circuit=False),
    "or": Func((REFLECT,), REFLECT, _lazy, short_circuit=True),
    "call": Func((REFLECT,), REFLECT, _call),
    "html": Func((), ANY, _html),
    "index": Func((REFLECT,), REFLECT, _index),
    "slice": Func((REFLECT,), REFLECT, _slice, wants_ifaces=True),
    "js": Func((), ANY, _js),
    "len": Func((REFLECT,), None, _len),
    "not": Func((REFLECT,), None, _not),
    "print": Func((), ANY, _print),
    "printf": Func((STRING,), ANY, _printf),
    "println": Func((), ANY, _println),
    "urlquery": Func((), ANY, _urlquery),
    "eq": Func((REFLECT,), REFLECT, _eq),
    "ge": Func((REFLECT, REFLECT), None, _ge),
    "gt": Func((REFLECT, REFLECT), None, _gt),
    "le": Func((REFLECT, REFLECT), None, _le),
    "lt": Func((REFLECT, REFLECT), None, _lt),
    "ne": Func((REFLECT, REFLECT), None, _ne),
}
