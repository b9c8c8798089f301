"""The Go types a template sees, expressed as Python values.

Go's text/template lets the static type of a value decide what a function
accepts and how ``printf`` names it. Data arrives as plain JSON/YAML-shaped
Python values and is normalised once per render into a small closed set:

=====================  ==========================================
Python                  Go
=====================  ==========================================
``None``                a nil ``interface{}``
``bool``, ``int``       ``bool``, ``int`` (int64)
``Uint8``               ``uint8`` (a byte taken out of a string)
``float``, ``complex``  ``float64``, ``complex128``
``str``                 ``string`` (see below for raw bytes)
``StrList``             ``[]string``
``StringerList``        a named ``[]string`` type with a ``String()`` method
``AnyList``             ``[]interface{}``
``dict[str, Any]``      ``map[string]interface{}``
=====================  ==========================================

A list whose items are all strings is a ``[]string``; any other list is a
``[]interface{}``.

Go strings are bytes. Slicing or indexing one can split a UTF-8 sequence, so a
string here may carry such stray bytes as the lone surrogates U+DC80–U+DCFF
(Python's ``surrogateescape``); the executor turns any that survive into
U+FFFD, as Go's own JSON encoding would.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import IntEnum
from typing import Any, ClassVar, Final, TypeVar

from runner.errors import TemplateError

MAX_DATA_DEPTH: Final = 100
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
UINT64_MAX: Final = (1 << 64) - 1
_RAW_BYTE: Final = re.compile("[\udc80-\udcff]")


class StrList(list[str]):
    """A Go ``[]string``."""

    __slots__ = ()
    go_type: ClassVar[str] = "[]string"


class StringerList(StrList):
    """A named ``[]string`` type whose ``String()`` method is ``__str__``.

    Subclasses set ``go_type`` and define ``__str__``; ``fmt`` prints the value
    through the method, and a template may call ``.String`` on it.
    """

    __slots__ = ()


class AnyList(list[Any]):
    """A Go ``[]interface{}``."""

    __slots__ = ()


_L = TypeVar("_L", bound=list[Any])


def same_type(like: _L, items: list[Any]) -> _L:
    """A list of ``like``'s Go type holding ``items`` as they are.

    Slicing keeps a named list type; its constructor may not be the way to make
    one from elements it already holds (it may sort or convert them).
    """
    new = type(like).__new__(type(like))
    new.extend(items)
    return new


class Uint8(int):
    """A Go ``uint8``: what indexing a string yields."""

    __slots__ = ()


class _Invalid:
    """Go's zero ``reflect.Value``: the "no value" a nil interface turns into."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()


class Kind(IntEnum):
    """reflect.Kind of the basic types, the ones ``eq`` and ``lt`` compare."""

    NONE = 0
    BOOL = 1
    INT = 2
    UINT = 3
    FLOAT = 4
    COMPLEX = 5
    STRING = 6


# In isinstance order: bool before int, Uint8 before int.
_TYPES: Final[tuple[tuple[type, str, Kind], ...]] = (
    (bool, "bool", Kind.BOOL),
    (Uint8, "uint8", Kind.UINT),
    (int, "int", Kind.INT),
    (float, "float64", Kind.FLOAT),
    (complex, "complex128", Kind.COMPLEX),
    (str, "string", Kind.STRING),
    (list, "[]interface {}", Kind.NONE),
    (dict, "map[string]interface {}", Kind.NONE),
)


def type_name(v: Any) -> str:
    """Go's ``reflect.Type.String()`` of a normalised non-nil value."""
    if isinstance(v, StrList):
        return v.go_type
    for cls, name, _ in _TYPES:
        if isinstance(v, cls):
            return name
    return type(v).__name__


def basic_kind(v: Any) -> Kind:
    for cls, _, kind in _TYPES:
        if isinstance(v, cls):
            return kind
    return Kind.NONE


def go_bytes(s: str) -> bytes:
    """The bytes of a Go string held in ``s``."""
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # Surrogates outside the escape range cannot come from Go; keep them
        # as their own (invalid) byte sequences rather than fail.
        return s.encode("utf-8", "surrogatepass")


def go_str(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def go_len(s: str) -> int:
    return len(s) if s.isascii() else len(go_bytes(s))


def is_raw_byte(ch: str) -> bool:
    return "\udc80" <= ch <= "\udcff"


def renorm(s: str) -> str:
    """Re-read a joined string, so stray bytes that now form UTF-8 become text again."""
    if s.isascii() or not _RAW_BYTE.search(s):
        return s
    return go_str(go_bytes(s))


def finish_output(s: str) -> str:
    """Stray bytes become U+FFFD, one per byte, as Go's JSON encoding does."""
    s = renorm(s)
    if s.isascii():
        return s
    return _RAW_BYTE.sub("\ufffd", s)


def normalize(value: Any, depth: int = 0) -> Any:
    """Copy ``value`` into the closed set of types the engine works on."""
    if depth > MAX_DATA_DEPTH:
        raise TemplateError(
            f"template data is nested more than {MAX_DATA_DEPTH} levels deep",
            hint="flatten the data the template reads",
        )
    if value is None or isinstance(value, bool | str | complex | float | StringerList):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value if type(value) in (int, Uint8) else int(value)
        # A JSON number too large for an int64 decodes as a float64 in Go.
        return float(value)
    if isinstance(value, Mapping):
        return {_key(k): normalize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, bytes | bytearray):
        return go_str(bytes(value))
    if isinstance(value, list | tuple | set | frozenset):
        items = [normalize(v, depth + 1) for v in value]
        if isinstance(value, AnyList):
            return AnyList(items)
        if isinstance(value, StrList) or all(isinstance(v, str) for v in items):
            return StrList(items)
        return AnyList(items)
    return str(value)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, float) and math.isfinite(k) and k == int(k):
        return str(int(k))
    return str(k)
