"""A re-entrant lock whose waiters sleep and try again instead of queueing in the kernel.

SQLite's one connection (``runner.db.Database``) is taken in turns by every thread of a
coordinator. With ``threading.RLock`` a release wakes a waiting thread whenever there is
one, and with 8 executors' requests at once there nearly always is. The thread that let
go usually takes the lock back before the woken one runs, so the woken one goes back to
sleep: two context switches and a hop between cores for each turn, for nothing. With 8
threads a claim-and-complete cycle cost a fifth more processor time than with one, and
8 threads reached 5,400 cycles a second where one thread reached 6,900 (issue 21,
measured with ``perf stat``: 1.3 context switches a cycle).

Here a thread that finds the lock taken sleeps, 1 ms at first and then longer, and tries
again: a release wakes nobody, the holder goes on at the rate one thread reaches, and a
waiter takes its turn when it wakes (6,300-6,600 cycles a second, a third of the context
switches). That is how SQLite's own busy handler treats a second writer. Sleepers are not
served in order, so one that has slept ``patience_s`` in all queues on the lock itself,
which a release does wake: no thread waits for ever behind busy ones.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType


class BackoffLock:
    """A re-entrant mutual-exclusion lock (``with lock:``); see the module."""

    def __init__(
        self, *, first_sleep_s: float = 1e-3, max_sleep_s: float = 20e-3, patience_s: float = 0.1
    ) -> None:
        if not 0 < first_sleep_s <= max_sleep_s:
            raise ValueError("sleeps must be positive, the first no longer than the longest")
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._first = first_sleep_s
        self._max = max_sleep_s
        self._patience = patience_s

    def acquire(self) -> None:
        me = threading.get_ident()
        if self._owner == me:  # only this thread ever sets its own id here
            self._depth += 1
            return
        if not self._lock.acquire(blocking=False):
            self._wait()
        self._owner = me
        self._depth = 1

    def _wait(self) -> None:
        sleep = self._first
        slept = 0.0
        while slept < self._patience:
            time.sleep(sleep)
            if self._lock.acquire(blocking=False):
                return
            slept += sleep
            sleep = min(sleep * 2, self._max)
        self._lock.acquire()

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("release of a lock this thread does not hold")
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()

    # ``with`` runs acquire's and release's code itself: taken again by its holder three
    # times a claim-and-complete cycle, the extra calls were a microsecond of it.
    def __enter__(self) -> BackoffLock:
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return self
        if not self._lock.acquire(blocking=False):
            self._wait()
        self._owner = me
        self._depth = 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("release of a lock this thread does not hold")
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()
