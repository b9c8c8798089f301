"""Redaction for structlog and the standard library's ``logging``.

``RedactingProcessor`` goes twice into the chain. Before the renderer (after
``format_exc_info``) it walks the event dict: keys and values, nested
containers, bytes, exception text, and the ``repr`` of any other object. After
the renderer it scans the rendered line, which catches what only rendering
produces: reprs made by the renderer and its own escaping (JSON's ``\\u00fc``).

An event without a secret, the usual case, costs one search over all its
strings joined together, and comes back as the same object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

from runner.redact.protocol import Redacts

# structlog's bookkeeping for ProcessorFormatter: a LogRecord and a flag.
_INTERNAL_KEYS = frozenset({"_record", "_from_structlog"})
_PLAIN = (bool, int, float, complex, type(None))
# Deeper than this (or a cycle) is rendered by repr, which stops at cycles.
_MAX_DEPTH = 32
# Joins every string of an event for one search; a false match across the
# joint only sends the event down the exact, per-string path.
_JOINT = "\x00"


class RedactingProcessor:
    """A structlog processor that leaves no registered form in an event or a line."""

    __slots__ = ("_redactor",)

    def __init__(self, redactor: Redacts) -> None:
        self._redactor = redactor

    def __call__(self, logger: Any, method_name: str, event: Any) -> Any:
        if isinstance(event, str):
            return self._redactor.redact(event)
        if isinstance(event, bytes | bytearray):
            return self._redactor.redact_bytes(bytes(event))
        if isinstance(event, MutableMapping) and event.get("exc_info"):
            # Placed before format_exc_info after all: render the exception
            # here, so no later formatter can show it unredacted.
            event = structlog.processors.format_exc_info(logger, method_name, dict(event))
        texts: list[str] = []
        blobs: list[bytes] = []
        _collect(event, texts, blobs, 0)
        if self._clean(texts, blobs):
            return event
        return self._walk(event, 0)

    def _clean(self, texts: list[str], blobs: list[bytes]) -> bool:
        if texts:
            joined = _JOINT.join(texts)
            if self._redactor.redact(joined) != joined:
                return False
        if blobs:
            joined_blobs = b"\0".join(blobs)
            if self._redactor.redact_bytes(joined_blobs) != joined_blobs:
                return False
        return True

    def _walk(self, obj: Any, depth: int) -> Any:
        if isinstance(obj, str):
            return self._redactor.redact(obj)
        if isinstance(obj, bytes | bytearray):
            return self._redactor.redact_bytes(bytes(obj))
        if isinstance(obj, _PLAIN):
            return obj
        if depth < _MAX_DEPTH:
            nested = _CONTAINERS.get(type(obj)) or _container_kind(obj)
            if nested is not None:
                return nested(self, obj, depth + 1)
        text = repr(obj)
        redacted = self._redactor.redact(text)
        return obj if redacted == text else redacted

    def _walk_dict(self, obj: Any, depth: int) -> dict[Any, Any]:
        return {
            self._walk(key, depth): value if key in _INTERNAL_KEYS else self._walk(value, depth)
            for key, value in obj.items()
        }

    def _walk_list(self, obj: Any, depth: int) -> list[Any]:
        return [self._walk(item, depth) for item in obj]

    def _walk_tuple(self, obj: Any, depth: int) -> tuple[Any, ...]:
        items = [self._walk(item, depth) for item in obj]
        if hasattr(obj, "_fields"):  # a namedtuple keeps its type and its repr
            return type(obj)._make(items)  # type: ignore[no-any-return]
        return tuple(items)

    def _walk_set(self, obj: Any, depth: int) -> set[Any] | frozenset[Any]:
        items = (self._walk(item, depth) for item in obj)
        return frozenset(items) if isinstance(obj, frozenset) else set(items)


_Walker = Callable[[RedactingProcessor, Any, int], Any]
_CONTAINERS: dict[type, _Walker] = {
    dict: RedactingProcessor._walk_dict,
    list: RedactingProcessor._walk_list,
    tuple: RedactingProcessor._walk_tuple,
    set: RedactingProcessor._walk_set,
    frozenset: RedactingProcessor._walk_set,
}


def _container_kind(obj: Any) -> _Walker | None:
    # Subclasses (OrderedDict, namedtuples, ...) after the exact-type lookup.
    if isinstance(obj, MutableMapping | dict):
        return RedactingProcessor._walk_dict
    if isinstance(obj, list):
        return RedactingProcessor._walk_list
    if isinstance(obj, tuple):
        return RedactingProcessor._walk_tuple
    if isinstance(obj, set | frozenset):
        return RedactingProcessor._walk_set
    return None


def _collect(obj: Any, texts: list[str], blobs: list[bytes], depth: int) -> None:
    """Gather every string an event could show, for one search over all of them."""
    if isinstance(obj, str):
        texts.append(obj)
    elif isinstance(obj, bytes | bytearray):
        blobs.append(bytes(obj))
    elif isinstance(obj, _PLAIN):
        return
    elif depth < _MAX_DEPTH and isinstance(obj, dict | MutableMapping):
        for key, value in obj.items():
            if key not in _INTERNAL_KEYS:
                _collect(key, texts, blobs, depth + 1)
                _collect(value, texts, blobs, depth + 1)
    elif depth < _MAX_DEPTH and isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            _collect(item, texts, blobs, depth + 1)
    else:
        texts.append(repr(obj))


class RedactingFormatter(logging.Formatter):
    """Wraps another handler's formatter and redacts what it produces.

    Our own handler redacts through ``ProcessorFormatter``; a handler that
    formats records itself (a log file someone attached) gets this wrapper.
    Records are not changed, so other handlers see them as they were.
    """

    def __init__(self, inner: logging.Formatter | None, redactor: Redacts) -> None:
        super().__init__()
        self.inner = inner if inner is not None else logging.Formatter()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        try:
            text = self.inner.format(record)
        except (TypeError, ValueError, KeyError) as exc:
            # Raising would make the handler print the record's arguments.
            text = f"{record.msg!s} (could not be formatted: {type(exc).__name__}: {exc})"
        return self._redactor.redact(text)
