"""Metrics and health: `/metrics` scraped and parsed with prometheus_client's own parser.

The coordinator runs in-process over SQLite with an executor on the fake
runtime; the real processes (server, executor, Docker) are in test_fleet.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner import migrations
from runner.execute.steps import RunLimits
from runner.metrics import ExecutorMetrics, serve_metrics
from runner.queue.bundle import Bundle
from runner.queue.executor import Executor, ExecutorSettings
from runner.secrets.value import Secret
from runner.testing import FakeRuntime, FakeStepRun
from runner.testing.queue import InProcessExecutorApi
from tests.test_queue_support import (
    SPEC_WITH_SECRET,
    TOKEN_VALUE,
    ManualClock,
    World,
    free_port,
    leaks,
    sqlite_world,
    write_spec,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

IMAGES = {"runner-test/busybox:latest": "sha256:" + "b" * 64}
# Label names a metric may carry: none names a namespace, a repository or a job.
BOUNDED_LABELS = {"state", "outcome", "result", "le"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sqlite_world(tmp_path) as w:
        yield w


def scrape(world: World) -> str:
    answer = world.http.get("/metrics")  # no token: Prometheus scrapes without one
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text: str = answer.text
    return text


def submit(world: World, tmp_path: Path) -> list[str]:
    alice = world.client("alice")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
    return [j["id"] for j in alice.submit(bundle, "user:alice")["jobs"]]


def writes_file(run: FakeStepRun) -> int:
    run.host_path("file.txt").write_text("hi\n")
    run.stdout("hello from the step\n")
    return 0


def test_counters_move_with_jobs_and_a_two_job_executor_exits_0(
    world: World, tmp_path: Path
) -> None:
    ids = submit(world, tmp_path)
    before = scrape(world)
    assert value(before, "runner_jobs", state="queued") == 2
    assert value(before, "runner_jobs", state="completed") == 0
    assert value(before, "runner_job_outcomes_total", outcome="completed") == 0

    executor = Executor(
        api=InProcessExecutorApi(world.coordinator, world.token["exec"]),
        runtime=FakeRuntime(handler=writes_file, images=IMAGES),
        settings=ExecutorSettings(
            name="ex-metrics",
            limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
            max_jobs=1,
            poll_interval_s=0.05,
            heartbeat_interval_s=0.1,
            log_flush_interval_s=0.05,
            report_timeout_s=5,
            temp_root=tmp_path / "tmp",
            max_jobs_total=2,
        ),
    )
    # The executor's own endpoint, as `runner executor --metrics-listen` serves it.
    port = free_port()
    stop = serve_metrics(executor.metrics.registry, "127.0.0.1", port)
    try:
        # Two jobs, then the loop ends by itself with 0: nobody stops it.
        done = threading.Thread(
            target=lambda: setattr(executor, "code", executor.run()), daemon=True
        )
        done.start()
        done.join(30)
        if done.is_alive():
            executor.cancel_running("test over")
            raise AssertionError("the executor did not exit after --max-jobs-total jobs")
        assert executor.code == 0  # type: ignore[attr-defined]
        own = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop()
    assert executor.claimed == 2
    assert [world.jobs.get(i).state for i in ids] == ["completed", "completed"]  # type: ignore[union-attr]
    assert value(own, "runner_executor_jobs_total", outcome="completed") == 2
    assert value(own, "runner_executor_container_starts_total") == 2
    assert value(own, "runner_executor_step_duration_seconds_count") == 2
    assert value(own, "runner_executor_running_jobs") == 0

    # An empty claim over HTTP: claims are timed where the API answers them.
    assert world.client("exec").claim("ex-metrics") is None
    after = scrape(world)
    assert value(after, "runner_jobs", state="queued") == 0
    assert value(after, "runner_jobs", state="completed") == 2
    assert value(after, "runner_job_outcomes_total", outcome="completed") == 2
    assert value(after, "runner_job_duration_seconds_count", outcome="completed") == 2
    assert value(after, "runner_job_queue_wait_seconds_count") == 2
    assert value(after, "runner_secret_accesses_total") == 2  # TOKEN, once per job
    assert value(after, "runner_step_duration_seconds_count") == 2
    assert value(after, "runner_log_bytes_total") > 0
    assert value(after, "runner_claims_total", result="empty") == 1
    assert value(after, "runner_claim_duration_seconds_count") == 1
    for text in (after, own):
        assert leaks(TOKEN_VALUE, text.encode()) == []
        for name, labels in samples(text):
            assert {key for key, _ in labels} <= BOUNDED_LABELS, name


def test_cancel_fail_cache_and_registries_apart(world: World, tmp_path: Path) -> None:
    ids = submit(world, tmp_path)
    alice = world.client("alice")
    alice.job_cancel(ids[0])
    alice.job_cancel(ids[0])  # already canceled: counted once
    executor = world.client("exec")
    claim = executor.claim("ex1")
    assert claim is not None and claim.job_id == ids[1]
    assert executor.cache_get("0" * 64) is None
    executor.fail(claim.job_id, claim.lease, state="errored", error="the engine went away")
    text = scrape(world)
    assert value(text, "runner_job_outcomes_total", outcome="canceled") == 1
    assert value(text, "runner_job_outcomes_total", outcome="errored") == 1
    assert value(text, "runner_job_outcomes_total", outcome="failed") == 0
    assert value(text, "runner_jobs", state="errored") == 1
    assert value(text, "runner_claims_total", result="claimed") == 1
    # This World keeps no cache: a lookup is a miss.
    assert value(text, "runner_cache_requests_total", result="miss") == 1

    # Another coordinator in the same process keeps its own counts.
    other = World(f"sqlite:///{tmp_path / 'other.db'}", world.repos_root, ManualClock())
    try:
        fresh = scrape(other)
        assert value(fresh, "runner_job_outcomes_total", outcome="canceled") == 0
        assert value(fresh, "runner_jobs", state="errored") == 0
    finally:
        other.close()


def test_executor_metrics_count_egress_refusals_and_time_steps() -> None:
    metrics = ExecutorMetrics(running=lambda: 3)
    metrics.event("job_1", "step.started", {"step": 1}, 10.0)
    metrics.event("job_1", "step.output", {"step": 1, "line": "x"}, 11.0)
    metrics.event("job_1", "step.egress_denied", {"step": 1, "host": "evil.test"}, 11.0)
    metrics.event("job_1", "step.finished", {"step": 1, "exit_code": 0}, 12.5)
    metrics.event("job_1", "step.cached", {"step": 2}, 13.0)  # starts no container
    text = metrics.exposition().decode()
    assert value(text, "runner_executor_egress_refusals_total") == 1
    assert value(text, "runner_executor_container_starts_total") == 1
    assert value(text, "runner_executor_step_duration_seconds_sum") == 2.5
    assert value(text, "runner_executor_running_jobs") == 3
    assert "evil.test" not in text


def test_healthz_and_readyz_answer_without_a_token(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.db.migrate()  # every migration this process knows of
    assert world.http.get("/healthz").json() == {"status": "ok"}
    ready = world.http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}

    # A newer runner knows a migration this database has not had: not ready.
    future = migrations.Migration(399, "test: a migration not applied", "SELECT 1;")
    monkeypatch.setitem(migrations._REGISTRY, future.version, future)
    behind = world.http.get("/readyz")
    assert behind.status_code == 503
    assert set(behind.json()) == {"status", "reason"}
    assert "behind" in behind.json()["reason"]
    assert world.http.get("/healthz").status_code == 200  # the process still answers

    world.db.migrate([future])
    assert world.http.get("/readyz").status_code == 200
