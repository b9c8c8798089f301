"""Limits on a whole workspace job: `--job-timeout` and `--disk-cap`.

On the fake runtime first (the rule), then on the real engine at both
isolation levels: a step writing past the cap into the workspace or into
its container's own layer is stopped and fails its workspace with "went
over its disk cap (SIZE)"; steps outliving the job's time fail it with "went
over its job timeout (N s)"; nothing is left behind.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runner.execute.job import run_job
from runner.execute.limits import STEP_LABEL, DiskWatcher, JobDeadline, tree_bytes
from runner.execute.steps import RUN_LABEL, RunLimits
from runner.redact.active import ActiveRedactor
from runner.sandbox import SandboxPolicy
from runner.testing import FakeRuntime, FakeStepRun
from tests.helpers import TEST_IMAGE, make_repo, run_runner, runner_env
from tests.test_job import IMAGE, IMAGE_ID, Recorder, _job, _services, step

MIB = 1 << 20


def run_fake(
    tmp_path: Path,
    steps: str,
    handler: Any,
    sandbox: SandboxPolicy,
    limits: RunLimits | None = None,
) -> tuple[Any, FakeRuntime]:
    job, store = _job(tmp_path, steps, ["github.com/acme/app"])
    runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
    rec = Recorder(ActiveRedactor())
    services = _services(tmp_path, runtime, rec, sandbox=sandbox)
    if limits is not None:
        services = type(services)(**{**services.__dict__, "limits": limits})
    (outcome,) = run_job(
        job, lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"), services
    )
    return outcome.result, runtime


def until_stopped(run: FakeStepRun) -> int:
    """Wait, in real time, for the watcher to stop the step (or give up after 20 s)."""
    run.cancel.wait(20)
    return 0


# The disk cap on the fake runtime --------------------------------------------------------------


def test_writing_past_the_cap_into_the_workspace_stops_the_step(tmp_path: Path) -> None:
    stopped: list[bool] = []

    def handler(run: FakeStepRun) -> int:
        run.host_path("big.bin").write_bytes(b"x" * (2 * MIB))
        until_stopped(run)
        stopped.append(run.cancel.is_set())
        return 0

    result, runtime = run_fake(
        tmp_path, step("one") + step("two"), handler, SandboxPolicy(disk_cap_bytes=MIB)
    )
    assert result.status == "failed"
    assert result.error.startswith(
        "step 1 was stopped: the workspace went over its disk cap (1 MiB)"
    ), result.error
    assert stopped == [True]
    assert len(runtime.steps) == 1  # the second step never ran


def test_writing_past_the_cap_into_the_container_s_layer_stops_the_step(tmp_path: Path) -> None:
    stopped: list[bool] = []

    def handler(run: FakeStepRun) -> int:
        run.written = 3 * MIB
        until_stopped(run)
        stopped.append(run.cancel.is_set())
        return 0

    result, runtime = run_fake(tmp_path, step("one"), handler, SandboxPolicy(disk_cap_bytes=MIB))
    assert stopped == [True]
    assert result.status == "failed"
    assert "step 1 was stopped: the workspace went over its disk cap (1 MiB)" in result.error
    # The runtime found the container to measure by the watcher's label.
    assert STEP_LABEL in runtime.steps[0].labels


def test_a_quick_writer_is_caught_after_its_step(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        run.host_path("big.bin").write_bytes(b"x" * (3 * MIB))
        return 0

    result, _ = run_fake(tmp_path, step("one"), handler, SandboxPolicy(disk_cap_bytes=2 * MIB))
    assert result.status == "failed"
    assert "the workspace went over its disk cap (2 MiB)" in result.error
    # However quick, what it left in the workspace is measured after it, never missed.
    workspace = tmp_path / "ws"
    workspace.mkdir()
    stop = threading.Event()
    runtime = FakeRuntime()
    with DiskWatcher(
        cap=MIB, workspace=workspace, runtime=runtime, stop=stop, interval_s=3600
    ) as watcher:
        (workspace / "big.bin").write_bytes(b"x" * (2 * MIB))
    assert watcher.over and not stop.is_set()
    assert str(watcher.failure(3)).startswith(
        "step 3 failed: the workspace went over its disk cap (1 MiB)"
    )


def test_each_step_gets_the_whole_cap_and_no_cap_watches_nothing(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        name = f"part-{len(list(run.host_path('.').glob('part-*')))}.bin"
        run.host_path(name).write_bytes(b"x" * (600 << 10))
        run.written = 300 << 10
        return 0

    steps = step("one") + step("two")
    result, _ = run_fake(tmp_path / "a", steps, handler, SandboxPolicy(disk_cap_bytes=MIB))
    assert result.status == "changed", result.error
    result, runtime = run_fake(tmp_path / "b", steps, handler, SandboxPolicy())
    assert result.status == "changed", result.error
    assert all(STEP_LABEL not in s.labels for s in runtime.steps)


# The job timeout on the fake runtime -----------------------------------------------------------


def test_the_job_timeout_bounds_each_step_s_timeout(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        run.sleep(100)  # on the fake clock: past the step's timeout, which is the job's time
        return 0

    result, runtime = run_fake(
        tmp_path,
        step("one") + step("two"),
        handler,
        SandboxPolicy(job_timeout_s=50),
        RunLimits(timeout_s=600, capture_limit=MIB),
    )
    assert result.status == "failed"
    assert result.error.startswith(
        "step 1 was stopped: the workspace went over its job timeout (50 s)"
    ), result.error
    assert runtime.steps[0].timeout_s <= 50
    assert len(runtime.steps) == 1


def test_a_step_s_own_timeout_stays_a_step_timeout(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        run.sleep(100)
        return 0

    result, runtime = run_fake(
        tmp_path,
        step("one"),
        handler,
        SandboxPolicy(job_timeout_s=600),
        RunLimits(timeout_s=30, capture_limit=MIB),
    )
    assert result.error.startswith("step 1 timed out after 30 s"), result.error
    assert runtime.steps[0].timeout_s == 30


def test_no_step_starts_once_the_job_s_time_is_up(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        time.sleep(0.3)  # real time: the job's deadline is on the real clock
        return 0

    result, runtime = run_fake(
        tmp_path, step("one") + step("two"), handler, SandboxPolicy(job_timeout_s=0.2)
    )
    assert result.status == "failed"
    assert result.error.startswith(
        "step 2 did not start: the workspace went over its job timeout (0.2 s)"
    ), result.error
    assert len(runtime.steps) == 1


def test_the_deadline_and_the_measure() -> None:
    now = [100.0]
    deadline = JobDeadline(10, monotonic=lambda: now[0])
    assert deadline.step_timeout(1, 30) == (10, True)
    now[0] = 105
    assert deadline.step_timeout(2, 3) == (3, False)
    assert JobDeadline(None).step_timeout(1, 30) == (30, False)


def test_tree_bytes_counts_files_once_and_follows_no_link(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 500)
    (tmp_path / "sub" / "hard").hardlink_to(tmp_path / "a")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_bytes(b"z" * 100_000)
    (tmp_path / "link").symlink_to(outside)
    assert tree_bytes(tmp_path) == 1500
    assert tree_bytes(tmp_path / "missing") == 0


# On the real engine ------------------------------------------------------------------------------

TAIL = "changesetTemplate: {title: t, body: b, branch: limits, commit: {message: m}}\n"


def spec_of(tmp_path: Path, *scripts: str) -> Path:
    body = "name: limits\non:\n  - repository: github.com/acme/app\nsteps:\n"
    for script in scripts:
        body += f"  - run: {json.dumps(script)}\n    container: {TEST_IMAGE}\n"
    path = tmp_path / "spec.yaml"
    path.write_text(body + TAIL)
    return path


ISOLATIONS = [
    pytest.param("runc", id="runc"),
    pytest.param("gvisor", id="gvisor", marks=pytest.mark.slow),
]


@pytest.fixture
def level(request: pytest.FixtureRequest, isolation: str) -> str:
    """The isolation level a test runs at; gVisor's needs the engine to have runsc."""
    if isolation == "gvisor":
        request.getfixturevalue("gvisor")
    return isolation


def run_limited(
    tmp_path: Path, isolation: str, scripts: tuple[str, ...], *flags: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], Path]:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    args = ["run", str(spec_of(tmp_path, *scripts)), "--repos-root", str(repos)]
    args += ["--out", str(tmp_path / "out"), "--json", "--isolation", isolation, *flags]
    proc = run_runner(args, env)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc, events, tmp


def finished(events: list[dict[str, Any]]) -> dict[str, Any]:
    (event,) = [e for e in events if e["event"] == "workspace.finished"]
    return event


def assert_nothing_left(events: list[dict[str, Any]], tmp: Path) -> None:
    run_id = next(e["run_id"] for e in events if e["event"] == "run.started")
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout.strip() == ""
    assert [p.name for p in tmp.iterdir() if p.name.startswith("runner-")] == []


@pytest.mark.docker
@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize(
    "target",
    [
        pytest.param("big.bin", id="workspace"),
        # gVisor keeps /tmp in the sandbox's memory (bounded by --memory, not the disk).
        pytest.param("/big.bin", id="writable-layer"),
    ],
)
def test_a_step_writing_past_the_disk_cap_is_stopped(
    tmp_path: Path, docker_client: Any, level: str, target: str
) -> None:
    script = f"dd if=/dev/zero of={target} bs=1M count=24 && sync && sleep 60"
    proc, events, tmp = run_limited(tmp_path, level, (script,), "--disk-cap", "4m")
    assert proc.returncode == 3, proc.stderr
    done = finished(events)
    assert done["status"] == "failed"
    assert "step 1 was stopped: the workspace went over its disk cap (4 MiB)" in done["error"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "went over its disk cap (4 MiB)" in summary["workspaces"][0]["error"]
    assert_nothing_left(events, tmp)


@pytest.mark.docker
def test_writing_to_tmp_counts_under_runc(tmp_path: Path, docker_client: Any) -> None:
    script = "dd if=/dev/zero of=/tmp/big bs=1M count=24 && sleep 60"
    proc, events, _ = run_limited(tmp_path, "runc", (script,), "--disk-cap", "4m")
    assert proc.returncode == 3, proc.stderr
    assert "went over its disk cap (4 MiB)" in finished(events)["error"]


@pytest.mark.docker
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_steps_past_the_job_timeout_fail_the_workspace(
    tmp_path: Path, docker_client: Any, level: str
) -> None:
    scripts = ("sleep 3", "sleep 3", "sleep 3 && echo late > late.txt")
    proc, events, tmp = run_limited(tmp_path, level, scripts, "--job-timeout", "4")
    assert proc.returncode == 3, proc.stderr
    done = finished(events)
    assert done["status"] == "failed"
    assert "went over its job timeout (4 s)" in done["error"], done["error"]
    started = [e["step"] for e in events if e["event"] == "step.started"]
    assert 3 not in started
    assert_nothing_left(events, tmp)


@pytest.mark.docker
def test_a_spec_within_its_limits_runs_as_before(tmp_path: Path, docker_client: Any) -> None:
    scripts = (
        "dd if=/dev/zero of=small.bin bs=1K count=64 && dd if=/dev/zero of=/tmp/x bs=1K count=64",
    )
    proc, events, _ = run_limited(
        tmp_path, "runc", scripts, "--disk-cap", "16m", "--job-timeout", "120"
    )
    assert proc.returncode == 0, proc.stderr
    assert finished(events)["status"] == "changed"


@pytest.mark.docker
def test_the_settings_set_the_limits_and_nonsense_is_refused(
    tmp_path: Path, docker_client: Any
) -> None:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    spec = spec_of(tmp_path, "sleep 3", "sleep 3")
    base = ["run", str(spec), "--repos-root", str(repos), "--out", str(tmp_path / "out")]
    env = runner_env(tmp_path / "home", RUNNER_JOB_TIMEOUT="2")
    proc = run_runner([*base, "--json"], env)
    assert proc.returncode == 3 and "went over its job timeout (2 s)" in proc.stdout
    bad = run_runner(base, runner_env(tmp_path / "home", RUNNER_DISK_CAP="lots"))
    assert bad.returncode == 1 and "RUNNER_DISK_CAP" in bad.stderr
    bad = run_runner([*base, "--disk-cap", "-1m"], runner_env(tmp_path / "home"))
    assert bad.returncode == 2 and "is not a positive size" in bad.stderr
