"""The executor fleet: heartbeats kept per executor, `runner executors list`, the page;
and, every process separate, a labelled two-job executor with its metrics endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner.db import connect
from runner.errors import PermissionDeniedError
from runner.queue.fleet import ExecutorInfo, SqlFleetStore
from tests.test_e2e_daemons import LABEL, Cluster, spec, wait_for
from tests.test_queue_support import (
    ManualClock,
    World,
    free_port,
    fresh_postgres_database,
    leaks,
    make_repo,
    make_repos,
)
from tests.web_support import csrf_of

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

INFO = {
    "version": "9.9.9",
    "hostname": "build-7",
    "docker_version": "27.1.0",
    "isolations": ["runc", "gvisor"],
    "labels": ["gpu", "big"],
    "running": ["job_1"],
    "limits": {"max_jobs": 4, "step_memory_bytes": 1 << 30},
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


def test_the_store_keeps_the_latest_heartbeat_and_marks_stale(db_url: str) -> None:
    clock = ManualClock()
    with connect(db_url) as db:
        fleet = SqlFleetStore(db, clock=clock)
        fleet.record(ExecutorInfo.from_json({**INFO, "version": "1.0"}, name="ex-a"))
        first = clock.now()
        clock.advance(20)
        fleet.record(ExecutorInfo.from_json(INFO, name="ex-a"))
        fleet.record(
            ExecutorInfo.from_json({"hostname": "x" * 5000, "limits": {"a": "b"}}, name="ex-b")
        )
        clock.advance(20)
        entries = fleet.list()
        assert [e.info.name for e in entries] == ["ex-a", "ex-b"]
        a, b = entries
        assert a.info.version == "9.9.9" and a.info.labels == ("gpu", "big")
        assert a.first_seen == first and a.last_seen > first
        assert len(b.info.hostname) == 200 and b.info.limits == {}  # bounded, numbers only
        # Quiet for 20 s: live under a 30 s stall limit, stale under a 10 s one.
        assert fleet.counts(limit_s=30) == {"live": 2, "stale": 0}
        assert fleet.counts(limit_s=10) == {"live": 0, "stale": 2}
        shown = a.to_json(now=clock.now(), limit_s=10)
        assert shown["stale"] is True and shown["jobs"] == 1


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(f"sqlite:///{tmp_path / 'state.db'}", make_repos(tmp_path / "repos"), ManualClock())
    w.coordinator.fleet = SqlFleetStore(w.db, clock=w.clock)
    yield w
    w.close()


def signed_in(world: World, who: str) -> Any:
    from fastapi.testclient import TestClient

    http = TestClient(world.app, base_url="http://testserver", follow_redirects=False)
    page = http.get("/sign-in")
    answer = http.post(
        "/sign-in", data={"token": world.token[who], "csrf_token": csrf_of(page.text)}
    )
    assert answer.status_code == 303
    return http


def test_heartbeats_fill_the_list_and_the_page_for_admins_only(world: World) -> None:
    world.client("exec").heartbeat("ex-a", {}, info=INFO)
    (listed,) = world.client("carol").executors_list()
    assert listed["name"] == "ex-a" and listed["labels"] == ["gpu", "big"]
    assert listed["docker_version"] == "27.1.0" and listed["jobs"] == 1
    assert listed["stale"] is False
    with pytest.raises(PermissionDeniedError):
        world.client("alice").executors_list()

    admin = signed_in(world, "carol")
    page = admin.get("/executors")
    assert page.status_code == 200
    assert 'data-executor="ex-a"' in page.text and "27.1.0" in page.text and ">live<" in page.text
    assert 'href="/executors"' in admin.get("/jobs").text  # in the admin's navigation

    world.clock.advance(31)  # past the 30 s stall limit with no heartbeat
    assert world.client("carol").executors_list()[0]["stale"] is True
    assert ">stale<" in admin.get("/executors").text

    refused = signed_in(world, "alice").get("/executors")
    assert refused.status_code == 403 and "ex-a" not in refused.text
    assert 'href="/executors"' not in signed_in(world, "alice").get("/jobs").text


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


@pytest.fixture
def cluster(tmp_path: Path, docker_client: Any) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        jobs = list(c.jobs()) if c.procs.get("server") and c.procs["server"].poll() is None else []
        c.stop_all()
        for job_id in jobs:
            for found in docker_client.containers.list(
                all=True, filters={"label": f"{LABEL}={job_id}"}
            ):
                found.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_a_labelled_two_job_executor_reports_itself_and_exits_0(cluster: Cluster) -> None:
    c = cluster
    make_repo(c.repos, "github.com/acme/one")
    c.cli("user", "add", "alice")
    c.cli("user", "add", "carol", "--admin")
    for who in ("alice", "carol"):
        (c.root / f"{who}.tok").write_text(c.cli("token", "create", "--user", who))
    (c.root / "exec.tok").write_text(c.cli("token", "create", "--executor", "fleet"))
    token_value = "fleet-token-value-5150-abcdef"
    c.cli("secret", "set", "TOKEN", "--user", "alice", stdin=token_value)
    (c.root / "spec.yaml").write_text(spec(["github.com/acme/one"], sleep=0))
    c.start_server()
    assert httpx.get(f"{c.url}/readyz", timeout=5).status_code == 200

    port = free_port()
    proc = c.start_executor(
        "ex-big", "--label", "big", "--max-jobs-total", "2", "--metrics-listen", f"127.0.0.1:{port}"
    )
    (first,) = c.remote("submit", str(c.root / "spec.yaml")).split()
    wait_for(lambda: c.jobs()[first]["state"] == "completed", timeout=60, what="the first job")

    # The fleet, as an admin sees it; a user is refused.
    (listed,) = json.loads(c.remote("executors", "list", "--json", who="carol"))
    assert listed["name"] == "ex-big" and listed["labels"] == ["big"] and not listed["stale"]
    assert listed["version"] and listed["docker_version"] and "runc" in listed["isolations"]
    assert listed["limits"]["max_jobs_total"] == 2
    assert "ex-big" in c.remote("executors", "list", who="carol")
    c.remote("executors", "list", ok=False)  # alice: not an admin
    own = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert metric(own, "runner_executor_jobs_total", outcome="completed") == 1
    assert metric(own, "runner_executor_container_starts_total") == 1

    # The retry is the executor's second job; then it exits 0 by itself.
    (retry,) = c.remote("jobs", "retry", first).split()
    assert proc.wait(60) == 0
    jobs = c.jobs()
    assert jobs[retry]["state"] == "completed" and jobs[retry]["retry_of"] == first
    assert jobs[first]["state"] == "completed"
    assert "run.finished" in c.remote("jobs", "logs", first)  # the old attempt's log
    coordinator = httpx.get(f"{c.url}/metrics", timeout=5).text
    assert metric(coordinator, "runner_job_outcomes_total", outcome="completed") == 2
    assert metric(coordinator, "runner_jobs", state="completed") == 2
    assert metric(coordinator, "runner_job_retries_total") == 1
    # Seen once; by now (it exited, the stall limit is 3 s) perhaps stale already.
    seen = [metric(coordinator, "runner_executors", state=s) for s in ("live", "stale")]
    assert sum(seen) == 1
    for text in (own, coordinator):
        assert leaks(token_value, text.encode()) == []
