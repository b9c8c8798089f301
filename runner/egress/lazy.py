"""Job networks built on first real need, so a run that opens none never loads them.

``LazyJobNetworks`` stands in front of the real seam (``network.JobNetworks``:
the engine's networks, the firewall, the proxy and the shelf of ready
networks) and builds it only when a network is opened or something must be
removed. A fully cached run opens none: it never loads the proxy, the egress
rules, the broker or the shelf (``tests/test_lazy_imports.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.egress.seam import StepNetwork
from runner.sandbox import SandboxPolicy

if TYPE_CHECKING:
    from runner.egress.firewall import Firewall
    from runner.egress.network import JobNetworks

# A claim on the shelf of ready networks (runner.egress.ready's CLAIM): only a claim
# whose process is gone can be stale.
_CLAIM_GLOB = "*.claim"


class LazyJobNetworks:
    """A ``JobNetworkSeam`` that builds the real one (``make()``) on first real need.

    Until then it answers from what it was given: ``firewall`` (is the host's
    fence available: then ``preflight`` of an ``open`` or ``none`` policy has
    nothing to say) and ``ready`` (the shelf's folder: no claim in it, no
    stale kept network to remove). A ``drain`` before the build is replayed
    on it, so a network handed back after it is still removed at once.
    Safe from many threads: the real seam is built once, under a lock.
    """

    def __init__(
        self, make: Callable[[], JobNetworks], *, firewall: Firewall, ready: Path | None
    ) -> None:
        self._make = make
        self._firewall = firewall
        self._ready = ready
        self._real: JobNetworks | None = None
        self._drained: list[str] = []
        self._lock = threading.Lock()

    def real(self) -> JobNetworks:
        with self._lock:
            if self._real is None:
                real = self._make()
                for job_id in self._drained:
                    real.drain(job_id)
                self._real = real
            return self._real

    def open(self, *args: Any, **kwargs: Any) -> AbstractContextManager[StepNetwork]:
        """``JobNetworkSeam.open`` (callers are typed against the seam), on the real one."""
        return self.real().open(*args, **kwargs)

    def sweep(self, job_id: str | None = None) -> int:
        return self.real().sweep(job_id)

    def drain(self, job_id: str) -> None:
        with self._lock:
            real = self._real
            if real is None:  # nothing opened: no spare to remove yet
                if job_id not in self._drained:
                    self._drained.append(job_id)
                return
        real.drain(job_id)

    def sweep_ready(self, *, everything: bool = False) -> int:
        if self._ready is None:
            return 0
        if not everything and not (self._ready.is_dir() and any(self._ready.glob(_CLAIM_GLOB))):
            return 0  # only a claim can be stale, and there is none
        return self.real().sweep_ready(everything=everything)

    def preflight(self, policy: SandboxPolicy) -> None:
        """``JobNetworks.preflight``, which has nothing to refuse or warn about when
        the fence is available and the policy needs no proxy."""
        if policy.network == "allow" or not self._firewall.available():
            self.real().preflight(policy)

    def sweep_abandoned(self) -> int:
        return self.real().sweep_abandoned()

    def sweep_stale_rules(self) -> int:
        return self.real().sweep_stale_rules()
