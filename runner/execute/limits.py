"""Limits on a whole workspace job: its wall time, and what a step writes to disk.

``JobDeadline`` turns ``--job-timeout`` into each step's timeout (the step's
own, or the time the job has left, whichever is shorter). ``DiskWatcher``
measures, while a step runs, how much the workspace grew since the step
started plus what the step's container wrote to its writable layer (as the
engine reports it), and stops the step through its stop event once that
passes ``--disk-cap``.

Why sampling: a workspace may hold a large repository, and a walk of it
costs time; the watcher samples every half second, and backs off to ten
times the last sample's duration, so it never takes more than about a tenth
of one core. A step can write past the cap between two samples; it is
stopped at the next one. What the step left in the workspace is measured
once more after it ends, so a quick writer is caught too.
"""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from runner.errors import RunnerError, StepFailed
from runner.execute.runtime import ContainerRuntime
from runner.log import get_logger
from runner.sandbox.tighten import format_size

log = get_logger("runner.execute.limits")

STEP_LABEL = "org.runner.step-id"
SAMPLE_INTERVAL_S = 0.5
# A sample may take at most this share of the time between samples.
SAMPLE_SHARE = 0.1

_CAP_HINT = (
    "make the step write less, or raise the cap (--disk-cap or RUNNER_DISK_CAP; on a "
    "coordinator, also the namespace's policy)"
)
_TIMEOUT_HINT = (
    "make the steps quicker, or raise the limit (--job-timeout or RUNNER_JOB_TIMEOUT; on a "
    "coordinator, also the namespace's policy)"
)


class JobDeadline:
    """The wall time a workspace job has left, from its first step on."""

    def __init__(
        self, timeout_s: float | None, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout_s = timeout_s
        self._monotonic = monotonic
        self._end = None if timeout_s is None else monotonic() + timeout_s

    def step_timeout(self, step: int, step_timeout_s: float) -> tuple[float, bool]:
        """The timeout for step ``step``, and whether the job's time is what bounds it.

        Raises ``StepFailed`` when the job has no time left to start the step.
        """
        if self._end is None:
            return step_timeout_s, False
        left = self._end - self._monotonic()
        if left <= 0:
            raise StepFailed(
                f"step {step} did not start: the workspace {self.over()}", hint=_TIMEOUT_HINT
            )
        return (left, True) if left < step_timeout_s else (step_timeout_s, False)

    def timed_out(self, step: int) -> StepFailed:
        return StepFailed(
            f"step {step} was stopped: the workspace {self.over()}", hint=_TIMEOUT_HINT
        )

    def over(self) -> str:
        return f"went over its job timeout ({self.timeout_s or 0:g} s)"


def tree_bytes(root: Path) -> int:
    """Bytes in the regular files under ``root``: apparent sizes, each inode once, no symlinks.

    Files that vanish while it walks are skipped, not an error.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    pending = [str(root)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
                elif stat.S_ISREG(info.st_mode):
                    if info.st_nlink > 1:
                        key = (info.st_dev, info.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    total += info.st_size
    return total


class DiskWatcher:
    """Watches one step's writes while it runs; ``over`` once they passed ``cap``.

    Use as a context manager around the step. With ``cap`` None it watches
    nothing and adds no label. ``labels`` go on the step's container, so the
    runtime can find it to measure its writable layer.
    """

    def __init__(
        self,
        *,
        cap: int | None,
        workspace: Path,
        runtime: ContainerRuntime,
        stop: threading.Event,
        interval_s: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self.cap = cap
        self.over = False
        self.used = 0
        self._workspace = workspace
        self._runtime = runtime
        self._stop_step = stop
        self._interval = interval_s
        self._id = uuid.uuid4().hex
        self._done = threading.Event()
        self._baseline = 0
        self._stopped = False  # killed by the watcher, not found over the cap afterwards
        self._engine_failed = False
        self._thread: threading.Thread | None = None

    @property
    def labels(self) -> Mapping[str, str]:
        return {} if self.cap is None else {STEP_LABEL: self._id}

    def __enter__(self) -> DiskWatcher:
        if self.cap is not None:
            self._baseline = tree_bytes(self._workspace)
            self._thread = threading.Thread(target=self._loop, name="disk-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *raised: object) -> None:
        if self._thread is None:
            return
        self._done.set()
        self._thread.join()
        if not self.over and raised[0] is None:
            # The container is gone; what the step left in the workspace stays.
            self._check(self._grown(), 0)

    def failure(self, step: int) -> StepFailed:
        what = f"step {step} was stopped" if self._stopped else f"step {step} failed"
        return StepFailed(
            f"{what}: the workspace went over its disk cap ({format_size(self.cap or 0)})",
            hint=_CAP_HINT,
        )

    def _loop(self) -> None:
        wait = self._interval  # nothing to measure before the container has started
        while not self._done.wait(wait):
            started = time.monotonic()
            self._check(self._grown(), self._layer())
            if self.over:
                self._stopped = True
                self._stop_step.set()
                return
            wait = max(self._interval, (time.monotonic() - started) / SAMPLE_SHARE)

    def _check(self, workspace: int, layer: int) -> None:
        self.used = workspace + layer
        if self.cap is not None and self.used > self.cap:
            self.over = True

    def _grown(self) -> int:
        return max(0, tree_bytes(self._workspace) - self._baseline)

    def _layer(self) -> int:
        try:
            return self._runtime.writable_bytes(STEP_LABEL, self._id) or 0
        except RunnerError as exc:
            # A measurement that fails is no reason to fail the step: the workspace still counts.
            if not self._engine_failed:
                log.warning("cannot measure the step container's writable layer", error=str(exc))
                self._engine_failed = True
            return 0
