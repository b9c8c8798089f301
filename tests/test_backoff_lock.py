"""The lock SQLite's one connection is taken with (runner.backoff_lock)."""

from __future__ import annotations

import threading
import time

import pytest

from runner.backoff_lock import BackoffLock


def test_one_holder_at_a_time_and_each_update_kept() -> None:
    lock = BackoffLock(first_sleep_s=1e-4, max_sleep_s=1e-3)
    inside = 0
    most = 0
    total = 0

    def work() -> None:
        nonlocal inside, most, total
        for _ in range(300):
            with lock:
                inside += 1
                most = max(most, inside)
                seen = total
                time.sleep(0)  # let another thread run while this one holds it
                total = seen + 1
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (most, total) == (1, 1800)


def test_the_holder_takes_it_again_and_only_the_holder_releases_it() -> None:
    lock = BackoffLock()
    with lock, lock:  # re-entrant
        other: list[bool] = []
        t = threading.Thread(target=lambda: other.append(lock._lock.acquire(blocking=False)))
        t.start()
        t.join()
        assert other == [False]  # still held after the inner block ended
        errors: list[Exception] = []

        def release_elsewhere() -> None:
            try:
                lock.release()
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=release_elsewhere)
        t.start()
        t.join()
        assert [str(e) for e in errors] == ["release of a lock this thread does not hold"]
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()
    assert lock._lock.acquire(blocking=False)


def test_a_waiter_gets_its_turn_behind_a_thread_that_keeps_taking_it() -> None:
    """A thread that takes the lock back again and again cannot keep a waiter out: once
    the waiter has slept its patience it queues on the lock, which a release wakes."""
    lock = BackoffLock(first_sleep_s=1e-3, max_sleep_s=2e-3, patience_s=0.01)
    got = threading.Event()
    stop = time.monotonic() + 30  # a safety net only: the waiter ends the loop

    def greedy() -> None:
        while not got.is_set() and time.monotonic() < stop:
            with lock:
                time.sleep(0.0005)

    def waiter() -> None:
        with lock:
            got.set()

    hog = threading.Thread(target=greedy)
    hog.start()
    time.sleep(0.01)
    late = threading.Thread(target=waiter)
    late.start()
    late.join()
    hog.join()
    assert got.is_set()


def test_sleeps_must_make_sense() -> None:
    with pytest.raises(ValueError, match="sleeps"):
        BackoffLock(first_sleep_s=0)
    with pytest.raises(ValueError, match="sleeps"):
        BackoffLock(first_sleep_s=0.1, max_sleep_s=0.01)
