"""Back-off with jitter, a cap, a deadline and a stop event, on the fake clock."""

from __future__ import annotations

import random
import threading
import time

import pytest

from runner.backoff import Backoff, Retry, jittered
from runner.clock import SYSTEM_CLOCK
from runner.errors import CoordinatorUnavailableError, RunnerError
from runner.testing import FakeClock


def test_waits_grow_by_the_factor_up_to_the_cap_and_a_success_resets_them() -> None:
    clock = FakeClock()
    retry = Retry(Backoff(first_s=1, cap_s=8, jitter=0), clock=clock)
    for _ in range(5):
        assert retry.wait()
    assert clock.sleeps == [1, 2, 4, 8, 8]
    assert retry.failures == 5
    retry.reset()
    assert (retry.delay, retry.failures) == (1, 0)
    assert retry.wait()
    assert clock.sleeps[-1] == 1


def test_jitter_spreads_each_wait_within_its_fraction() -> None:
    clock = FakeClock()
    retry = Retry(Backoff(first_s=10, cap_s=10, jitter=0.25), clock=clock, rng=random.Random(7))
    for _ in range(200):
        retry.wait()
    assert all(7.5 <= s <= 12.5 for s in clock.sleeps)
    assert len(set(clock.sleeps)) > 100
    assert min(clock.sleeps) < 8.5 and max(clock.sleeps) > 11.5


def test_jittered_alone() -> None:
    assert jittered(4.0, spread=0) == 4.0
    rng = random.Random(1)
    assert all(3.0 <= jittered(4.0, rng) <= 5.0 for _ in range(100))


def test_a_deadline_shortens_the_last_wait_and_then_gives_up_without_waiting() -> None:
    clock = FakeClock()
    retry = Retry(Backoff(first_s=2, cap_s=10, jitter=0), clock=clock, timeout_s=5)
    assert retry.wait()
    assert retry.wait()
    assert clock.sleeps == [2, 3]  # 2 + 4 would pass the deadline at 5
    assert retry.expired
    assert not retry.wait()
    assert clock.sleeps == [2, 3]


def test_a_deadline_can_be_set_once_the_loop_is_running() -> None:
    clock = FakeClock()
    retry = Retry(Backoff(first_s=1, cap_s=1, jitter=0), clock=clock)
    for _ in range(10):
        assert retry.wait()  # no deadline: it keeps going
    retry.give_up_after(2)
    assert retry.wait() and retry.wait()
    assert not retry.wait()
    assert clock.monotonic() == 12


def test_a_stop_event_ends_the_loop_before_or_during_a_wait() -> None:
    stop = threading.Event()
    clock = FakeClock()
    retry = Retry(Backoff(first_s=1, cap_s=1, jitter=0), clock=clock, stop=stop)
    assert retry.wait()
    stop.set()
    assert retry.stopped
    assert not retry.wait()
    assert clock.sleeps == [1]

    # On the real clock, a long wait ends as soon as the event is set.
    stop = threading.Event()
    retry = Retry(Backoff(first_s=30, cap_s=30), clock=SYSTEM_CLOCK, stop=stop)
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert not retry.wait()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first_s": 0, "cap_s": 1}, "first_s <= cap_s"),
        ({"first_s": 2, "cap_s": 1}, "first_s <= cap_s"),
        ({"first_s": 1, "cap_s": 2, "factor": 0.5}, "shrink"),
        ({"first_s": 1, "cap_s": 2, "jitter": 1.0}, "fraction"),
        ({"first_s": 1, "cap_s": 2, "jitter": -0.1}, "fraction"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


# The executor's three loops, as they use it -----------------------------------------------------


class Flaky:
    """A remote call that fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise CoordinatorUnavailableError("no answer")
        return "ok"


def test_the_claim_loop_shape_polls_backs_off_and_stops_on_request() -> None:
    clock, stop = FakeClock(), threading.Event()
    retry = Retry(Backoff(first_s=1, cap_s=30), clock=clock, stop=stop, rng=random.Random(3))
    claim = Flaky(failures=3)
    answers = []
    while not stop.is_set():
        try:
            answers.append(claim())
        except RunnerError:
            retry.wait()
            continue
        retry.reset()
        if len(answers) == 2:
            stop.set()
    assert answers == ["ok", "ok"]
    assert claim.calls == 5
    assert len(clock.sleeps) == 3
    assert all(0.75 <= s / d <= 1.25 for s, d in zip(clock.sleeps, [1, 2, 4], strict=True))


def test_the_report_loop_shape_gives_up_at_its_deadline() -> None:
    clock = FakeClock()
    retry = Retry(Backoff(first_s=0.5, cap_s=10, jitter=0), clock=clock, timeout_s=120)
    report = Flaky(failures=1000)
    gave_up = False
    while True:
        try:
            report()
            break
        except RunnerError:
            if not retry.wait():
                gave_up = True
                break
    assert gave_up
    assert clock.monotonic() == 120
    assert max(clock.sleeps) == 10


def test_the_log_loop_shape_retries_until_it_is_sent() -> None:
    clock = FakeClock()
    retry = Retry(Backoff(first_s=0.2, cap_s=5, jitter=0), clock=clock)
    send = Flaky(failures=6)
    while True:
        try:
            send()
            break
        except RunnerError:
            assert retry.wait()
    assert clock.sleeps == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5])
