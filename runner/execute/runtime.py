"""The seam between the step loop and whatever runs containers.

``ContainerRuntime`` is all the step loop knows of Docker: resolve an image to
its content-addressed ID, run one step in a fresh container, and sweep what an
interrupted run left behind. ``docker_runtime.DockerRuntime`` is the real one,
``runner.testing.FakeRuntime`` the one unit tests drive; one contract suite
(tests/test_runtime_contract.py) holds both to the same behaviour.

A ``StepContainer`` keeps secret values apart from ordinary variables so that
no implementation can put them where ordinary ones go (``Config.Env``, argv,
disk): they stay ``Secret`` objects until the moment they leave for the step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from threading import Event
from typing import Literal, Protocol

from runner.errors import ExecutionError, ImageNotFoundError
from runner.sandbox import Isolation, StepSandbox
from runner.secrets.value import Secret

OutputStream = Literal["stdout", "stderr"]
OutputCallback = Callable[[OutputStream, bytes], None]

# Secret values are exported by a shell, so their names must be shell names.
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# What a container killed with SIGKILL (timeout, cancel, out of memory) exits with.
KILLED_EXIT_CODE = 137

# The label on every network runner makes for a job; its value is the job's id.
NETWORK_LABEL = "org.runner.network"
# Each job network's subnet: 14 addresses, a job needs two or three.
NETWORK_PREFIX = 28


@dataclass(frozen=True, kw_only=True)
class Mount:
    """A host path bind-mounted into the step's container (read-only unless said)."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class StepContainer:
    """Everything needed to run one step in a new container.

    ``image`` should be an image ID from ``ContainerRuntime.image_id``, so the
    step runs exactly the image the cache key names. ``env`` may be seen by
    anyone who can inspect the container; ``secret_env`` never is.
    """

    image: str
    script: str
    workdir: str
    mounts: Sequence[Mount] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, Secret] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30 * 60
    memory_bytes: int | None = None
    cpus: float | None = None
    sandbox: StepSandbox = field(default_factory=StepSandbox)

    def __post_init__(self) -> None:
        if not PurePosixPath(self.workdir).is_absolute():
            raise ExecutionError(
                f"the step's working directory {self.workdir!r} is not an absolute path",
                hint="give the workspace path inside the container, such as /work",
            )
        for mount in self.mounts:
            if not PurePosixPath(mount.target).is_absolute() or not mount.source.is_absolute():
                raise ExecutionError(
                    f"mount {mount.source} -> {mount.target} needs absolute paths on both sides",
                    hint="resolve mount paths against the spec's folder before running",
                )
        for name in self.env:
            if not name or "=" in name or "\0" in name:
                raise ExecutionError(
                    f"environment variable name {name!r} is not valid",
                    hint="use names made of letters, digits and underscores",
                )
        for name, value in self.secret_env.items():
            if not _SHELL_NAME.fullmatch(name):
                raise ExecutionError(
                    f"secret environment variable name {name!r} is not valid",
                    hint="use names made of letters, digits and underscores, not starting "
                    "with a digit",
                )
            if "\0" in value.reveal():
                # Never name the value: only that it cannot be passed.
                raise ExecutionError(
                    f"the value of {name} contains a NUL character, which no environment "
                    "variable can hold",
                    hint="store the value without NUL characters",
                )
        if self.timeout_s <= 0:
            raise ExecutionError("the step timeout must be positive", hint="pass --timeout > 0")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ExecutionError("the memory limit must be positive", hint="raise the limit")
        if self.cpus is not None and self.cpus <= 0:
            raise ExecutionError("the CPU limit must be positive", hint="raise the limit")

    def before_start(self, cancel: Event) -> StepExit | None:
        """What every runtime checks before it creates the step's container.

        Raises ``ExecutionError`` naming a mount whose source does not exist
        (an engine would make an empty folder there instead). Returns the exit
        of a step canceled before it started, or ``None`` to go on.
        """
        for mount in self.mounts:
            if not mount.source.exists():
                raise ExecutionError(
                    f"cannot mount {mount.source} at {mount.target}: it does not exist",
                    hint="create it, or fix the path in the spec",
                )
        return StepExit.killed(canceled=True) if cancel.is_set() else None


@dataclass(frozen=True, kw_only=True)
class NetworkInfo:
    """A job's network: the name containers join, and where it sits on the host.

    ``bridge`` is the host's interface for it (None where a runtime has none,
    as the fake's), ``gateway`` the host's own address on it.
    """

    name: str
    subnet: str
    gateway: str
    bridge: str | None = None
    internal: bool = False


@dataclass(frozen=True, kw_only=True)
class StepExit:
    """How a step's container ended.

    ``timed_out`` and ``canceled`` mean runner killed it; ``oom_killed`` means
    the kernel did because the step went over its memory limit. All three are
    the step's own failure, not the engine's: an engine failure is raised as
    ``ContainerRuntimeError`` instead.
    """

    exit_code: int
    timed_out: bool = False
    canceled: bool = False
    oom_killed: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.canceled or self.oom_killed)

    @classmethod
    def killed(cls, *, timed_out: bool = False, canceled: bool = False) -> StepExit:
        """How a step ends that runner killed, for a timeout or a cancel."""
        return cls(exit_code=KILLED_EXIT_CODE, timed_out=timed_out, canceled=canceled)


class ContainerRuntime(Protocol):
    """Runs steps in containers. Implementations are safe to call from many threads."""

    def image_id(self, image: str) -> str:
        """The content-addressed ID of ``image``, pulling it if it is not present.

        Raises ``ImageNotFoundError`` naming the image if it is neither present
        nor pullable, ``ContainerRuntimeError`` if the engine fails.
        """
        ...

    def check_isolation(self, isolation: Isolation) -> None:
        """Check that steps can run at ``isolation``, before any container starts.

        Raises ``ContainerRuntimeError`` naming the missing runtime (gVisor's
        ``runsc``) and how to install it, or if the engine fails. Asks the
        engine each time: call it once per run or executor start.
        """
        ...

    def run_step(
        self, step: StepContainer, *, on_output: OutputCallback, cancel: Event
    ) -> StepExit:
        """Run ``step`` in a new container and remove the container afterwards.

        Output reaches ``on_output`` in chunks as the step writes it, never
        buffered whole. Setting ``cancel`` kills the container promptly. Raises
        ``ContainerRuntimeError`` only for engine failures (a retryable
        infrastructure failure), never for the step's own non-zero exit.
        """
        ...

    def sweep(self, label_key: str, label_value: str | None = None) -> int:
        """Kill and remove every container carrying the label; return how many."""
        ...

    def writable_bytes(self, label_key: str, label_value: str) -> int | None:
        """Bytes the running container labelled so has written to its writable layer.

        That is what a step writes outside its mounts (its image's folders,
        ``/tmp`` under runc). None when no such container runs (not started
        yet, or gone). Raises ``ContainerRuntimeError`` if the engine fails.
        """
        ...

    def create_network(self, job_id: str, *, internal: bool) -> NetworkInfo:
        """Make a network for one job, labelled ``NETWORK_LABEL=job_id``.

        Its subnet comes from the runtime's pool, never one another network
        holds (concurrent runs included). ``internal``: no route out of it.
        Raises ``ContainerRuntimeError`` if the engine fails or the pool is full.
        """
        ...

    def remove_network(self, name: str) -> None:
        """Remove a job's network; one already gone is fine. Never raises."""
        ...

    def sweep_networks(self, job_id: str | None = None) -> int:
        """Remove the job networks of ``job_id`` (of every job if None); return how many.

        Sweep the containers first: a network still in use stays.
        """
        ...


def missing_image(image: str, why: str | None = None) -> ImageNotFoundError:
    """What every runtime raises for an image that is neither present nor pullable."""
    detail = f" ({why})" if why else ""
    return ImageNotFoundError(
        f"image {image} is not present locally and could not be pulled{detail}",
        hint=f"check the image name, or build or `docker pull {image}` it first",
    )
