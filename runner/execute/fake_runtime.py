"""A ``ContainerRuntime`` that runs nothing, for unit tests of the step loop.

It records every step it is asked to run and hands each to a handler the test
supplies. The handler sees the step through a ``FakeStepRun``: it can write
output, change files in the mounted workspace through ``host_path``, look at
the cancel event, and returns an exit code (or a whole ``StepExit`` to play a
timeout), or raises ``ContainerRuntimeError`` to play an engine failure.

A canceled step (the event set before it starts) returns without calling the
handler, as the real runtime kills such a container at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from runner.errors import ImageNotFoundError
from runner.execute.runtime import (
    KILLED_EXIT_CODE,
    OutputCallback,
    OutputStream,
    StepContainer,
    StepExit,
)


@dataclass
class FakeStepRun:
    """One step as its handler sees it."""

    step: StepContainer
    cancel: threading.Event
    _on_output: OutputCallback

    def stdout(self, data: bytes | str) -> None:
        self.emit("stdout", data)

    def stderr(self, data: bytes | str) -> None:
        self.emit("stderr", data)

    def emit(self, stream: OutputStream, data: bytes | str) -> None:
        self._on_output(stream, data.encode() if isinstance(data, str) else data)

    def host_path(self, container_path: str) -> Path:
        """Where ``container_path`` (absolute, or relative to the workdir) lives on the host."""
        path = PurePosixPath(self.step.workdir, container_path)
        # The deepest mount wins, as in a real container.
        for mount in sorted(self.step.mounts, key=lambda m: len(m.target), reverse=True):
            target = PurePosixPath(mount.target)
            if path == target or target in path.parents:
                return mount.source.joinpath(*path.relative_to(target).parts)
        raise ValueError(f"{container_path} is not under any mount of the step")


StepHandler = Callable[[FakeStepRun], int | StepExit]


def succeed(run: FakeStepRun) -> int:
    return 0


@dataclass
class FakeRuntime:
    """Records steps and plays them with ``handler``; thread-safe like the real one.

    ``images`` maps every name ``image_id`` knows to its ID; any other name is
    missing. ``leftovers`` are label sets of containers an earlier run left
    behind, for ``sweep`` to remove.
    """

    handler: StepHandler = succeed
    images: Mapping[str, str] = field(default_factory=dict)
    leftovers: list[Mapping[str, str]] = field(default_factory=list)
    steps: list[StepContainer] = field(default_factory=list)
    image_lookups: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def image_id(self, image: str) -> str:
        with self._lock:
            self.image_lookups.append(image)
        if image in self.images:
            return self.images[image]
        if image in self.images.values():
            return image
        raise ImageNotFoundError(
            f"image {image} is not present locally and could not be pulled",
            hint=f"check the image name, or build or `docker pull {image}` it first",
        )

    def run_step(
        self, step: StepContainer, *, on_output: OutputCallback, cancel: threading.Event
    ) -> StepExit:
        with self._lock:
            self.steps.append(step)
        if cancel.is_set():
            return StepExit(exit_code=KILLED_EXIT_CODE, canceled=True)
        result = self.handler(FakeStepRun(step=step, cancel=cancel, _on_output=on_output))
        if isinstance(result, StepExit):
            return result
        if cancel.is_set():
            return StepExit(exit_code=KILLED_EXIT_CODE, canceled=True)
        return StepExit(exit_code=result)

    def sweep(self, label_key: str, label_value: str | None = None) -> int:
        def matches(labels: Mapping[str, str]) -> bool:
            if label_key not in labels:
                return False
            return label_value is None or labels[label_key] == label_value

        with self._lock:
            keep = [labels for labels in self.leftovers if not matches(labels)]
            removed = len(self.leftovers) - len(keep)
            self.leftovers[:] = keep
        return removed
