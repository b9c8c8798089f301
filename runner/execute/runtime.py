"""The seam between the step loop and whatever runs containers.

``ContainerRuntime`` is all the step loop knows of Docker: resolve an image to
its content-addressed ID, run one step in a fresh container, and sweep what an
interrupted run left behind. ``docker_runtime.DockerRuntime`` is the real one,
``runner.testing.FakeRuntime`` the one unit tests drive; one contract suite
(tests/test_runtime_contract.py) holds both to the same behaviour.

Containers can also be made ahead of their turn: ``prepare`` creates and
starts one that waits for its payload on stdin, and its ``PreparedStep``
runs the step (rendered at its turn) or is discarded unused; either way the
container is removed in the background and ``settle`` waits for that.

A ``StepContainer`` keeps secret values apart from ordinary variables so that
no implementation can put them where ordinary ones go (``Config.Env``, argv,
disk): they stay ``Secret`` objects until the moment they leave for the step.
``secret_files`` are values delivered as files: each is written to a tmpfs
mounted at ``SECRET_FILES_DIR`` in that step's container alone, and the
variable holds the file's path (``secret_file_path``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from threading import Event
from typing import Literal, Protocol

from runner.errors import ExecutionError, ImageNotFoundError
from runner.records import Frozen
from runner.sandbox import Isolation, StepSandbox
from runner.secrets.value import Secret

OutputStream = Literal["stdout", "stderr"]
OutputCallback = Callable[[OutputStream, bytes], None]

# Secret values are exported by a shell, so their names must be shell names.
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# What a container killed with SIGKILL (timeout, cancel, out of memory) exits with.
KILLED_EXIT_CODE = 137

# The label on every network runner makes for a job; its value is the job's id. A
# network's holder (``ContainerRuntime.hold_network``) carries it too, so the sweep
# of a job's networks finds the containers that keep them in use.
NETWORK_LABEL = "org.runner.network"
# On a holder only: the name of the network it holds.
HOLDER_LABEL = "org.runner.holds"
# Each job network's subnet: 14 addresses, a job needs two or three.
NETWORK_PREFIX = 28

# Where a step's file secrets are: a tmpfs mounted there (the folder is the mount
# point itself, so nothing of it is in the image's layers or the container's).
SECRET_FILES_DIR = "/run/runner-secrets"  # noqa: S105  (a path, not a password)


def secret_file_path(name: str) -> str:
    """The path a file secret's variable holds inside the step's container."""
    return f"{SECRET_FILES_DIR}/{name}"


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class Mount(Frozen):
    """A host path bind-mounted into the step's container (read-only unless said)."""

    source: Path
    target: str
    read_only: bool = True

    def __init__(self, *, source: Path, target: str, read_only: bool = True) -> None:
        self._fill(source, target, read_only)


@dataclass(init=False, repr=False, eq=False)
class StepContainer(Frozen):
    """Everything needed to run one step in a new container.

    ``image`` should be an image ID from ``ContainerRuntime.image_id``, so the
    step runs exactly the image the cache key names. ``env`` may be seen by
    anyone who can inspect the container; ``secret_env`` never is, nor
    ``secret_files`` (variable name -> the file's content; the step sees the
    variable as the file's path on a tmpfs).
    """

    image: str
    script: str
    workdir: str
    mounts: Sequence[Mount] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, Secret] = field(default_factory=dict)
    secret_files: Mapping[str, Secret] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30 * 60
    memory_bytes: int | None = None
    cpus: float | None = None
    sandbox: StepSandbox = field(default_factory=StepSandbox)

    def __init__(
        self,
        *,
        image: str,
        script: str,
        workdir: str,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, Secret] | None = None,
        secret_files: Mapping[str, Secret] | None = None,
        labels: Mapping[str, str] | None = None,
        timeout_s: float = 30 * 60,
        memory_bytes: int | None = None,
        cpus: float | None = None,
        sandbox: StepSandbox | None = None,
    ) -> None:
        self._fill(
            image,
            script,
            workdir,
            mounts,
            {} if env is None else env,
            {} if secret_env is None else secret_env,
            {} if secret_files is None else secret_files,
            {} if labels is None else labels,
            timeout_s,
            memory_bytes,
            cpus,
            StepSandbox() if sandbox is None else sandbox,
        )
        self.__post_init__()

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
        _check_secrets(self.secret_env, "environment variable")
        _check_secrets(self.secret_files, "file")
        both = sorted(set(self.secret_files) & (set(self.secret_env) | set(self.env)))
        if both:
            raise ExecutionError(
                f"{both[0]} is given to the step both as a file secret and as a variable",
                hint="give each variable once",
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


def _check_secrets(secrets: Mapping[str, Secret], kind: str) -> None:
    # A wrapper shell exports each one (and names each file after it), so the
    # names must be shell names and the values shell strings.
    for name, value in secrets.items():
        if not _SHELL_NAME.fullmatch(name):
            raise ExecutionError(
                f"secret {kind} name {name!r} is not valid",
                hint="use names made of letters, digits and underscores, not starting with a digit",
            )
        if "\0" in value.reveal():
            # Never name the value: only that it cannot be passed.
            raise ExecutionError(
                f"the value of {name} contains a NUL character, which no environment "
                "variable or secret file of runner can hold",
                hint="store the value without NUL characters",
            )


# What a container waiting for its payload is made without: these come on stdin.
_PAYLOAD_PLACEHOLDER = Secret("payload-placeholder")


def creation(step: StepContainer) -> StepContainer:
    """The part of ``step`` its container is made with; the rest is its stdin payload.

    Two steps with the same creation can run in the same prepared container.
    Ordinary variables with shell names travel in the payload (their values
    may be rendered late); any other name must be in ``Config.Env`` and so is
    part of the creation. File secrets need their tmpfs made with the
    container: their names count, their values do not.
    """
    return replace(
        step,
        script="",
        env={k: v for k, v in step.env.items() if not _SHELL_NAME.fullmatch(k)},
        secret_env={},
        secret_files=dict.fromkeys(step.secret_files, _PAYLOAD_PLACEHOLDER),
        timeout_s=1.0,
    )


def payload_env(step: StepContainer) -> dict[str, str]:
    """The ordinary variables a prepared container gets in its payload (shell names)."""
    return {k: v for k, v in step.env.items() if _SHELL_NAME.fullmatch(k)}


class PreparedStep(Protocol):
    """A container made and started ahead of its turn, waiting for its payload on stdin.

    Exactly one of ``run`` and ``discard`` ends it; either removes the
    container in the background (``ContainerRuntime.settle`` waits for it).
    """

    def run(self, step: StepContainer, *, on_output: OutputCallback, cancel: Event) -> StepExit:
        """Run ``step`` in the waiting container, as ``ContainerRuntime.run_step`` would.

        ``step`` is the step as rendered at its turn. If its ``creation``
        differs from the prepared one's, the waiting container is discarded
        and the step runs in a new one: slower, never wrong.
        """
        ...

    def discard(self) -> None:
        """Remove the waiting container unused, without blocking; a no-op after ``run``."""
        ...

    def wait_removed(self) -> None:
        """Block until the container is gone (before its network can be removed)."""
        ...


@dataclass(init=False, repr=False, eq=False)
class NetworkInfo(Frozen):
    """A job's network: the name containers join, and where it sits on the host.

    ``bridge`` is the host's interface for it (None where a runtime has none,
    as the fake's), ``gateway`` the host's own address on it. ``holder`` is
    the container holding a network namespace on it that steps join
    (``ContainerRuntime.hold_network``), once one is started.
    """

    name: str
    subnet: str
    gateway: str
    bridge: str | None = None
    internal: bool = False
    holder: str | None = None

    def __init__(
        self,
        *,
        name: str,
        subnet: str,
        gateway: str,
        bridge: str | None = None,
        internal: bool = False,
        holder: str | None = None,
    ) -> None:
        self._fill(name, subnet, gateway, bridge, internal, holder)

    @property
    def joined(self) -> str:
        """What a step's container joins: its holder's namespace, else the network."""
        return f"container:{self.holder}" if self.holder else self.name


@dataclass(init=False, repr=False, eq=False)
class StepExit(Frozen):
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

    def __init__(
        self,
        *,
        exit_code: int,
        timed_out: bool = False,
        canceled: bool = False,
        oom_killed: bool = False,
    ) -> None:
        self._fill(exit_code, timed_out, canceled, oom_killed)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.canceled or self.oom_killed)

    @classmethod
    def killed(cls, *, timed_out: bool = False, canceled: bool = False) -> StepExit:
        """How a step ends that runner killed, for a timeout or a cancel."""
        return cls(exit_code=KILLED_EXIT_CODE, timed_out=timed_out, canceled=canceled)


class ContainerRuntime(Protocol):
    """Runs steps in containers. Implementations are safe to call from many threads."""

    def image_id(self, image: str, auth: Secret | None = None) -> str:
        """The content-addressed ID of ``image``, pulling it if it is not present.

        ``auth`` is a ``DOCKER_AUTH_CONFIG`` value (Docker's config.json): an
        image whose registry it has credentials for is always pulled with
        them, so the registry checks them for every run (an image another
        namespace pulled earlier is no way around them).

        Raises ``ImageNotFoundError`` naming the image (and the registry that
        refused it, and why) if it is neither present nor pullable,
        ``ContainerRuntimeError`` if the engine fails.
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

    def prepare(self, step: StepContainer) -> PreparedStep:
        """Make and start ``step``'s container ahead of its turn, waiting for its payload.

        Only what a container is made with counts here (``creation``): the
        image, workdir, mounts, labels, limits, sandbox and which file
        secrets it gets. The environment, every secret value, the script and
        the timeout are given to ``PreparedStep.run`` at the step's turn.
        Raises as ``run_step`` does before a container exists (a missing
        mount source, an engine failure); nothing runs until ``run``.
        """
        ...

    def settle(self) -> None:
        """Wait until every container this runtime removes in the background is gone.

        A run calls it before it reports itself done, so no container outlives it.
        """
        ...

    def sweep(self, label_key: str, label_value: str | None = None) -> int:
        """Kill and remove every container carrying the label; return how many."""
        ...

    def image_file(
        self, image: str, paths: Sequence[str], *, labels: Mapping[str, str], limit: int
    ) -> bytes | None:
        """The first of ``paths`` that is a regular file in ``image`` (up to ``limit`` bytes).

        None when the image has none (a link or a larger file counts as none).
        Nothing runs: the engine reads the image's layers (a container is
        created, labelled ``labels`` for sweeping, and removed).
        Raises ``ContainerRuntimeError`` if the engine fails.
        """
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
        """Remove a job's network, and a holder left on it; one already gone is fine.
        Never raises."""
        ...

    def network_jobs(self) -> frozenset[str]:
        """Every job id labelling a job network on this engine (``NETWORK_LABEL``), any
        runner's. Raises ``ContainerRuntimeError`` if the engine fails."""
        ...

    def sweep_networks(self, job_id: str | None = None) -> int:
        """Remove the job networks of ``job_id`` (of every job if None); return how many.

        Their holders go first. Sweep the step containers before: a network
        still in use stays.
        """
        ...

    def hold_network(
        self, net: NetworkInfo, *, job_id: str, image: str, extra_hosts: Mapping[str, str]
    ) -> str:
        """Start a container on ``net`` that only holds a network namespace; its ID.

        Steps then join that namespace (``NetworkInfo.joined``) instead of the
        network itself: a step's start skips the engine's work of plugging a
        container into a network (its own interface, the network's name
        server), which is most of what starting a container costs. The holder
        runs ``image``'s ``/bin/sh`` waiting on a stdin nobody writes, with
        every capability dropped, as nobody, and is frozen (paused) as soon as
        it has started: nothing of the image runs on while the holder is kept.
        ``extra_hosts`` go in the ``/etc/hosts`` the steps share with it. Labelled as its network
        (``NETWORK_LABEL=job_id``), so sweeping the job's networks removes it.
        Raises ``ContainerRuntimeError`` if the engine fails.
        """
        ...

    def release_holder(self, holder: str) -> None:
        """Remove a network's holder (before the network); one gone is fine. Never raises."""
        ...

    def holder_alive(self, holder: str) -> bool:
        """Whether the holder still runs (steps can join it). Never raises."""
        ...


def missing_image(
    image: str, why: str | None = None, *, registry: str | None = None, with_auth: bool = False
) -> ImageNotFoundError:
    """What every runtime raises for an image that is neither present nor pullable.

    ``registry`` is the one that refused the pull, ``with_auth`` whether
    credentials from ``DOCKER_AUTH_CONFIG`` were sent to it.
    """
    detail = f" ({why})" if why else ""
    source = f" from {registry}" if registry else ""
    hint = f"check the image name, or build or `docker pull {image}` it first"
    if registry and with_auth:
        hint = (
            f"check the image name and the credentials for {registry} in the secret "
            "DOCKER_AUTH_CONFIG (`runner secret list` shows which namespace's is used)"
        )
    elif registry:
        hint += (
            f"; if {registry} is private, store Docker's config.json with its credentials "
            "as the secret DOCKER_AUTH_CONFIG"
        )
    return ImageNotFoundError(
        f"image {image} is not present locally and could not be pulled{source}{detail}",
        hint=hint,
    )
