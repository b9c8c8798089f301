"""Parallel workspaces: who gets the engine first, and job networks made side by side.

The running wave is made before the next one starts getting ready (turns on
the fake runtime); subnets are chosen from runner's own bookkeeping, so job
networks are made concurrently, and one another process took meanwhile is
skipped (the real engine).
"""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from runner.execute.pipeline import HeldReporter, Turns
from runner.execute.runtime import NETWORK_PREFIX, StepContainer
from runner.execute.subnets import Subnet, SubnetBook
from runner.testing import FakeRuntime
from runner.testing.runtime import FakePreparedStep
from tests.test_job import IMAGE, IMAGE_ID, step
from tests.test_pipeline import _run

POOL = ipaddress.IPv4Network("10.99.0.0/26")  # four subnets of /28


# Turns: the running wave first ------------------------------------------------------------


class _Quiet:
    def event(self, name: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_next_wave_starts_getting_ready_only_once_every_running_workspace_is_ready() -> None:
    turns = Turns(2)
    cancel = threading.Event()
    first = [turns.turn(i, HeldReporter(_Quiet())) for i in range(2)]
    assert turns.may_start(0) and turns.may_start(1)
    for turn in first:
        turn.take_if_free(cancel)
    # Both hold a turn and are still making their network and first container.
    assert not turns.may_start(2)
    first[0].wait(cancel)
    assert not turns.may_start(2)
    first[1].wait(cancel)
    # One waiting workspace per turn, no more.
    assert turns.may_start(2) and turns.may_start(3) and not turns.may_start(4)
    # A turn that ends hands over; its successor, granted while not ready, holds the
    # next ones back until it is.
    waiting = turns.turn(2, HeldReporter(_Quiet()))
    first[0].end()
    waiting.take_if_free(cancel)
    assert not turns.may_start(4)
    waiting.wait(cancel)
    assert turns.may_start(4)


class _SlowFirstWave(FakeRuntime):
    """Records when each workspace's first container is made; the first wave's take a while."""

    def __init__(self, slow: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slow = set(slow)
        self.story: list[tuple[str, str]] = []
        self._story_lock = threading.Lock()

    def prepare(self, step: StepContainer) -> FakePreparedStep:
        name = _repository(step)
        with self._story_lock:
            self.story.append(("begin", name))
        if name in self.slow:
            time.sleep(0.3)  # widens the window in which a next workspace could cut in
        try:
            return super().prepare(step)
        finally:
            with self._story_lock:
                self.story.append(("end", name))


def _repository(step: StepContainer) -> str:
    for mount in step.mounts:
        readme = Path(mount.source) / "README.md"
        if readme.is_file():
            return readme.read_text().strip()
    return "?"


def test_a_waiting_workspace_makes_its_container_after_the_running_ones(tmp_path: Path) -> None:
    names = [f"github.com/acme/{n}" for n in ("a", "b", "c", "d")]
    runtime = _SlowFirstWave(names[:2], images={IMAGE: IMAGE_ID})
    outcomes, _ = _run(tmp_path, step("work"), names, runtime, parallelism=2)
    assert [o.status for o in outcomes] == ["unchanged"] * 4
    story = runtime.story
    first_wave_made = max(story.index(("end", n)) for n in names[:2])
    next_wave_begun = min(story.index(("begin", n)) for n in names[2:])
    assert first_wave_made < next_wave_begun, story


# Subnets: runner's own bookkeeping ------------------------------------------------------


def _listing(*taken: str) -> Any:
    calls: list[int] = []

    def listing() -> list[Subnet]:
        calls.append(1)
        return [ipaddress.ip_network(t) for t in taken]

    listing.calls = calls  # type: ignore[attr-defined]
    return listing


def test_subnets_are_handed_out_without_listing_the_engine_each_time() -> None:
    book = SubnetBook(POOL, NETWORK_PREFIX)
    listing = _listing("10.99.0.0/28", "172.17.0.0/16")
    one = book.reserve(listing, relist=False)
    two = book.reserve(listing, relist=False)
    assert (str(one), str(two)) == ("10.99.0.16/28", "10.99.0.32/28")
    assert len(listing.calls) == 1
    book.hold("net-one", one)  # type: ignore[arg-type]
    book.hold("net-two", two)  # type: ignore[arg-type]
    # Removed: free again, for this process's next network.
    book.removed("net-one")
    book.removed("someone-else's")  # not ours: nothing changes
    assert str(book.reserve(listing, relist=False)) == "10.99.0.16/28"
    # Reserved but never made (the engine failed): free again too.
    last = book.reserve(listing, relist=False)
    assert str(last) == "10.99.0.48/28"
    assert book.reserve(listing, relist=False) is None  # the pool is full
    book.release(last)  # type: ignore[arg-type]
    assert book.reserve(listing, relist=False) == last


def test_a_subnet_the_engine_refuses_is_skipped_and_the_engine_listed_again() -> None:
    book = SubnetBook(POOL, NETWORK_PREFIX)
    first = book.reserve(_listing(), relist=False)
    assert str(first) == "10.99.0.0/28"
    # Another process made 10.99.0.0/28 and .16/28 meanwhile: the engine refuses.
    book.refused(first)  # type: ignore[arg-type]
    again = _listing("10.99.0.0/28", "10.99.0.16/28")
    assert str(book.reserve(again, relist=True)) == "10.99.0.32/28"
    assert len(again.calls) == 1


# The real engine --------------------------------------------------------------------------


@pytest.mark.docker
def test_job_networks_are_made_side_by_side_and_skip_what_another_runtime_took(
    docker_client: Any,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from runner.execute.docker_runtime import DockerRuntime

    job = f"test-parallel-{uuid.uuid4().hex[:8]}"
    # A pool of this test's own: in runner's default pool the other test worker's
    # networks took a subnet this test had just freed (a clean-clone run failed so).
    own_pool = f"10.214.{uuid.uuid4().int % 256}.0/24"
    ours = DockerRuntime(docker_client.api, network_pool=own_pool)
    other = DockerRuntime(docker_client.api, network_pool=own_pool)
    try:
        # Both books list the engine now; neither knows what the other makes next.
        first = ours.create_network(job, internal=False)
        taken = other.create_network(job, internal=False)
        with ThreadPoolExecutor(max_workers=4) as pool:
            made = list(pool.map(lambda _: ours.create_network(job, internal=False), range(4)))
        subnets = [ipaddress.IPv4Network(n.subnet) for n in [first, taken, *made]]
        assert len(set(subnets)) == 6  # the one `other` took was refused and skipped
        assert all(s.subnet_of(ipaddress.IPv4Network(own_pool)) for s in subnets)
        # A removed network's subnet is this process's to use again.
        ours.remove_network(made[0].name)
        again = ours.create_network(job, internal=False)
        assert ipaddress.IPv4Network(again.subnet) == ipaddress.IPv4Network(made[0].subnet)
    finally:
        assert ours.sweep_networks(job) >= 0
    assert docker_client.api.networks(filters={"label": f"org.runner.network={job}"}) == []
