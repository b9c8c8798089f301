"""Routing by labels: a job goes only to an executor having every label it requires.

Unit cases run the coordinator in-process (the API through FastAPI's
TestClient) on SQLite and PostgreSQL, and the store rule on every store; one
integration test starts real executors and watches a job wait for a
labelled one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import PermissionDeniedError, UsageError
from runner.queue.bundle import Bundle
from runner.queue.models import NewJob, Submission, new_id
from runner.queue.routing import parse_labels, waiting_reason
from runner.queue.store import JobStore, SqlJobStore
from runner.sandbox.tighten import NamespacePolicy
from runner.testing.queue import MemoryJobStore
from tests.test_queue_support import (
    BACKENDS,
    SPEC_PLAIN,
    ManualClock,
    World,
    fresh_postgres_database,
    make_repos,
    world,
    write_spec,
)

__all__ = ["world"]  # a fixture, used by name


def _bundle(tmp_path: Path) -> Bundle:
    return Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_PLAIN))


def test_a_job_waits_for_an_executor_with_every_label_it_requires(
    world: World, tmp_path: Path
) -> None:
    alice = world.client("alice")
    executor = world.client("exec")
    bundle = _bundle(tmp_path)
    gpu = alice.submit(bundle, "user:alice", labels=["gpu", "linux"])["jobs"][0]
    plain = alice.submit(bundle, "user:alice")["jobs"][0]
    assert gpu["labels"] == ["gpu", "linux"]
    assert plain["labels"] == []

    # An unlabelled executor takes the plain job and leaves the labelled one.
    first = executor.claim("plain-ex")
    assert first is not None and first.job_id == plain["id"]
    assert executor.claim("plain-ex") is None
    # Labels in part are not enough.
    assert executor.claim("half-ex", labels=["gpu"]) is None
    listed = {j["id"]: j for j in alice.jobs_list()}
    why = "waiting for an executor with labels gpu, linux"
    assert listed[gpu["id"]]["waiting"] == why
    assert listed[plain["id"]]["waiting"] is None
    assert alice.job_show(gpu["id"])["waiting"] == why

    claimed = executor.claim("gpu-ex", labels=["linux", "gpu", "big"])
    assert claimed is not None and claimed.job_id == gpu["id"]
    assert alice.job_show(gpu["id"])["waiting"] is None

    # A second such job does not say it waits: a live executor can run it.
    again = alice.submit(bundle, "user:alice", labels=["gpu"])["jobs"][0]
    assert alice.job_show(again["id"])["waiting"] is None
    # Once that executor has been quiet for the stall limit, the job says why again.
    world.clock.advance(31)
    assert alice.job_show(again["id"])["waiting"] == "waiting for an executor with labels gpu"


def test_an_admin_requires_labels_of_a_namespace(world: World, tmp_path: Path) -> None:
    carol, alice = world.client("carol"), world.client("alice")
    with pytest.raises(PermissionDeniedError):
        alice.namespace_policy_set("org:acme", NamespacePolicy(), labels=["secure"])
    with pytest.raises(UsageError, match="is not a label"):
        carol.namespace_policy_set("org:acme", NamespacePolicy(), labels=["no spaces"])
    shown = carol.namespace_policy_set("org:acme", NamespacePolicy(), labels=["secure"])
    assert shown["require_labels"] == ["secure"]
    assert alice.namespace_policy("org:acme")["require_labels"] == ["secure"]

    bundle = _bundle(tmp_path)
    job = alice.submit(bundle, "org:acme", labels=["gpu"])["jobs"][0]
    assert job["labels"] == ["gpu", "secure"]
    mine = alice.submit(bundle, "user:alice")["jobs"][0]
    assert mine["labels"] == []
    executor = world.client("exec")
    assert executor.claim("gpu-only", labels=["gpu"]).job_id == mine["id"]
    assert executor.claim("gpu-only", labels=["gpu"]) is None
    assert executor.claim("both", labels=["gpu", "secure"]).job_id == job["id"]


def test_labels_are_checked() -> None:
    assert parse_labels(["b", "a", "b", " c "]) == ("a", "b", "c")
    for bad in ("", "-x", "a,b", "a b", "x" * 65, "é"):
        with pytest.raises(UsageError, match="is not a label"):
            parse_labels([bad], flag="--require")
    assert waiting_reason(("gpu",), [("cpu",), ()]) == "waiting for an executor with labels gpu"
    assert waiting_reason(("gpu",), [("gpu", "cpu")]) is None
    assert waiting_reason((), []) is None


# The store rule, on every store -----------------------------------------------------------


@pytest.fixture(params=["memory", *BACKENDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "memory":
        yield MemoryJobStore(clock=ManualClock())
        return
    from runner.db import connect

    if request.param == "sqlite":
        with connect(f"sqlite:///{tmp_path / 'q.db'}") as db:
            yield SqlJobStore(db, clock=ManualClock())
        return
    with (
        fresh_postgres_database(request.getfixturevalue("postgres_url")) as url,
        connect(url) as db,
    ):
        yield SqlJobStore(db, clock=ManualClock())


def _queue(store: JobStore, *label_sets: tuple[str, ...]) -> list[str]:
    sub = Submission(
        id=new_id("sub"),
        namespace="user:alice",
        submitter="alice",
        spec_name="s",
        bundle={"spec": "x"},
        created_at=ManualClock().now(),
    )
    jobs = [
        NewJob(
            namespace="user:alice",
            submitter="alice",
            repository="r",
            branch="main",
            commit="c" * 40,
            path=f"p{i}",
            payload={"i": i},
            labels=labels,
        )
        for i, labels in enumerate(label_sets)
    ]
    return [j.id for j in store.add_submission(sub, jobs)]


def test_every_store_claims_by_labels_in_queue_order(store: JobStore) -> None:
    a, b, c, d = _queue(store, ("gpu",), (), ("gpu", "linux"), ("arm",))
    assert store.get(a).labels == ("gpu",)  # type: ignore[union-attr]
    order = []
    while (lease := store.claim("ex", ("gpu", "linux"))) is not None:
        order.append(lease.job.id)
        assert lease.job.state == "processing" and lease.payload["i"] in (0, 1, 2)
        assert lease.bundle == {"spec": "x"}
    assert order == [a, b, c]
    assert store.claim("ex", ()) is None
    assert store.claim("ex", ("arm",)).job.id == d  # type: ignore[union-attr]


@pytest.mark.docker
def test_the_cli_and_real_executors_route_by_label(tmp_path: Path) -> None:
    """`runner submit --require`, `jobs list` / `jobs show` saying why a job waits, and a
    labelled `runner executor` claiming it as soon as it starts (every process separate)."""
    from tests.attack_support import Cluster, wait_for

    repos = make_repos(tmp_path / "repos")
    cluster = Cluster(tmp_path, repos)
    try:
        cluster.cli("user", "add", "alice")
        cluster.token("user", "alice")
        cluster.token("executor", "fleet", "exec.tok")
        cluster.start_server()
        spec = write_spec(tmp_path / "spec", SPEC_PLAIN)
        cluster.start_executor("plain-ex", who="exec")
        submitted = cluster.remote("submit", str(spec), "--require", "gpu", "--json")
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout)["jobs"][0]["id"]
        # The unlabelled executor claims (it is seen) but never takes the job.
        wait_for(
            lambda: "plain-ex" in (cluster.logs / "plain-ex.log").read_text(),
            timeout=90,
            what="the executor to start",
        )
        listed = cluster.remote("jobs", "list")
        assert "queued (waiting for an executor with labels gpu)" in listed.stdout
        shown = cluster.remote("jobs", "show", job_id)
        assert "waiting     waiting for an executor with labels gpu" in shown.stdout
        assert "labels      gpu" in shown.stdout
        assert cluster.jobs()[job_id]["state"] == "queued"

        cluster.start_executor("gpu-ex", "--label", "gpu", "--label", "x86", who="exec")
        done = cluster.wait_jobs([job_id], states=("completed",), timeout=180)
        assert done[job_id]["executor"] == "gpu-ex"
        assert done[job_id]["waiting"] is None
    finally:
        cluster.close()
