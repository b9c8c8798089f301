"""Frozen dataclasses whose methods are written once, not generated per class.

Python 3.11's ``@dataclass`` compiles every method it generates with its own
``exec`` (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, and a frozen
class's ``__setattr__`` and ``__delattr__``): about 0.5 ms a class at import,
which a fully cached `runner run` paid for each record it loads (issue 21).

A record declared as::

    @dataclass(init=False, repr=False, eq=False)
    class Point(Frozen):
        x: int
        y: int = 0

        def __init__(self, x: int, y: int = 0) -> None:
            self._fill(x, y)

is still a dataclass (``fields``, ``replace``, ``asdict`` work on it) and
behaves as ``@dataclass(frozen=True)`` would make it: equality and hash by
its compared fields, class checked; the same ``repr`` (fields with
``repr=False`` left out); assignment and deletion refused with
``FrozenInstanceError``. Only its ``__init__`` is written by hand, handing
every field's value to ``_fill`` in declaration order (tests/test_records.py
checks each record's ``__init__`` against its fields).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from typing import Any, ClassVar


class Frozen:
    """Base of a frozen record: its dataclass options must be ``init=False, repr=False,
    eq=False`` (this class provides the rest)."""

    __slots__ = ()
    # Per class, computed on first use: every field, compared ones, shown ones.
    _record_names: ClassVar[tuple[str, ...]]
    _record_compared: ClassVar[tuple[str, ...]]
    _record_shown: ClassVar[tuple[str, ...]]

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        names = cls.__dict__.get("_record_names")
        if names is None:
            every = fields(cls)  # type: ignore[arg-type]
            names = tuple(f.name for f in every)
            cls._record_names = names
            cls._record_compared = tuple(f.name for f in every if f.compare)
            cls._record_shown = tuple(f.name for f in every if f.repr)
        return names

    def _fill(self, *values: Any) -> None:
        """Set every field, in declaration order (from ``__init__`` only)."""
        names = self._names()
        if len(values) != len(names):
            raise TypeError(f"{type(self).__qualname__}: {len(values)} values for {names}")
        for name, value in zip(names, values, strict=True):
            object.__setattr__(self, name, value)

    def _compared(self) -> tuple[Any, ...]:
        type(self)._names()
        return tuple(getattr(self, n) for n in type(self)._record_compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        type(self)._names()
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in type(self)._record_shown)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


class OrderedFrozen(Frozen):
    """A ``Frozen`` record ordered as ``@dataclass(order=True)`` orders: by its compared
    fields, against a record of its own class only."""

    __slots__ = ()

    def _against(self, other: object) -> tuple[Any, ...] | None:
        if other.__class__ is not self.__class__:
            return None
        return other._compared()

    def __lt__(self, other: object) -> bool:
        theirs = self._against(other)
        return NotImplemented if theirs is None else self._compared() < theirs

    def __le__(self, other: object) -> bool:
        theirs = self._against(other)
        return NotImplemented if theirs is None else self._compared() <= theirs

    def __gt__(self, other: object) -> bool:
        theirs = self._against(other)
        return NotImplemented if theirs is None else self._compared() > theirs

    def __ge__(self, other: object) -> bool:
        theirs = self._against(other)
        return NotImplemented if theirs is None else self._compared() >= theirs


class FrozenByIdentity(Frozen):
    """A ``Frozen`` record compared as ``@dataclass(frozen=True, eq=False, repr=False)``
    compares: by identity, with ``object``'s ``repr`` (a bag of services and callbacks,
    which nothing compares or prints)."""

    __slots__ = ()

    __eq__ = object.__eq__
    __hash__ = object.__hash__
    __repr__ = object.__repr__
