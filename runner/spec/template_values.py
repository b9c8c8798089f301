"""The Go types a template sees, expressed as Python values.

Templates run with Go's text/template semantics, where the static type of a
value decides what a function accepts and how ``printf`` names it. Context
values arrive as plain JSON/YAML-shaped Python data and are normalised once per
render into a small closed set:

=====================  ==========================================
Python                  Go
=====================  ==========================================
``None``                a nil ``interface{}``
``bool``, ``int``       ``bool``, ``int`` (int64)
``Uint8``               ``uint8`` (a byte taken out of a string)
``float``, ``complex``  ``float64``, ``complex128``
``str``                 ``string`` (see below for raw bytes)
``StrList``             ``[]string``
``SearchResultPaths``   src-cli's ``fileMatchPathList``
``AnyList``             ``[]interface{}``
``dict[str, Any]``      ``map[string]interface{}``
=====================  ==========================================

A list whose items are all strings is a ``[]string`` (so ``join`` accepts the
list of files an output produced); any other list is a ``[]interface{}``.

Go strings are bytes. Slicing or indexing one can split a UTF-8 sequence, so a
string here may carry such stray bytes as the lone surrogates U+DC80–U+DCFF
(Python's ``surrogateescape``); the renderer turns any that survive into
U+FFFD, as Go's own JSON encoding would.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from runner.errors import TemplateError

MAX_DATA_DEPTH: Final = 100
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_RAW_BYTE: Final = re.compile("[\udc80-\udcff]")


class StrList(list[str]):
    """A Go ``[]string``."""

    __slots__ = ()


class SearchResultPaths(StrList):
    """src-cli's ``fileMatchPathList``: sorted paths that print space-joined."""

    __slots__ = ()

    def __init__(self, paths: Iterable[str] = ()) -> None:
        super().__init__(sorted(paths, key=go_bytes))

    def __str__(self) -> str:
        return " ".join(self)


class AnyList(list[Any]):
    """A Go ``[]interface{}``."""

    __slots__ = ()


class Uint8(int):
    """A Go ``uint8``: what indexing a string yields."""

    __slots__ = ()


class _Invalid:
    """Go's zero ``reflect.Value``: the "no value" a nil interface turns into."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()


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


def type_name(v: Any) -> str:
    """Go's ``reflect.Type.String()`` of a normalised non-nil value."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Uint8):
        return "uint8"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, str):
        return "string"
    if isinstance(v, SearchResultPaths):
        return "template.fileMatchPathList"
    if isinstance(v, StrList):
        return "[]string"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return type(v).__name__


def is_list(v: Any) -> bool:
    return isinstance(v, list)


def normalize_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``context`` into the closed set of types the engine works on."""
    out: dict[str, Any] = {}
    for key, value in context.items():
        norm = normalize(value)
        if key == "repository" and isinstance(norm, dict):
            paths = norm.get("search_result_paths")
            if isinstance(paths, StrList) and not isinstance(paths, SearchResultPaths):
                norm["search_result_paths"] = SearchResultPaths(paths)
        out[str(key)] = norm
    return out


def normalize(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DATA_DEPTH:
        raise TemplateError(
            f"template data is nested more than {MAX_DATA_DEPTH} levels deep",
            hint="flatten the step outputs the template reads",
        )
    if value is None or isinstance(value, bool | str | complex):
        return value
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return value if type(value) in (int, Uint8) else int(value)
        # A JSON number too large for an int64 decodes as a float64 in Go.
        return float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, SearchResultPaths):
        return value
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
