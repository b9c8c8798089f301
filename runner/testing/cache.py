"""An in-memory ``StepCache`` that behaves as the SQL one does (LRU by size)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from runner.cache.entry import CacheEntry, EntryInfo, parse_ref
from runner.clock import SYSTEM_CLOCK, Clock
from runner.errors import CacheError
from runner.log import get_logger

_log = get_logger("runner.cache")


class MemoryStepCache:
    """Entries as their stored bytes, so an entry that does not decode is a miss here too.

    ``hits`` and ``misses`` count lookups; ``corrupt(key)`` spoils an entry for
    tests of that rule.
    """

    def __init__(self, max_bytes: int = 1 << 30, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, EntryInfo]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            data, info = found
            try:
                entry = CacheEntry.from_bytes(data)
            except CacheError as exc:
                _log.warning("cache entry unreadable; dropped it", key=key[:12], error=exc.message)
                del self._entries[key]
                self.misses += 1
                return None
            self._entries[key] = (data, replace(info, last_used_at=self._clock.now()))
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None:
        data = entry.to_bytes()
        if len(data) > self.max_bytes:
            return  # it would push out every other entry, then be the next to go
        refs = tuple(f"{sid}:{ver}" for sid, ver in sorted({parse_ref(r) for r in secret_refs}))
        moment = self._clock.now()
        info = EntryInfo(key, namespace, len(data), moment, moment, refs)
        with self._lock:
            self._entries[key] = (data, info)
            self._entries.move_to_end(key)
            total = sum(len(d) for d, _ in self._entries.values())
            while total > self.max_bytes:
                _, (old, _) = self._entries.popitem(last=False)
                total -= len(old)

    # What the SQL cache also offers -------------------------------------------------------

    def entries(self, namespace: str | None = None) -> list[EntryInfo]:
        with self._lock:
            infos = [info for _, info in reversed(self._entries.values())]
        return [i for i in infos if namespace is None or i.namespace == namespace]

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(len(data) for data, _ in self._entries.values())

    def clear(self, namespace: str | None = None) -> int:
        with self._lock:
            doomed = [k for k, (_, i) in self._entries.items() if namespace in (None, i.namespace)]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def invalidate_secret(self, secret_id: str, version: int | None = None) -> int:
        def used(info: EntryInfo) -> bool:
            refs = (parse_ref(r) for r in info.secret_refs)
            return any(sid == secret_id and version in (None, ver) for sid, ver in refs)

        with self._lock:
            doomed = [k for k, (_, info) in self._entries.items() if used(info)]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def corrupt(self, key: str, data: bytes = b"\x00 not an entry") -> None:
        """Replace the stored form of ``key`` (tests of the unreadable-entry rule)."""
        with self._lock:
            _, info = self._entries[key]
            self._entries[key] = (data, info)
