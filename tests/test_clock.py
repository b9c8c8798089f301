"""The clock seam: the system clock, and the fake one tests move by hand."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from runner.clock import SYSTEM_CLOCK, Clock, SystemClock
from runner.testing import FakeClock
from runner.testing.clock import START


def test_the_system_clock_tells_aware_utc_time_and_a_monotonic_count() -> None:
    clock: Clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    first = clock.monotonic()
    clock.sleep(0.01)
    clock.sleep(-1)  # nothing to wait for
    assert clock.monotonic() - first >= 0.01
    assert isinstance(SYSTEM_CLOCK, SystemClock)


def test_the_system_clocks_wait_ends_when_the_event_is_set() -> None:
    event = threading.Event()
    assert SYSTEM_CLOCK.wait(event, 0.01) is False
    threading.Timer(0.05, event.set).start()
    started = time.monotonic()
    assert SYSTEM_CLOCK.wait(event, 30) is True
    assert time.monotonic() - started < 5


def test_a_fake_clock_moves_only_when_told_or_slept_on() -> None:
    clock = FakeClock()
    assert clock.now() == START and clock.monotonic() == 0.0
    assert clock.now() == START  # reading does not move it
    clock.advance(1.5)
    assert clock.now() == START + timedelta(seconds=1.5)
    assert clock.monotonic() == 1.5
    clock.sleep(3)
    clock.sleep(-2)  # a negative sleep waits nothing, as time.sleep's callers expect
    assert clock.monotonic() == 4.5
    assert clock.sleeps == [3, -2]
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


def test_a_fake_clocks_wait_returns_at_once() -> None:
    clock = FakeClock(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    event = threading.Event()
    assert clock.wait(event, 10) is False
    assert clock.monotonic() == 10
    event.set()
    assert clock.wait(event, 10) is True
    assert clock.monotonic() == 10  # an event already set does not wait
    assert clock.now() == datetime(2024, 5, 1, 12, 0, 10, tzinfo=UTC)


def test_a_fake_clock_needs_an_aware_start() -> None:
    with pytest.raises(ValueError, match="naive"):
        FakeClock(datetime(2024, 5, 1))


def test_a_fake_clock_is_safe_to_share_between_threads() -> None:
    clock = FakeClock()

    def work() -> None:
        for _ in range(1000):
            clock.sleep(0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(clock.sleeps) == 4000
    assert clock.monotonic() == pytest.approx(4.0)
