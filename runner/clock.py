"""Time as a seam: what code that reads the time or waits takes as a parameter.

Stores stamp rows with ``now()``; timeouts and deadlines use ``monotonic()``,
which no clock change can move backwards; loops that retry or poll wait with
``sleep`` or, when a stop event may cut the wait short, ``wait``. Production
code gets ``SYSTEM_CLOCK``; tests pass ``runner.testing.FakeClock``, whose time
moves only when a test says so or when something sleeps on it.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware and in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; only differences mean anything."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (nothing for zero or less)."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass; True when it is set."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(seconds, 0.0))


SYSTEM_CLOCK: Clock = SystemClock()
