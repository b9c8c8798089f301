"""Completing or failing a job and claiming the next one in the same request (issue 21).

``POST /api/executor/jobs/{id}/complete`` and ``/fail`` with a ``claim`` field record
the end, then answer as ``/api/executor/claim`` would with that body; without the
field they answer as before. On SQLite and PostgreSQL, through the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.errors import LeaseLostError, UsageError
from runner.queue.bundle import Bundle
from runner.queue.client import Claim, JobEnd, NextJob
from runner.queue.models import ENDED_HEADER
from tests.test_queue_support import SPEC_PLAIN, World, world, write_spec

__all__ = ["world"]  # a fixture, used by name

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

RESULT = {"status": "unchanged", "changesets": []}
COMPLETED = JobEnd(state="completed", result=RESULT)


def queue_jobs(world: World, tmp_path: Path, count: int) -> list[str]:
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_PLAIN))
    alice = world.client("alice")
    return [alice.submit(bundle, "user:alice")["jobs"][0]["id"] for _ in range(count)]


def post(world: World, path: str, body: dict[str, Any]) -> Any:
    return world.http.post(
        path, json=body, headers={"Authorization": f"Bearer {world.token['exec']}"}
    )


def state(world: World, job_id: str) -> str:
    return str(world.client("alice").job_show(job_id)["state"])


def test_an_end_with_a_claim_answers_the_next_job_and_records_the_end(
    world: World, tmp_path: Path
) -> None:
    ids = queue_jobs(world, tmp_path, 4)
    executor = world.client("exec")
    first = executor.claim("ex1")
    assert first is not None and first.job_id == ids[0]

    # complete + claim: the next job, with a lease that works; the first job completed.
    answer = post(
        world,
        f"/api/executor/jobs/{ids[0]}/complete",
        {"lease": first.lease, "result": RESULT, "claim": {"executor": "ex1"}},
    )
    assert answer.status_code == 200 and answer.headers[ENDED_HEADER] == "completed"
    assert answer.headers["cache-control"] == "no-store"
    second = Claim.from_json(answer.json())
    assert second.job_id == ids[1] and second.job["executor"] == "ex1"
    shown = world.client("alice").job_show(ids[0])
    assert shown["state"] == "completed" and shown["result"] == RESULT
    assert executor.heartbeat("ex1", {ids[1]: second.lease}).lost == ()

    # fail + claim, through the client an executor uses.
    got = executor.end_and_claim(
        ids[1], second.lease, JobEnd(state="failed", error="boom"), "ex1", []
    )
    assert got.refused is None and got.claim is not None and got.claim.job_id == ids[2]
    assert state(world, ids[1]) == "failed"

    # An old executor: no claim field, the answer is the ended job, as before.
    old = post(
        world, f"/api/executor/jobs/{ids[2]}/complete", {"lease": got.claim.lease, "result": {}}
    )
    assert old.status_code == 200 and ENDED_HEADER not in old.headers
    assert old.json()["id"] == ids[2] and old.json()["state"] == "completed"
    assert state(world, ids[3]) == "queued"

    # The last job: its end claims nothing, the same 204 as a claim of an empty queue.
    last = executor.claim("ex1")
    assert last is not None and last.job_id == ids[3]
    empty = post(
        world,
        f"/api/executor/jobs/{ids[3]}/complete",
        {"lease": last.lease, "result": RESULT, "claim": {"executor": "ex1", "labels": []}},
    )
    assert (empty.status_code, empty.content) == (204, b"")
    assert empty.headers[ENDED_HEADER] == "completed"
    assert [state(world, i) for i in ids] == ["completed", "failed", "completed", "completed"]


def test_a_refused_claim_part_keeps_the_end_and_answers_the_claims_error(
    world: World, tmp_path: Path
) -> None:
    ids = queue_jobs(world, tmp_path, 3)
    executor = world.client("exec")
    first = executor.claim("ex1")
    assert first is not None

    # A bad executor name: the claim's own error answer, the end recorded all the same.
    bad = {"executor": "no such name!"}
    alone = post(world, "/api/executor/claim", bad)
    assert alone.status_code == 400
    answer = post(
        world,
        f"/api/executor/jobs/{ids[0]}/complete",
        {"lease": first.lease, "result": RESULT, "claim": bad},
    )
    assert (answer.status_code, answer.json()) == (alone.status_code, alone.json())
    assert answer.headers[ENDED_HEADER] == "completed"
    assert [state(world, i) for i in ids] == ["completed", "queued", "queued"]

    # A label that is no label, through the client: the error comes back as ``refused``.
    second = executor.claim("ex1")
    assert second is not None and second.job_id == ids[1]
    errored = JobEnd(state="errored", error="engine gone")
    got = executor.end_and_claim(ids[1], second.lease, errored, None, ["not a label"])
    assert isinstance(got.refused, UsageError) and got.claim is None
    assert "not a label" in got.refused.message
    # "errored" waits to be claimed again: no claim took it, nor the third job.
    assert [state(world, i) for i in ids] == ["completed", "errored", "queued"]

    # The end refused (not the job's lease): the end's error, and nothing claimed.
    again = executor.claim("ex1")
    assert again is not None and again.job_id == ids[1]
    with pytest.raises(LeaseLostError):
        executor.end_and_claim(ids[1], "not-the-lease", COMPLETED, "ex1", [])
    assert [state(world, i) for i in ids] == ["completed", "processing", "queued"]


def test_a_coordinator_that_ignores_the_claim_field_gives_no_next_job() -> None:
    """A newer executor on an older coordinator: the ended job comes back, no claim."""
    import httpx

    from runner.queue.client import CoordinatorClient

    def old_coordinator(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "job_1", "state": "completed"})

    http = httpx.Client(transport=httpx.MockTransport(old_coordinator), base_url="http://old")
    client = CoordinatorClient(url="http://old", token="rnr_x", http=http)
    assert client.end_and_claim("job_1", "lease", COMPLETED, "ex1", []) == NextJob()


def test_the_openapi_document_shows_the_claim_field(world: World) -> None:
    schemas = world.http.get("/openapi.json").json()["components"]["schemas"]
    for body in ("CompleteBody", "FailBody"):
        claim = schemas[body]["properties"]["claim"]
        assert {"$ref": "#/components/schemas/ClaimBody"} in claim["anyOf"]
        assert "claim" not in schemas[body].get("required", [])
