"""``Secret``: a value that cannot print itself.

``repr``, ``str`` and ``format`` are all masked, pickling is refused, and the
only way to the plaintext is the explicit ``reveal()``, so a value that slips
into an f-string, a log call or an exception message shows as a mask.
"""

from __future__ import annotations

import hmac
from typing import NoReturn

MASK = "********"


class Secret:
    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The plaintext. Call it only where the value must leave runner."""
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return MASK

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        raise TypeError("Secret is not hashable: it would key a dict by its value")

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)
