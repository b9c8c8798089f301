"""The process's active redactor: every value resolved in this process, in one place.

Logging, error messages and container output all consult it on every use, so
a value registered after logging was configured is still covered. Values are
registered under a scope: ``None`` for the life of the process (a local run),
or a job's scope that an executor releases only after that job's last log
chunk and result have been flushed.

Registration rebuilds the automaton lazily, on the next read, so registering
a thousand values costs one build; reading is an attribute check.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.redact.matcher import PreparedSecret, Redactor, prepare
from runner.redact.stream import StreamRedactor

if TYPE_CHECKING:
    from runner.secrets.value import Secret


class ActiveRedactor:
    """A thread-safe, growing set of secrets with the ``Redactor`` interface."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[str | None, list[PreparedSecret]] = {}
        self._current = Redactor()
        self._dirty = False

    def __repr__(self) -> str:
        return f"ActiveRedactor({self.current()!r})"

    def register(self, name: str, value: str | Secret, *, scope: str | None = None) -> None:
        """Redact ``value`` (and its encodings) as ``[REDACTED:name]`` from now on.

        Raises ``SecretValidationError`` for a value shorter than 8 characters.
        """
        self.register_many({name: value}, scope=scope)

    def register_many(
        self,
        values: Mapping[str, str | Secret] | Iterable[tuple[str, str | Secret]],
        *,
        scope: str | None = None,
    ) -> None:
        items = values.items() if isinstance(values, Mapping) else values
        # Prepared outside the lock: computing forms is the slow part.
        prepared = [prepare(name, value) for name, value in items]
        if not prepared:
            return
        with self._lock:
            self._scopes.setdefault(scope, []).extend(prepared)
            self._dirty = True

    def release(self, scope: str) -> None:
        """Forget the values of a finished job (after its output was flushed)."""
        with self._lock:
            if self._scopes.pop(scope, None) is not None:
                self._dirty = True

    @contextmanager
    def scoped(self, scope: str) -> Iterator[ActiveScope]:
        """Register values for the duration of a ``with`` block, then release them."""
        try:
            yield ActiveScope(self, scope)
        finally:
            self.release(scope)

    def clear(self) -> None:
        """Forget everything, the process scope included (for tests)."""
        with self._lock:
            self._scopes.clear()
            self._dirty = True

    def current(self) -> Redactor:
        """An immutable snapshot with every value registered so far."""
        if self._dirty:
            with self._lock:
                if self._dirty:
                    every = [p for prepared in self._scopes.values() for p in prepared]
                    self._current = Redactor.from_prepared(every)
                    self._dirty = False
        return self._current

    def redact(self, text: str) -> str:
        return self.current().redact(text)

    def redact_bytes(self, data: bytes) -> bytes:
        return self.current().redact_bytes(data)

    def knows_values(self) -> bool:
        return self.current().knows_values()

    def stream(self) -> StreamRedactor:
        """A stream that also covers values registered while it is open."""
        return StreamRedactor(self.current)


class ActiveScope:
    """Registers values under one scope of an ``ActiveRedactor``."""

    __slots__ = ("_owner", "scope")

    def __init__(self, owner: ActiveRedactor, scope: str) -> None:
        self._owner = owner
        self.scope = scope

    def register(self, name: str, value: str | Secret) -> None:
        self._owner.register(name, value, scope=self.scope)

    def register_many(
        self, values: Mapping[str, str | Secret] | Iterable[tuple[str, str | Secret]]
    ) -> None:
        self._owner.register_many(values, scope=self.scope)


_ACTIVE = ActiveRedactor()


def active() -> ActiveRedactor:
    """The process-wide redactor that logging and error messages consult."""
    return _ACTIVE
