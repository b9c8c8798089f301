"""Exponential back-off with jitter and a cap, for loops that retry a remote call.

``Backoff`` is the policy (a frozen value, so settings can hold one); ``Retry``
is one loop's state. A loop calls ``retry.wait()`` after each failed try and
``retry.reset()`` after a success::

    retry = Retry(Backoff(first_s=0.5, cap_s=10), clock=clock, timeout_s=120)
    while True:
        try:
            send()
            return
        except CoordinatorError:
            if not retry.wait():
                break  # the deadline passed, or the stop event was set

Waiting goes through the ``Clock``, so tests run these loops on a fake clock.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from runner.clock import SYSTEM_CLOCK, Clock

# Jitter spreads executors that failed together, so they do not retry together.
_RNG = random.Random()  # noqa: S311 (jitter, not security)


def jittered(seconds: float, rng: random.Random | None = None, spread: float = 0.25) -> float:
    """``seconds`` scaled by a random factor between ``1 - spread`` and ``1 + spread``."""
    if spread == 0:
        return seconds
    return seconds * (rng or _RNG).uniform(1 - spread, 1 + spread)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Wait ``first_s``, then ``factor`` times longer after each failure, never over ``cap_s``.

    Each wait is scaled by a random factor within ``±jitter`` (0 for none).
    """

    first_s: float
    cap_s: float
    factor: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.cap_s < self.first_s:
            raise ValueError("back-off needs 0 < first_s <= cap_s")
        if self.factor < 1:
            raise ValueError("a back-off factor below 1 would shrink the waits")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")

    def after(self, delay: float) -> float:
        """The delay that follows ``delay``."""
        return min(delay * self.factor, self.cap_s)


class Retry:
    """One retry loop: the next delay, an optional deadline and an optional stop event.

    ``timeout_s`` (from now) bounds how long the loop keeps trying; ``stop``,
    when set, ends a wait at once and makes the loop give up.
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        clock: Clock = SYSTEM_CLOCK,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.backoff = backoff
        self._clock = clock
        self._stop = stop
        self._rng = rng
        self._delay = backoff.first_s
        self._deadline: float | None = None
        self.failures = 0
        if timeout_s is not None:
            self.give_up_after(timeout_s)

    @property
    def delay(self) -> float:
        """What the next wait will be, before jitter (for "retrying in N s" logs)."""
        return self._delay

    @property
    def expired(self) -> bool:
        return self._deadline is not None and self._clock.monotonic() >= self._deadline

    @property
    def stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def give_up_after(self, timeout_s: float) -> None:
        """Set (or move) the deadline to ``timeout_s`` from now."""
        self._deadline = self._clock.monotonic() + timeout_s

    def reset(self) -> None:
        """After a success: the next failure waits ``first_s`` again."""
        self._delay = self.backoff.first_s
        self.failures = 0

    def wait(self) -> bool:
        """After a failed try: wait, lengthen the next wait, and return True to try again.

        Returns False without waiting when the deadline has passed or the stop
        event is set, and False when the stop event ends the wait.
        """
        if self.stopped or self.expired:
            return False
        self.failures += 1
        pause = jittered(self._delay, self._rng, self.backoff.jitter)
        if self._deadline is not None:
            # The last try lands on the deadline rather than after it.
            pause = min(pause, max(self._deadline - self._clock.monotonic(), 0.0))
        self._delay = self.backoff.after(self._delay)
        if self._stop is None:
            self._clock.sleep(pause)
            return True
        return not self._clock.wait(self._stop, pause)
