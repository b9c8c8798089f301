"""Job networks built on first need (runner.egress.lazy), on the fake runtime.

A run that opens no network (a fully cached one) never builds the real seam,
yet says and removes what the real one would: a drain before the build still
counts once a network is opened, a stale claim on the shelf is still swept,
and a host that cannot fence a network is still warned about or refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.egress import JobNetworks
from runner.egress.firewall import NoFirewall
from runner.egress.lazy import LazyJobNetworks
from runner.egress.ready import ReadyNetworks
from runner.errors import ExecutionError
from runner.sandbox import SandboxPolicy
from runner.testing import FakeRuntime
from tests.test_egress_unit import POOL, FakeProxy

DEAD_PID = 999_999_999  # beyond pid_max: no such process


class _Unfenced(NoFirewall):
    def available(self) -> bool:
        return False


def _lazy(
    runtime: FakeRuntime, firewall: NoFirewall, shelf: Path | None
) -> tuple[LazyJobNetworks, list[JobNetworks]]:
    built: list[JobNetworks] = []

    def make() -> JobNetworks:
        ready = ReadyNetworks(shelf, pool=POOL) if shelf is not None else None
        real = JobNetworks(
            runtime,
            firewall=firewall,
            proxy=FakeProxy(),
            pool=POOL,
            addresses=frozenset,
            ready=ready,
        )
        built.append(real)
        return real

    return LazyJobNetworks(make, firewall=firewall, ready=shelf), built


def test_a_run_that_opens_no_network_never_builds_it_and_a_drain_still_counts(
    tmp_path: Path,
) -> None:
    runtime = FakeRuntime()
    shelf = tmp_path / "ready"
    # A network kept by an earlier run, free: nothing stale, nothing to remove.
    kept = ReadyNetworks(shelf, pool=POOL)
    net = runtime.create_network(kept.label, internal=False)
    kept.claimed(net, "")
    assert kept.park(net)
    networks, built = _lazy(runtime, NoFirewall(), shelf)
    networks.preflight(SandboxPolicy())
    assert networks.sweep_ready() == 0
    networks.drain("run-1")
    assert built == [] and list(runtime.networks) == [net.name]

    # A workspace opening one after the drain: built then, and what it hands back is
    # not kept for a next workspace of the job (there is none), as if drained after.
    with networks.open("run-1", SandboxPolicy(network="none"), lambda h, p: None) as step:
        assert step.network == "none"
    assert len(built) == 1
    networks, built = _lazy(runtime, NoFirewall(), None)
    networks.drain("run-2")
    with networks.open("run-2", SandboxPolicy(), lambda h, p: None) as step:
        assert step.network in runtime.networks
    assert step.network not in runtime.networks  # removed at once, not left as a spare


def test_a_stale_claim_or_a_host_that_cannot_fence_builds_it(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    shelf = tmp_path / "ready"
    dead = ReadyNetworks(shelf, pool=POOL, pid=DEAD_PID)
    net = runtime.create_network(dead.label, internal=False)
    dead.claimed(net, "")  # made, then its run was killed
    networks, built = _lazy(runtime, NoFirewall(), shelf)
    assert networks.sweep_ready() == 1 and len(built) == 1
    assert net.name not in runtime.networks

    networks, built = _lazy(runtime, _Unfenced(), None)
    networks.preflight(SandboxPolicy())  # warns (the real seam's message), refuses nothing
    assert len(built) == 1
    with pytest.raises(ExecutionError, match="cannot fence"):
        networks.preflight(SandboxPolicy(network="allow"))
