"""Removing finished containers off the critical path.

A step's container is done once its exit code is known; removing it costs
the engine another round (tens of milliseconds) that the next step need not
wait for. ``Reaper`` runs such clean-ups on a few background threads, with
a bound on how many may wait (past it, ``submit`` blocks: a slow engine
slows the run rather than piling up containers). ``settle`` waits for all of
them; a run calls it before it reports itself done. What a crash leaves
carries the run's label, for the next run's sweep or `runner cleanup`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from runner.log import get_logger

log = get_logger("runner.execute.reaper")

MAX_PENDING = 16


class Reaper:
    """Runs clean-up callables in the background, at most ``max_pending`` waiting."""

    def __init__(self, *, workers: int = 2, max_pending: int = MAX_PENDING) -> None:
        self._workers = workers
        self._max_pending = max_pending
        self._queue: deque[tuple[Callable[[], None], threading.Event]] = deque()
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._changed = threading.Condition()

    def submit(self, job: Callable[[], None]) -> threading.Event:
        """Queue ``job``; the event is set once it ran (failed or not)."""
        done = threading.Event()
        with self._changed:
            self._changed.wait_for(lambda: len(self._queue) + self._busy < self._max_pending)
            self._queue.append((job, done))
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, name="reaper", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._changed.notify_all()
        return done

    def settle(self) -> None:
        """Block until every queued job has run."""
        with self._changed:
            self._changed.wait_for(lambda: not self._queue and self._busy == 0)

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                job, done = self._queue.popleft()
                self._busy += 1
            try:
                job()
            except Exception:  # a clean-up that fails must not stop the others
                log.exception("a background clean-up failed")
            finally:
                done.set()
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()
