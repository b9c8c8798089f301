"""`runner jobs retry`: a new attempt of finished jobs, the old ones left readable.

Driven through the HTTP client of an in-process coordinator; the command line
and a real executor running a retried job are in test_fleet.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import PermissionDeniedError, UsageError
from runner.queue.bundle import Bundle
from runner.secrets.value import Secret
from tests.test_queue_support import (
    SPEC_WITH_SECRET,
    TOKEN_VALUE,
    World,
    leaks,
    sqlite_world,
    write_spec,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

NEW_VALUE = "tok-alice-rotated-777-secret"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sqlite_world(tmp_path) as w:
        yield w


def submit(world: World, tmp_path: Path, namespace: str = "user:alice") -> list[str]:
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
    return [j["id"] for j in world.client("alice").submit(bundle, namespace)["jobs"]]


def run_to_end(world: World, job_id: str, *, fail: bool) -> None:
    """Claim until ``job_id`` is held (claims go round the namespaces), log a line, end it.

    Jobs claimed on the way are held in ``world.held`` for their own turn.
    """
    executor = world.client("exec")
    held: dict[str, str] = world.__dict__.setdefault("held", {})
    while job_id not in held:
        claim = executor.claim("ex1")
        assert claim is not None, f"{job_id} was never claimed"
        held[claim.job_id] = claim.lease
    lease = held.pop(job_id)
    executor.append_logs(job_id, lease, [(0, '{"event": "run.started"}\n')])
    if fail:
        executor.fail(job_id, lease, state="failed", error="step 1 exited 1")
    else:
        executor.complete(job_id, lease, {"status": "unchanged", "changesets": []})


def test_retry_queues_a_new_attempt_with_current_versions(world: World, tmp_path: Path) -> None:
    alice = world.client("alice")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    failed, completed = submit(world, tmp_path)
    run_to_end(world, failed, fail=True)
    run_to_end(world, completed, fail=False)
    # The secret changes between the first attempt and the retry.
    alice.secret_set("TOKEN", "user:alice", Secret(NEW_VALUE))

    made = alice.jobs_retry([failed, completed])
    assert [j["retry_of"] for j in made] == [failed, completed]
    assert all(j["state"] == "queued" and j["submitter"] == "alice" for j in made)
    shown = alice.job_show(made[0]["id"])
    (token,) = [v for v in shown["env"]["steps"]["1"] if v["name"] == "TOKEN"]
    assert token["secret"]["version"] == 2

    # The old jobs, their logs and their result are as they were.
    old = alice.job_show(failed)
    assert old["state"] == "failed" and old["error"] == "step 1 exited 1"
    assert "run.started" in alice.job_logs(failed)["chunks"][0]["text"]
    assert alice.job_result(completed)["status"] == "unchanged"

    # The retry is claimed and runs with the value of the current version.
    claim = world.client("exec").claim("ex1")
    assert claim is not None and claim.job_id == made[0]["id"]
    assert [s.reveal() for s in claim.secrets.values()] == [NEW_VALUE]
    assert leaks(TOKEN_VALUE, world.http.get("/metrics").content) == []


def test_who_may_retry_what(world: World, tmp_path: Path) -> None:
    world.client("alice").secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    job_id, waiting = submit(world, tmp_path)
    run_to_end(world, job_id, fail=True)
    with pytest.raises(PermissionDeniedError):
        world.client("bob").jobs_retry([job_id])
    with pytest.raises(UsageError, match="only a finished job can be retried"):
        world.client("alice").jobs_retry([waiting])
    # As for cancel: an admin may act in every namespace; the job keeps its submitter.
    (made,) = world.client("carol").jobs_retry([job_id])
    assert made["retry_of"] == job_id and made["submitter"] == "alice"
    assert world.jobs.count_by_state() == {"failed": 1, "queued": 2}


def test_retry_failed_takes_each_failed_job_once_per_namespace(
    world: World, tmp_path: Path
) -> None:
    alice = world.client("alice")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    alice.secret_set("TOKEN", "org:acme", Secret("tok-acme-0123456789-secret"))
    mine = submit(world, tmp_path)
    org = submit(world, tmp_path, namespace="org:acme")
    run_to_end(world, mine[0], fail=True)
    run_to_end(world, mine[1], fail=False)
    run_to_end(world, org[0], fail=True)
    run_to_end(world, org[1], fail=True)

    made = alice.jobs_retry(failed=True, namespace="user:alice")
    assert [j["retry_of"] for j in made] == [mine[0]]
    assert alice.jobs_retry(failed=True, namespace="user:alice") == []  # retried already
    with pytest.raises(PermissionDeniedError):
        world.client("bob").jobs_retry(failed=True, namespace="org:acme")
    # Without --namespace: every namespace alice may act in.
    again = alice.jobs_retry(failed=True)
    assert sorted(j["retry_of"] for j in again) == sorted(org)
    assert {j["namespace"] for j in again} == {"org:acme"}
