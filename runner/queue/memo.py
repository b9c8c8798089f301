"""A bounded, thread-safe memo for what the coordinator works out again and again.

A claim needs its submission's spec parsed and checked; parsing YAML was half
of a claim's CPU time (issue 21), and a submission's bundle never changes
once stored, so the parsed spec (and the bundle) is kept per submission id.
Only what is immutable for its key belongs here, or what carries the stamp it
was made under and is used only while the database shows that same stamp
(a claim's checks, ``runner.queue.stamp``): anything else that can change (a
token's revocation) is read again every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """The ``size`` most recently used answers of ``make(key)``, shared by threads."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a memo keeps at least one entry")
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The kept answer for ``key``, else ``make()``'s (kept unless it raised)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        # Made outside the lock: two threads may both make one, and either answer is right.
        value = make()
        self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
