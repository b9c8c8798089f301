"""Containers made ahead of their turn, so the engine's start is off the critical path.

A step's container costs the engine a create and a start (a few tenths of a
second) before the step can do anything. runner makes it ahead of time:

* the first step of a workspace while earlier workspaces still hold every
  slot of ``-j`` (``job.py`` lets a workspace prepare its tree, its network
  and that container, then wait for its ``WorkspaceTurn``);
* the next step of a workspace while the current one runs (``Ahead``, on a
  thread of its own).

What can be known before the previous step ends decides what is made
ahead: the image, the mounts (the workspace, the spec's mounts, the files of
``files:``), the labels, limits and network. What the previous step's
outputs decide (the script, the environment, the contents of ``files:``)
is rendered at the step's turn and reaches the waiting container then: the
environment with the secrets in its stdin payload, the script and files
written into the host files its mounts already show. A step whose
``creation`` turns out different at its turn (a file secret added, say)
gets a new container instead. A container made for a step that does not
run (its ``if:`` is false, the workspace failed or was canceled) is
discarded at once; the runtime removes it in the background.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from runner.errors import RunnerError
from runner.execute.runtime import ContainerRuntime, PreparedStep, StepContainer
from runner.log import get_logger
from runner.report import Reporter, report_output

log = get_logger("runner.execute.pipeline")


class WorkspaceTurn(Protocol):
    """When a workspace may start running its steps (``job.py`` hands out ``-j`` of them)."""

    def wait(self, cancel: threading.Event) -> None:
        """Block until it is this workspace's turn, or until ``cancel`` is set."""
        ...


class AnyTime:
    """A turn that is always now: one workspace on its own (tests, a single job)."""

    def wait(self, cancel: threading.Event) -> None:
        pass


class Ahead:
    """One step's container, prepared now (``background``: on a thread) for its turn.

    ``take`` gives the prepared container, or None if preparing failed (the
    step then runs in a fresh container, which raises the error in its
    turn, as without pipelining). ``drop`` discards it, now or as soon as
    it is made, without waiting for the engine.
    """

    def __init__(self, runtime: ContainerRuntime, step: StepContainer, *, background: bool) -> None:
        self.step = step
        self._runtime = runtime
        self._prepared: PreparedStep | None = None
        self._made: PreparedStep | None = None  # kept to wait for its removal
        self._dropped = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._make, name="prepare-step", daemon=True)
            self._thread.start()
        else:
            # In the caller's thread, errors and all: this step's turn is next.
            self._prepared = self._made = runtime.prepare(step)

    def _make(self) -> None:
        try:
            prepared = self._runtime.prepare(self.step)
        except RunnerError as exc:
            log.debug("could not prepare a step's container ahead", error=exc.message)
            return
        with self._lock:
            self._prepared = self._made = prepared
            dropped = self._dropped
        if dropped:
            self.drop()

    def take(self) -> PreparedStep | None:
        self.join()
        with self._lock:
            prepared, self._prepared = self._prepared, None
        return prepared

    def drop(self) -> None:
        with self._lock:
            self._dropped = True
            prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.discard()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def wait_removed(self) -> None:
        """Wait until its container (run or discarded) is gone; drop it first."""
        self.drop()
        self.join()
        if self._made is not None:
            self._made.wait_removed()


class Turns:
    """Hands the workspaces of a job, numbered in list order, ``width`` turns at a time.

    A workspace may start (write its tree, open its network, make its first
    container) while earlier ones hold every turn: ``may_start`` allows one
    such workspace waiting per turn, so the next wave is ready when a turn
    frees. Those waiting ones start only once every workspace holding a turn
    is ready to run (``Turn.wait`` says so): they would otherwise compete
    with the running wave for the engine (a network, a container start each)
    and delay it. A workspace's events are held until its turn
    (``HeldReporter``): what is shown as running is what has a turn.
    """

    def __init__(self, width: int) -> None:
        self.width = max(1, width)
        self._granted = 0
        self._ended = 0
        self._holding: set[int] = set()  # turns granted and not ended
        self._ready: set[int] = set()  # workspaces that made their first container
        self.changed = threading.Condition()

    def may_start(self, index: int) -> bool:
        with self.changed:
            if index < self.width:
                return True  # the first wave: nothing to give way to
            return index < self._granted + self.width and self._holding <= self._ready

    def turn(self, index: int, reporter: HeldReporter) -> Turn:
        return Turn(self, index, reporter)

    def poke(self) -> None:
        """Wake whoever waits on ``changed`` (a workspace's thread ended)."""
        with self.changed:
            self.changed.notify_all()

    def _wait(self, index: int, cancel: threading.Event, *, block: bool = True) -> bool:
        with self.changed:
            while True:
                if cancel.is_set():
                    return False  # canceled before its turn: it never runs
                if index < self._ended + self.width:
                    break
                if not block:
                    return False
                # cancel is an Event of its own: look at it now and then.
                self.changed.wait(0.1)
            self._granted += 1
            self._holding.add(index)
            self.changed.notify_all()
            return True

    def _is_ready(self, index: int) -> None:
        with self.changed:
            self._ready.add(index)
            self.changed.notify_all()

    def _end(self, index: int) -> None:
        with self.changed:
            self._ended += 1
            self._holding.discard(index)
            self._ready.discard(index)
            self.changed.notify_all()


class Turn:
    """One workspace's turn: ``wait`` for it (again: at once), ``end`` it once.

    ``missed``: the run was canceled before the turn came, so the workspace
    never ran; its held events are dropped (the caller reports it as not
    started, like the workspaces that were never begun).
    """

    def __init__(self, turns: Turns, index: int, reporter: HeldReporter) -> None:
        self._turns = turns
        self._index = index
        self.reporter = reporter
        self._granted = False
        self.missed = False

    def wait(self, cancel: threading.Event) -> None:
        """Wait for the turn; the workspace is ready to run (its first container is made)."""
        self._turns._is_ready(self._index)
        if self._granted or self.missed:
            return
        if self._turns._wait(self._index, cancel):
            self._granted = True
            self.reporter.open()
        else:
            self.missed = True

    def take_if_free(self, cancel: threading.Event) -> None:
        """Take the turn now if one is free (the first wave): its events flow from the start."""
        if not self._granted and self._turns._wait(self._index, cancel, block=False):
            self._granted = True
            self.reporter.open()

    def end(self) -> None:
        if self.missed:
            self.reporter.drop()
        else:
            self.reporter.open()
        self._turns._end(self._index)


class HeldReporter:
    """Holds a workspace's events until its turn, then passes them (and all later) on."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._held: list[tuple[str, dict[str, Any]]] | None = []
        self._lock = threading.Lock()

    def event(self, name: str, **fields: Any) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append((name, fields))
                return
        self._reporter.event(name, **fields)

    def step_output(self, lines: list[str], **fields: Any) -> None:
        # Passed on in one call, so output costs its bytes (runner.report.report_output).
        with self._lock:
            if self._held is not None:
                self._held.extend(("step.output", {**fields, "line": line}) for line in lines)
                return
        report_output(self._reporter, lines, **fields)

    def open(self) -> None:
        with self._lock:
            held, self._held = self._held, None
            for name, fields in held or ():
                self._reporter.event(name, **fields)

    def drop(self) -> None:
        """Forget what is held; pass nothing on any more."""
        with self._lock:
            self._held = []
            self._reporter = _Nowhere()

    def close(self) -> None:
        self.open()


class _Nowhere:
    def event(self, name: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass
