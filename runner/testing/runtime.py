"""A ``ContainerRuntime`` that runs nothing, for unit tests of the step loop.

It records every step it is asked to run and hands each to a handler the test
supplies. The handler sees the step through a ``FakeStepRun``: it can write
output, read and change files in the mounts (read-only ones refuse writes),
read the step's environment, sleep on the runtime's clock (which honours the
step's timeout and the cancel event), and returns an exit code (or a whole
``StepExit``), or raises ``ContainerRuntimeError`` to play an engine failure.

Before the handler, the same checks as the real runtime: a missing mount
source is refused, and a step canceled before it starts does not run.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from runner.clock import Clock
from runner.config import DEFAULT_NETWORK_POOL
from runner.errors import ContainerRuntimeError, ExecutionError
from runner.execute.docker_sandbox import RUNTIMES, missing_runtime
from runner.execute.registry import credentials_for, registry_of
from runner.execute.runtime import (
    NETWORK_PREFIX,
    Mount,
    NetworkInfo,
    OutputCallback,
    OutputStream,
    StepContainer,
    StepExit,
    creation,
    missing_image,
    secret_file_path,
)
from runner.sandbox import Isolation
from runner.secrets.value import Secret
from runner.testing.clock import FakeClock


class _Killed(Exception):
    """Ends a handler the way a kill ends a container."""

    def __init__(self, result: StepExit) -> None:
        super().__init__("the step was killed")
        self.result = result


@dataclass
class FakeStepRun:
    """One step as its handler sees it."""

    step: StepContainer
    cancel: threading.Event
    _on_output: OutputCallback
    _clock: Clock
    _deadline: float
    stdin: bytes = b""  # a step's stdin is empty, as in the real runtime
    prepared: bool = False  # it runs in a container prepared ahead of its turn
    # Bytes the step wrote outside its mounts: what ``writable_bytes`` reports while it runs.
    written: int = 0

    def stdout(self, data: bytes | str) -> None:
        self.emit("stdout", data)

    def stderr(self, data: bytes | str) -> None:
        self.emit("stderr", data)

    def emit(self, stream: OutputStream, data: bytes | str) -> None:
        self._on_output(stream, data.encode() if isinstance(data, str) else data)

    def getenv(self, name: str) -> str | None:
        """The variable as the step's shell sees it (secrets included; a file secret's path)."""
        if name in self.step.secret_env:
            return self.step.secret_env[name].reveal()
        if name in self.step.secret_files:
            return secret_file_path(name)
        return self.step.env.get(name)

    def read(self, container_path: str) -> str:
        """A file's text as the step reads it: a file secret, or a file in a mount."""
        for name, value in self.step.secret_files.items():
            if PurePosixPath(self.step.workdir, container_path) == PurePosixPath(
                secret_file_path(name)
            ):
                return value.reveal()
        return self.host_path(container_path).read_text()

    def host_path(self, container_path: str) -> Path:
        """Where ``container_path`` (absolute, or relative to the workdir) lives on the host."""
        mount, path = self._mount_of(container_path)
        return mount.source.joinpath(*path.relative_to(mount.target).parts)

    def write(self, container_path: str, data: str) -> bool:
        """Write a file as the step would; False (nothing written) on a read-only mount."""
        mount, _ = self._mount_of(container_path)
        if mount.read_only:
            return False
        self.host_path(container_path).write_text(data)
        return True

    def sleep(self, seconds: float) -> None:
        """Pass time on the runtime's clock; a timeout or cancel kills the step meanwhile."""
        if self.cancel.is_set():
            raise _Killed(StepExit.killed(canceled=True))
        left = self._deadline - self._clock.monotonic()
        if seconds >= left:
            self._clock.sleep(max(left, 0.0))
            raise _Killed(StepExit.killed(timed_out=True))
        self._clock.sleep(seconds)

    def _mount_of(self, container_path: str) -> tuple[Mount, PurePosixPath]:
        path = PurePosixPath(self.step.workdir, container_path)
        # The deepest mount wins, as in a real container.
        for mount in sorted(self.step.mounts, key=lambda m: len(m.target), reverse=True):
            target = PurePosixPath(mount.target)
            if path == target or target in path.parents:
                return mount, path
        raise ValueError(f"{container_path} is not under any mount of the step")


StepHandler = Callable[[FakeStepRun], int | StepExit]


def succeed(run: FakeStepRun) -> int:
    return 0


@dataclass
class FakeRuntime:
    """Records steps and plays them with ``handler``; thread-safe like the real one.

    ``images`` maps every name ``image_id`` knows to its ID; any other name is
    missing. ``leftovers`` are label sets of containers an earlier run left
    behind, for ``sweep`` to remove. ``clock`` is what ``FakeStepRun.sleep``
    passes time on (a ``FakeClock`` of its own unless given). ``networks``
    holds the job networks alive now (name -> (job id, info)), each with its
    own subnet of ``network_pool``; ``networks_made`` every one ever made.
    ``isolations`` are the levels its engine can run (as Docker with runsc
    registered, both); a step at another level fails as on an engine without
    its runtime. Every step's sandbox is recorded with it in ``steps``.
    ``registry_logins`` makes registries private (registry -> (user,
    password)): ``image_id`` of an image there needs a ``DOCKER_AUTH_CONFIG``
    with those credentials, and "pulls" it each time, as Docker does; every
    pull is recorded in ``pulls`` as (image, the user name sent or None).
    ``prepared`` records the ``creation`` of every container ``prepare``
    made, ``discarded`` counts those removed unused, and ``containers``
    says how many exist now (prepared ones not yet run or discarded).
    ``holders`` are the network holders alive now (id -> the network's
    name), ``holders_made`` every one started (id, network, its hosts); as
    on the engine, a step joining a holder that is gone fails.
    """

    handler: StepHandler = succeed
    images: Mapping[str, str] = field(default_factory=dict)
    leftovers: list[Mapping[str, str]] = field(default_factory=list)
    clock: Clock = field(default_factory=FakeClock)
    steps: list[StepContainer] = field(default_factory=list)
    image_lookups: list[str] = field(default_factory=list)
    registry_logins: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    pulls: list[tuple[str, str | None]] = field(default_factory=list)
    # (image, path) -> the file ``image_file`` reads from that image (an image's CA bundle)
    image_files: Mapping[tuple[str, str], bytes] = field(default_factory=dict)
    network_pool: str = DEFAULT_NETWORK_POOL
    isolations: Collection[Isolation] = ("runc", "gvisor")
    networks: dict[str, tuple[str, NetworkInfo]] = field(default_factory=dict)
    networks_made: list[NetworkInfo] = field(default_factory=list)
    prepared: list[StepContainer] = field(default_factory=list)
    discarded: int = 0
    containers: int = 0
    holders: dict[str, str] = field(default_factory=dict)
    holders_made: list[tuple[str, str, Mapping[str, str]]] = field(default_factory=list)
    _running: list[FakeStepRun] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def image_id(self, image: str, auth: Secret | None = None) -> str:
        with self._lock:
            self.image_lookups.append(image)
        registry = registry_of(image)
        if registry in self.registry_logins and not image.startswith("sha256:"):
            self._pull_private(image, registry, auth)
        if image in self.images:
            return self.images[image]
        if image in self.images.values():
            return image
        raise missing_image(image)

    def _pull_private(self, image: str, registry: str, auth: Secret | None) -> None:
        creds = credentials_for(auth, image)
        with self._lock:
            self.pulls.append((image, creds.username if creds else None))
        if creds is None:
            raise missing_image(image, "no basic auth credentials", registry=registry)
        user, password = self.registry_logins[registry]
        if (creds.username, creds.password.reveal()) != (user, password):
            raise missing_image(
                image, "unauthorized: authentication required", registry=registry, with_auth=True
            )

    def check_isolation(self, isolation: Isolation) -> None:
        if isolation not in self.isolations:
            raise missing_runtime(isolation, RUNTIMES[isolation] or isolation)

    def run_step(
        self, step: StepContainer, *, on_output: OutputCallback, cancel: threading.Event
    ) -> StepExit:
        return self._play(step, on_output, cancel, prepared=False)

    def prepare(self, step: StepContainer) -> FakePreparedStep:
        step.before_start(threading.Event())
        self.check_isolation(step.sandbox.isolation)
        self._check_holder(step)
        made = creation(step)
        with self._lock:
            self.prepared.append(made)
            self.containers += 1
        return FakePreparedStep(self, made)

    def settle(self) -> None:
        pass  # the fake removes its containers at once

    def _removed(self, *, unused: bool) -> None:
        with self._lock:
            self.containers -= 1
            self.discarded += unused

    def _play(
        self,
        step: StepContainer,
        on_output: OutputCallback,
        cancel: threading.Event,
        *,
        prepared: bool,
    ) -> StepExit:
        with self._lock:
            self.steps.append(step)
        early = step.before_start(cancel)
        if early is not None:
            return early
        self.check_isolation(step.sandbox.isolation)
        self._check_holder(step)
        run = FakeStepRun(
            step=step,
            cancel=cancel,
            _on_output=on_output,
            _clock=self.clock,
            _deadline=self.clock.monotonic() + step.timeout_s,
            prepared=prepared,
        )
        with self._lock:
            self._running.append(run)
        try:
            result = self.handler(run)
        except _Killed as killed:
            return killed.result
        finally:
            with self._lock:
                self._running.remove(run)
        if isinstance(result, StepExit):
            return result
        if cancel.is_set():
            return StepExit.killed(canceled=True)
        return StepExit(exit_code=result)

    def image_file(
        self, image: str, paths: Sequence[str], *, labels: Mapping[str, str], limit: int
    ) -> bytes | None:
        for path in paths:
            found = self.image_files.get((image, path))
            if found is not None and len(found) <= limit:
                return found
        return None

    def writable_bytes(self, label_key: str, label_value: str) -> int | None:
        with self._lock:
            runs = [r for r in self._running if r.step.labels.get(label_key) == label_value]
        return sum(r.written for r in runs) if runs else None

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

    def create_network(self, job_id: str, *, internal: bool) -> NetworkInfo:
        pool = ipaddress.ip_network(self.network_pool)
        with self._lock:
            taken = {info.subnet for _, info in self.networks.values()}
            for subnet in pool.subnets(new_prefix=NETWORK_PREFIX):
                if str(subnet) in taken:
                    continue
                number = len(self.networks_made) + 1
                info = NetworkInfo(
                    name=f"fake-net-{number}",
                    subnet=str(subnet),
                    gateway=str(next(subnet.hosts())),
                    internal=internal,
                )
                self.networks[info.name] = (job_id, info)
                self.networks_made.append(info)
                return info
        raise ContainerRuntimeError(
            f"no free subnet is left in runner's network pool {pool}",
            hint="remove leftover job networks with `runner cleanup`",
        )

    def remove_network(self, name: str) -> None:
        with self._lock:
            for holder in [h for h, held in self.holders.items() if held == name]:
                del self.holders[holder]
            self.networks.pop(name, None)

    def network_jobs(self) -> frozenset[str]:
        with self._lock:
            return frozenset(job for job, _ in self.networks.values())

    def sweep_networks(self, job_id: str | None = None) -> int:
        with self._lock:
            gone = [n for n, (job, _) in self.networks.items() if job_id in (None, job)]
            for holder in [h for h, n in self.holders.items() if n in gone]:
                del self.holders[holder]
            for name in gone:
                del self.networks[name]
        return len(gone)

    def hold_network(
        self, net: NetworkInfo, *, job_id: str, image: str, extra_hosts: Mapping[str, str]
    ) -> str:
        with self._lock:
            if net.name not in self.networks:
                raise ContainerRuntimeError(f"network {net.name} not found")
            if image not in self.images.values() and image not in self.images:
                raise missing_image(image)
            holder = f"fake-holder-{len(self.holders_made) + 1}"
            self.holders[holder] = net.name
            self.holders_made.append((holder, net.name, dict(extra_hosts)))
        return holder

    def release_holder(self, holder: str) -> None:
        with self._lock:
            self.holders.pop(holder, None)

    def holder_alive(self, holder: str) -> bool:
        with self._lock:
            return holder in self.holders

    def _check_holder(self, step: StepContainer) -> None:
        joined = step.sandbox.network or ""
        if joined.startswith("container:") and not self.holder_alive(joined[len("container:") :]):
            raise ContainerRuntimeError(
                f"cannot join the network of {joined}: that container is not running"
            )


class FakePreparedStep:
    """A fake container made ahead of its turn: ``run`` plays the step, ``discard`` drops it."""

    def __init__(self, runtime: FakeRuntime, made: StepContainer) -> None:
        self._runtime = runtime
        self.made = made
        self.ended = False

    def run(
        self, step: StepContainer, *, on_output: OutputCallback, cancel: threading.Event
    ) -> StepExit:
        if self.ended:
            raise ExecutionError(
                "a prepared step container runs one step only",
                hint="prepare a new container for each step",
            )
        if creation(step) != self.made:
            self.discard()
            return self._runtime.run_step(step, on_output=on_output, cancel=cancel)
        self.ended = True
        try:
            return self._runtime._play(step, on_output, cancel, prepared=True)
        finally:
            self._runtime._removed(unused=False)

    def discard(self) -> None:
        if not self.ended:
            self.ended = True
            self._runtime._removed(unused=True)

    def wait_removed(self) -> None:
        pass
