"""The executor daemon over an in-process coordinator and the fake container runtime."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ContainerRuntimeError, CoordinatorUnavailableError
from runner.execute.steps import RunLimits
from runner.queue.bundle import Bundle
from runner.queue.executor import Executor, ExecutorSettings
from runner.redact import active
from runner.secrets.value import Secret
from runner.testing import FakeRuntime, FakeStepRun
from runner.testing.queue import InProcessExecutorApi
from tests.test_queue_support import (
    SPEC_PLAIN,
    SPEC_WITH_SECRET,
    TOKEN_VALUE,
    ManualClock,
    World,
    leaks,
    make_repos,
    write_spec,
)

IMAGES = {"runner-test/busybox:latest": "sha256:" + "b" * 64}


# Starlette's TestClient asks for a package we do not use; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(f"sqlite:///{tmp_path / 'state.db'}", make_repos(tmp_path / "repos"), ManualClock())
    w.coordinator.settings = type(w.coordinator.settings)(
        repos_root=w.repos_root, stall_limit_s=30, max_resets=3, max_attempts=3
    )
    yield w
    w.close()


def submit(world: World, tmp_path: Path, text: str = SPEC_WITH_SECRET) -> list[str]:
    alice = world.client("alice")
    if "TOKEN" in text:
        alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", text))
    return [j["id"] for j in alice.submit(bundle, "user:alice")["jobs"]]


def writes_file(run: FakeStepRun) -> int:
    run.host_path("file.txt").write_text("hi\n")
    token = run.step.secret_env.get("TOKEN")
    run.stdout(f"token is {token.reveal() if token else 'none'}\n")
    return 0


_RUNNING: list[Daemon] = []


@pytest.fixture(autouse=True)
def _stop_daemons(world: World) -> Iterator[None]:
    yield
    for daemon in _RUNNING:
        daemon.executor.cancel_running("test over")
        daemon.thread.join(10)
    _RUNNING.clear()


class Daemon:
    """An executor on a thread, with settings fast enough for tests."""

    def __init__(
        self,
        world: World,
        handler: Callable[[FakeStepRun], Any],
        tmp_path: Path,
        *,
        max_jobs: int = 2,
        max_jobs_total: int | None = None,
        api: Any = None,
    ) -> None:
        self.runtime = FakeRuntime(handler=handler, images=IMAGES)
        self.executor = Executor(
            api=api or InProcessExecutorApi(world.coordinator, world.token["exec"]),
            runtime=self.runtime,
            settings=ExecutorSettings(
                name="ex-test",
                limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
                max_jobs=max_jobs,
                poll_interval_s=0.05,
                heartbeat_interval_s=0.1,
                log_flush_interval_s=0.05,
                report_timeout_s=5,
                temp_root=tmp_path,
                max_jobs_total=max_jobs_total,
            ),
        )
        self.thread = threading.Thread(target=self.executor.run, daemon=True)
        _RUNNING.append(self)
        self.thread.start()

    def stop(self, timeout: float = 10) -> None:
        self.executor.stop_claiming()
        self.thread.join(timeout)
        assert not self.thread.is_alive()


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def states(world: World, ids: list[str]) -> list[str]:
    return [world.jobs.get(i).state for i in ids]  # type: ignore[union-attr]


def log_events(world: World, job_id: str) -> list[dict[str, Any]]:
    text = "".join(c.text for c in world.jobs.logs(job_id, limit=1000))
    return [json.loads(line) for line in text.splitlines() if line]


def test_jobs_run_to_completion_with_redacted_logs(world: World, tmp_path: Path) -> None:
    ids = submit(world, tmp_path)
    daemon = Daemon(world, writes_file, tmp_path / "tmp")
    wait_for(lambda: states(world, ids) == ["completed", "completed"])
    daemon.stop()
    for job_id in ids:
        job = world.jobs.get(job_id)
        assert job is not None and job.result is not None
        assert job.result["status"] == "changed"
        (changeset,) = job.result["changesets"]
        assert changeset["headRef"] == "refs/heads/hello"
        assert "+hi" in changeset["commits"][0]["diff"]
        events = log_events(world, job_id)
        names = [e["event"] for e in events]
        assert names[0] == "run.started" and names[-1] == "run.finished"
        assert "workspace.finished" in names
        output = [e["line"] for e in events if e["event"] == "step.output"]
        assert output == ["token is [REDACTED:TOKEN]"]
        assert [(s.step, s.status) for s in world.jobs.steps(job_id)] == [(1, "finished")]
    raw = "".join(c.text for i in ids for c in world.jobs.logs(i)).encode()
    assert leaks(TOKEN_VALUE, raw) == []
    # Secrets went in through the secret channel, never the plain env.
    assert all(s.env.get("TOKEN") is None for s in daemon.runtime.steps)
    assert all(s.secret_env["TOKEN"].reveal() == TOKEN_VALUE for s in daemon.runtime.steps)
    # Released once each job's last log went out.
    assert active().redact(TOKEN_VALUE) == TOKEN_VALUE
    accessed = [e for e in world.secrets.log() if e.event == "accessed"]
    assert sorted(str(e.job) for e in accessed) == sorted(ids)
    assert list(tmp_path.joinpath("tmp").iterdir()) == []


def test_a_failing_step_fails_the_job_for_good(world: World, tmp_path: Path) -> None:
    (job_id,) = submit(world, tmp_path, SPEC_PLAIN)

    def fails(run: FakeStepRun) -> int:
        run.stderr("no such thing\n")
        return 3

    daemon = Daemon(world, fails, tmp_path / "tmp")
    wait_for(lambda: states(world, [job_id]) == ["failed"])
    daemon.stop()
    job = world.jobs.get(job_id)
    assert job is not None and job.attempts == 1
    assert "step 1 failed with exit code 3" in (job.error or "")
    assert "no such thing" in (job.error or "")


def test_an_engine_failure_is_retried_then_given_up(world: World, tmp_path: Path) -> None:
    (job_id,) = submit(world, tmp_path, SPEC_PLAIN)

    def engine_down(run: FakeStepRun) -> int:
        raise ContainerRuntimeError("the Docker engine went away")

    daemon = Daemon(world, engine_down, tmp_path / "tmp")
    wait_for(lambda: states(world, [job_id]) == ["failed"])
    daemon.stop()
    job = world.jobs.get(job_id)
    assert job is not None and job.attempts == 3
    assert "gave up after 3 attempts" in (job.error or "")
    assert "Docker engine went away" in (job.error or "")


def test_a_secret_in_the_diff_fails_the_job(world: World, tmp_path: Path) -> None:
    (job_id, _) = submit(world, tmp_path)

    def leaks_into_file(run: FakeStepRun) -> int:
        run.host_path("leak.txt").write_text(run.step.secret_env["TOKEN"].reveal())
        return 0

    daemon = Daemon(world, leaks_into_file, tmp_path / "tmp")
    wait_for(lambda: states(world, [job_id]) == ["failed"])
    daemon.stop()
    job = world.jobs.get(job_id)
    assert job is not None and job.result is None
    assert "TOKEN" in (job.error or "") and TOKEN_VALUE not in (job.error or "")


def blocking(started: threading.Event) -> Callable[[FakeStepRun], int]:
    def handler(run: FakeStepRun) -> int:
        started.set()
        run.stdout("working\n")
        run.cancel.wait(20)
        return 0

    return handler


def test_a_user_cancel_stops_the_job_within_a_heartbeat(world: World, tmp_path: Path) -> None:
    (job_id,) = submit(world, tmp_path, SPEC_PLAIN)
    started = threading.Event()
    daemon = Daemon(world, blocking(started), tmp_path / "tmp")
    assert started.wait(10)
    asked = time.monotonic()
    world.client("alice").job_cancel(job_id)
    wait_for(lambda: states(world, [job_id]) == ["canceled"], timeout=5)
    assert time.monotonic() - asked < 2
    daemon.stop()
    assert "canceled on request" in (world.jobs.get(job_id).error or "")  # type: ignore[union-attr]
    assert any(e["line"] == "working" for e in log_events(world, job_id) if "line" in e)


def test_graceful_drain_then_forced_cancel(world: World, tmp_path: Path) -> None:
    spec = SPEC_PLAIN.replace(
        "  - repository: github.com/acme/one\n",
        "  - repository: github.com/acme/one\n  - repository: github.com/acme/two\n",
    )
    first, second = submit(world, tmp_path, spec)
    release = threading.Event()
    started = threading.Event()

    def handler(run: FakeStepRun) -> int:
        started.set()
        release.wait(20)
        return 0

    daemon = Daemon(world, handler, tmp_path / "tmp", max_jobs=1)
    assert started.wait(10)
    daemon.executor.stop_claiming()
    time.sleep(0.3)
    assert daemon.thread.is_alive()  # draining: the running job may finish
    release.set()
    daemon.thread.join(10)
    assert not daemon.thread.is_alive()
    assert states(world, [first, second]) == ["completed", "queued"]

    release.clear()
    started.clear()

    def until_canceled(run: FakeStepRun) -> int:
        started.set()
        run.cancel.wait(20)
        return 0

    daemon = Daemon(world, until_canceled, tmp_path / "tmp", max_jobs=1)
    assert started.wait(10)
    daemon.executor.stop_claiming()
    daemon.executor.cancel_running("the executor was stopped")
    daemon.thread.join(10)
    assert not daemon.thread.is_alive()
    job = world.jobs.get(second)
    assert job is not None and job.state == "failed"
    assert "the executor was stopped" in (job.error or "")


def test_an_idle_executor_stops_at_once(world: World, tmp_path: Path) -> None:
    daemon = Daemon(world, writes_file, tmp_path / "tmp")
    time.sleep(0.2)
    began = time.monotonic()
    daemon.stop(timeout=2)
    assert time.monotonic() - began < 1


def test_a_lost_lease_stops_the_job_and_reports_nothing(world: World, tmp_path: Path) -> None:
    (job_id,) = submit(world, tmp_path, SPEC_PLAIN)
    started = threading.Event()
    daemon = Daemon(world, blocking(started), tmp_path / "tmp")
    assert started.wait(10)
    daemon.executor.stop_claiming()  # so it does not claim the job again itself
    world.clock.advance(60)
    (reset,) = world.coordinator.reset_stalled()
    assert reset.state == "queued"
    daemon.thread.join(10)
    assert not daemon.thread.is_alive()
    job = world.jobs.get(job_id)
    assert job is not None and job.state == "queued" and job.resets == 1


class Flaky:
    """Fails a few claims as a coordinator that is down would, then works."""

    def __init__(self, inner: InProcessExecutorApi, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def claim(self, executor: str | None = None, labels: Sequence[str] = ()) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise CoordinatorUnavailableError("connection refused")
        return self.inner.claim(executor, labels)


def test_the_executor_backs_off_while_the_coordinator_is_down(world: World, tmp_path: Path) -> None:
    (job_id,) = submit(world, tmp_path, SPEC_PLAIN)
    flaky = Flaky(InProcessExecutorApi(world.coordinator, world.token["exec"]), failures=3)
    began = time.monotonic()
    daemon = Daemon(world, writes_file, tmp_path / "tmp", api=flaky)
    wait_for(lambda: states(world, [job_id]) == ["completed"])
    # 0.05 + 0.1 + 0.2 s of back-off (with jitter) before the fourth claim went through.
    assert time.monotonic() - began > 0.25
    daemon.stop()


# The next job claimed with a job's end -------------------------------------------------


class Calls:
    """The executor API, noting which calls brought a job back."""

    def __init__(self, inner: InProcessExecutorApi) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def claim(self, executor: str | None = None, labels: Sequence[str] = ()) -> Any:
        got = self.inner.claim(executor, labels)
        if got is not None:
            self.calls.append("claim")
        return got

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("complete")
        return self.inner.complete(*args, **kwargs)

    def end_and_claim(self, *args: Any) -> Any:
        got = self.inner.end_and_claim(*args)
        self.calls.append("end+claim" if got.claim is not None else "end+none")
        return got


def three_jobs(world: World, tmp_path: Path) -> list[str]:
    repos = "".join(f"  - repository: github.com/acme/{r}\n" for r in ("one", "two"))
    spec = SPEC_PLAIN.replace("  - repository: github.com/acme/one\n", repos)
    return submit(world, tmp_path, spec) + submit(world, tmp_path / "again", SPEC_PLAIN)


def test_a_busy_executor_claims_its_next_job_with_the_last_ones_end(
    world: World, tmp_path: Path
) -> None:
    ids = three_jobs(world, tmp_path)
    api = Calls(InProcessExecutorApi(world.coordinator, world.token["exec"]))
    daemon = Daemon(world, writes_file, tmp_path / "tmp", max_jobs=1, api=api)
    wait_for(lambda: states(world, ids) == ["completed"] * 3)
    daemon.stop()
    # One claim of its own; every later job came with the end of the one before.
    assert api.calls == ["claim", "end+claim", "end+claim", "end+none"]
    assert daemon.executor.claimed == 3


@pytest.mark.parametrize("total", [1, 2])
def test_an_executor_with_a_job_budget_asks_for_no_more_than_it_may_run(
    world: World, tmp_path: Path, total: int
) -> None:
    """--ephemeral (1) and --max-jobs-total 2: the end of the last job claims nothing."""
    ids = three_jobs(world, tmp_path)
    api = Calls(InProcessExecutorApi(world.coordinator, world.token["exec"]))
    daemon = Daemon(world, writes_file, tmp_path / "tmp", max_jobs=1, max_jobs_total=total, api=api)
    daemon.thread.join(10)
    assert not daemon.thread.is_alive() and daemon.executor.exit_code == 0
    assert sorted(states(world, ids)) == sorted(["completed"] * total + ["queued"] * (3 - total))
    assert api.calls == ["claim"] + ["end+claim"] * (total - 1) + ["complete"]


def test_a_refused_claim_with_an_end_stops_the_executor_and_keeps_the_end(
    world: World, tmp_path: Path
) -> None:
    from runner.errors import PermissionDeniedError
    from runner.queue.client import NextJob

    ids = three_jobs(world, tmp_path)

    class Refusing(Calls):
        def end_and_claim(self, job_id: str, lease: str, end: Any, *ask: Any) -> Any:
            self.inner.complete(job_id, lease, end.result, brokered=end.brokered)
            return NextJob(refused=PermissionDeniedError("the token was revoked"))

    api = Refusing(InProcessExecutorApi(world.coordinator, world.token["exec"]))
    daemon = Daemon(world, writes_file, tmp_path / "tmp", max_jobs=1, api=api)
    daemon.thread.join(10)
    assert not daemon.thread.is_alive() and daemon.executor.exit_code == 1
    assert sorted(states(world, ids)) == ["completed", "queued", "queued"]
