"""A container runtime made only when a container or network is needed.

A fully cached re-run asks the engine for image IDs and nothing else: it
starts no container and makes no network. ``LazyRuntime`` answers those
questions through ``EngineProbe`` (the standard library on the engine's
socket) and builds the real runtime (``DockerRuntime``, with the docker SDK and
its tenth of a second of imports) the first time anything else is asked of it,
typically on the thread that opens a workspace's network while its tree is
written, so an uncached run loads the SDK off its critical path.

A run whose real runtime was never built made nothing on the engine, so its
end-of-run sweeps have nothing to look for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from threading import Event

from runner.execute.docker_sandbox import RUNTIMES, check_runtimes
from runner.execute.engine_probe import EngineProbe
from runner.execute.registry import credentials_for
from runner.execute.runtime import (
    ContainerRuntime,
    NetworkInfo,
    OutputCallback,
    PreparedStep,
    StepContainer,
    StepExit,
)
from runner.sandbox import Isolation
from runner.secrets.value import Secret


class LazyRuntime:
    """A ``ContainerRuntime`` that builds ``make()`` on first real need.

    ``probe`` (None: always build) answers image IDs and runtimes. Safe from
    many threads: the real runtime is built once, under a lock.
    """

    def __init__(
        self,
        make: Callable[[], ContainerRuntime],
        probe: EngineProbe | None,
        *,
        runtimes: Mapping[Isolation, str | None] = RUNTIMES,
    ) -> None:
        self._make = make
        self._probe = probe
        self._runtimes = runtimes
        self._real: ContainerRuntime | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the real runtime exists: whether this run could have made anything."""
        return self._real is not None

    def real(self) -> ContainerRuntime:
        with self._lock:
            if self._real is None:
                self._real = self._make()
            return self._real

    # -- answered without the SDK when the engine allows --------------------------

    def image_id(self, image: str, auth: Secret | None = None) -> str:
        # With credentials for its registry the image is pulled every time (see
        # ContainerRuntime.image_id): only the real runtime does that.
        plain = image.startswith("sha256:") or credentials_for(auth, image) is None
        if plain and self._probe is not None and (found := self._probe.image_id(image)):
            return found
        return self.real().image_id(image, auth)

    def check_isolation(self, isolation: Isolation) -> None:
        if self._runtimes[isolation] is None:
            return  # the engine's default runtime: nothing to ask
        listed = self._probe.runtimes() if self._probe is not None else None
        if listed is None:
            self.real().check_isolation(isolation)
            return
        check_runtimes(isolation, listed, self._runtimes)

    def settle(self) -> None:
        if self._real is not None:
            self._real.settle()

    def sweep(self, label_key: str, label_value: str | None = None) -> int:
        # Other runs' leftovers are on the engine whatever this run did.
        return self.real().sweep(label_key, label_value)

    def sweep_own(self, label_key: str, run_id: str) -> int:
        """Sweep this run's own containers, then networks: none if nothing was built."""
        if self._real is None:
            return 0
        return self._real.sweep(label_key, run_id) + self._real.sweep_networks(run_id)

    # -- everything else builds the real runtime ----------------------------------

    def run_step(
        self, step: StepContainer, *, on_output: OutputCallback, cancel: Event
    ) -> StepExit:
        return self.real().run_step(step, on_output=on_output, cancel=cancel)

    def prepare(self, step: StepContainer) -> PreparedStep:
        return self.real().prepare(step)

    def image_file(
        self, image: str, paths: Sequence[str], *, labels: Mapping[str, str], limit: int
    ) -> bytes | None:
        return self.real().image_file(image, paths, labels=labels, limit=limit)

    def writable_bytes(self, label_key: str, label_value: str) -> int | None:
        if self._real is None:
            return None  # no container of this runtime runs
        return self._real.writable_bytes(label_key, label_value)

    def create_network(self, job_id: str, *, internal: bool) -> NetworkInfo:
        return self.real().create_network(job_id, internal=internal)

    def remove_network(self, name: str) -> None:
        self.real().remove_network(name)

    def network_jobs(self) -> frozenset[str]:
        return self.real().network_jobs()

    def sweep_networks(self, job_id: str | None = None) -> int:
        return self.real().sweep_networks(job_id)

    def hold_network(
        self, net: NetworkInfo, *, job_id: str, image: str, extra_hosts: Mapping[str, str]
    ) -> str:
        return self.real().hold_network(net, job_id=job_id, image=image, extra_hosts=extra_hosts)

    def release_holder(self, holder: str) -> None:
        self.real().release_holder(holder)

    def holder_alive(self, holder: str) -> bool:
        return self.real().holder_alive(holder)
