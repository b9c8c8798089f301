"""Pipelined containers: a step's container is made before its turn, given its payload then.

The step loop and the job's turns on the fake runtime (what is made ahead,
what is discarded, what runs where), then the real engine: nothing of a
secret or of the late environment in a waiting container's configuration,
and no container or network left after a run whose workspaces failed or were
stopped while containers waited.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.common import container_events
from runner.execute.job import run_job
from runner.execute.runtime import Mount, StepContainer
from runner.secrets.value import Secret
from runner.testing import FakeRuntime, FakeStepRun, MemoryStepCache
from tests.helpers import (
    TEST_IMAGE,
    make_repo,
    run_runner,
    runner_env,
    scan_tree,
    set_secret,
)
from tests.test_job import IMAGE, IMAGE_ID, TOKEN, Recorder, _job, _services, step

RUN_LABEL = "org.runner.run-id"


def _run(
    tmp_path: Path, steps: str, names: list[str], runtime: FakeRuntime, **extra: Any
) -> tuple[list[Any], Recorder]:
    job, store = _job(tmp_path, steps, names)
    rec = Recorder(_redactor())
    outcomes = run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"),
        _services(tmp_path, runtime, rec, **extra),
    )
    return outcomes, rec


def _redactor() -> Any:
    from runner.redact.active import ActiveRedactor

    return ActiveRedactor()


# The step loop, on the fake -----------------------------------------------------------------


def test_each_step_runs_in_a_container_made_ahead_with_its_env_rendered_at_its_turn(
    tmp_path: Path,
) -> None:
    seen: dict[str, tuple[bool, str | None, str | None]] = {}

    def handler(run: FakeStepRun) -> int:
        if run.step.script.startswith("first"):
            run.stdout("made-by-step-1")
            # Step 2's container is made while step 1 runs, its outputs still unknown.
            deadline = time.monotonic() + 10
            while len(runtime.prepared) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(runtime.prepared) == 2
        seen[run.step.script] = (run.prepared, run.getenv("FROM_ONE"), run.getenv("TOKEN"))
        return 0

    runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
    steps = (
        step("first", "outputs:", "  one:", "    value: ${{ step.stdout }}")
        + step("second", "env:", "  - FROM_ONE: ${{ outputs.one }}", "  - TOKEN")
        + step("third")
    )
    outcomes, _ = _run(tmp_path, steps, ["github.com/acme/app"], runtime)
    assert [o.status for o in outcomes] == ["unchanged"], outcomes[0].result.error
    # Every step ran in a container made before its turn; step 2's env was rendered
    # after step 1 printed what it holds, and reached the container with the secret.
    assert seen == {
        "first": (True, None, None),
        "second": (True, "made-by-step-1", TOKEN),
        "third": (True, None, None),
    }
    assert len(runtime.prepared) == 3 and runtime.discarded == 0
    # Made without its payload: no value, no rendered env, no script.
    assert all(not c.env and not c.secret_env and not c.script for c in runtime.prepared)
    assert runtime.containers == 0


def test_the_step_made_ahead_of_a_failing_step_is_discarded(tmp_path: Path) -> None:
    ran: list[str] = []

    def handler(run: FakeStepRun) -> int:
        ran.append(run.step.script)
        return 1 if run.step.script == "fail" else 0

    runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
    steps = step("ok") + step("fail") + step("never")
    outcomes, rec = _run(tmp_path, steps, ["github.com/acme/app"], runtime)
    assert [o.status for o in outcomes] == ["failed"]
    assert ran == ["ok", "fail"]
    # Step 3 was made while step 2 ran, and removed unused.
    assert (len(runtime.prepared), runtime.discarded, runtime.containers) == (3, 1, 0)
    assert [e["step"] for e in rec.events if e["event"] == "step.started"] == [1, 2]


def test_a_step_whose_if_turns_out_false_has_its_container_discarded(tmp_path: Path) -> None:
    runtime = FakeRuntime(handler=lambda run: 0, images={IMAGE: IMAGE_ID})
    steps = (
        step("one")
        + step("two", 'if: ${{ eq previous_step.stdout "never" }}')
        + step("three", "if: false")
        + step("four")
    )
    outcomes, rec = _run(tmp_path, steps, ["github.com/acme/app"], runtime)
    assert [o.status for o in outcomes] == ["unchanged"], outcomes[0].result.error
    assert [e["step"] for e in rec.events if e["event"] == "step.skipped"] == [2, 3]
    # Step 2 was made ahead and discarded; step 3 (`if: false`) never made.
    assert [c.script for c in runtime.steps] == ["one", "four"]
    assert (len(runtime.prepared), runtime.discarded, runtime.containers) == (3, 1, 0)


def test_the_next_workspace_gets_ready_while_the_turns_are_taken_and_reports_in_its_turn(
    tmp_path: Path,
) -> None:
    names = ["github.com/acme/a", "github.com/acme/b", "github.com/acme/c"]
    ready_ahead: list[int] = []

    def handler(run: FakeStepRun) -> int:
        # While a's step runs, b's first container is made (c's is not: one ahead per turn).
        if run.host_path("README.md").read_text().strip() == names[0]:
            deadline = time.monotonic() + 10
            while len(runtime.prepared) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            ready_ahead.append(len(runtime.prepared))
        return 0

    runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
    outcomes, rec = _run(tmp_path, step("work"), names, runtime, parallelism=1)
    assert [o.status for o in outcomes] == ["unchanged"] * 3
    assert ready_ahead == [2]
    # What is shown as running is what has a turn: one workspace at a time at -j 1.
    story = [
        (e["event"], e["repository"])
        for e in rec.events
        if e["event"] in ("workspace.started", "workspace.finished")
    ]
    assert story == [
        (event, n) for n in names for event in ("workspace.started", "workspace.finished")
    ]


def test_fail_fast_stops_a_workspace_waiting_for_its_turn_and_discards_its_container(
    tmp_path: Path,
) -> None:
    names = ["github.com/acme/a", "github.com/acme/b"]
    go = threading.Event()

    def handler(run: FakeStepRun) -> int:
        # a fails once b has its container made and waits for its turn.
        deadline = time.monotonic() + 10
        while len(runtime.prepared) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        go.set()
        return 1

    runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
    outcomes, rec = _run(tmp_path, step("work"), names, runtime, parallelism=1, fail_fast=True)
    assert go.is_set()
    assert [o.status for o in outcomes] == ["failed", "canceled"]
    assert outcomes[1].result.error == "not started: the run was stopped"
    assert (len(runtime.prepared), runtime.discarded, runtime.containers) == (2, 1, 0)
    # b never had a turn: nothing of it is shown but its end.
    assert [e["event"] for e in rec.events if e.get("repository") == names[1]] == [
        "workspace.finished"
    ]


CALLER = threading.main_thread()


class _ThreadRecorder(Recorder):
    """A Recorder that also notes which events came from the thread that ran the job."""

    def event(self, name: str, **fields: Any) -> None:
        super().event(name, **fields, _in_caller=threading.current_thread() is CALLER)


def _cached_run(
    root: Path, names: list[str], runtime: FakeRuntime, cache: MemoryStepCache, **extra: Any
) -> tuple[list[Any], _ThreadRecorder]:
    job, store = _job(root, step("work"), names)
    rec = _ThreadRecorder(_redactor())
    outcomes = run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"),
        _services(root, runtime, rec, cache=cache, **extra),
    )
    return outcomes, rec


def _writes_its_name(run: FakeStepRun) -> int:
    name = run.host_path("README.md").read_text().strip()
    run.host_path("changed.txt").write_text(f"{name}\n")
    return 0


def test_a_fully_cached_rerun_finishes_each_workspace_where_the_job_runs_in_order(
    tmp_path: Path,
) -> None:
    names = ["github.com/acme/a", "github.com/acme/b", "github.com/acme/c"]
    cache = MemoryStepCache()
    runtime = FakeRuntime(handler=_writes_its_name, images={IMAGE: IMAGE_ID})
    first, _ = _cached_run(tmp_path / "first", names, runtime, cache, parallelism=2)
    assert [o.status for o in first] == ["changed"] * 3
    ran = len(runtime.steps)

    again, rec = _cached_run(tmp_path / "again", names, runtime, cache, parallelism=2)
    assert len(runtime.steps) == ran and not runtime.prepared[ran:]  # no container at all
    assert [(o.status, o.result.diff) for o in again] == [(o.status, o.result.diff) for o in first]
    assert [o.kept for o in again] == [o.kept for o in first]
    # Each workspace whole, one after the other, all from the job's own thread.
    story = [(e["event"], e["repository"]) for e in rec.events if e["event"] != "run.started"]
    assert story == [
        (event, n)
        for n in names
        for event in ("workspace.started", "step.cached", "workspace.finished")
    ]
    assert all(e["_in_caller"] for e in rec.events)


def test_a_cached_workspace_among_others_keeps_its_place_and_its_result(tmp_path: Path) -> None:
    a, b, c = names = ["github.com/acme/a", "github.com/acme/b", "github.com/acme/c"]
    cache = MemoryStepCache()
    runtime = FakeRuntime(handler=_writes_its_name, images={IMAGE: IMAGE_ID})
    _cached_run(tmp_path / "first", [a, c], runtime, cache)

    outcomes, rec = _cached_run(tmp_path / "again", names, runtime, cache, parallelism=1)
    assert [(o.status, o.result.steps_cached) for o in outcomes] == [
        ("changed", 1),
        ("changed", 0),
        ("changed", 1),
    ]
    assert [o.result.diff.count(b"+github.com/acme/") for o in outcomes] == [1, 1, 1]
    assert [
        (e["event"], e["repository"])
        for e in rec.events
        if e["event"] not in ("step.output", "workspace.phase")
    ] == [
        (event, n)
        for n, middle in (
            (a, ("step.cached",)),
            (b, ("step.started", "step.finished")),
            (c, ("step.cached",)),
        )
        for event in ("workspace.started", *middle, "workspace.finished")
    ]
    # a was done in the job's thread (nothing ran beside it); b ran in a thread of its own.
    by = {(e["event"], e["repository"]): e["_in_caller"] for e in rec.events}
    assert by[("workspace.finished", a)] and not by[("step.started", b)]


# The real engine --------------------------------------------------------------------------


@pytest.mark.docker
def test_a_waiting_container_holds_nothing_of_its_payload(tmp_path: Path) -> None:
    import docker

    from runner.execute.docker_runtime import DockerRuntime

    client = docker.from_env()
    runtime = DockerRuntime(client.api, scratch_dir=tmp_path)
    label = {"runner.test-pipeline": uuid.uuid4().hex}
    image = str(client.images.get(TEST_IMAGE).id)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    token, late = "pipe-secret-" + uuid.uuid4().hex, "late-" + uuid.uuid4().hex
    base: dict[str, Any] = {"image": image, "workdir": "/work", "labels": label}
    mounts = [Mount(source=workspace, target="/work", read_only=False)]
    prepared = runtime.prepare(StepContainer(script="", mounts=mounts, **base))
    try:
        (found,) = client.api.containers(
            filters={"label": f"runner.test-pipeline={label['runner.test-pipeline']}"}
        )
        info = client.api.inspect_container(found["Id"])
        assert info["State"]["Running"]  # started, its wrapper waiting on stdin
        shown = json.dumps(info)
        assert token not in shown and late not in shown and "LATE" not in shown
        out: list[bytes] = []
        result = prepared.run(
            StepContainer(
                script='printf "%s %s" "$LATE" "$TOKEN" > /work/seen.txt',
                mounts=mounts,
                env={"LATE": late},
                secret_env={"TOKEN": Secret(token)},
                **base,
            ),
            on_output=lambda stream, data: out.append(data),
            cancel=threading.Event(),
        )
        assert result.succeeded, out
        assert (workspace / "seen.txt").read_text() == f"{late} {token}"
    finally:
        prepared.discard()
        runtime.settle()
    assert (
        client.api.containers(
            all=True, filters={"label": f"runner.test-pipeline={label['runner.test-pipeline']}"}
        )
        == []
    )
    # The value is where the step put it, and nowhere else runner wrote.
    assert scan_tree([tmp_path], [token]) == [f"{workspace / 'seen.txt'}: {token[:4]}…"]


@pytest.mark.docker
def test_a_failed_and_a_fail_fast_run_leave_no_container_and_no_network(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "app\n", "go.mod": "module app\n"})
    make_repo(repos, "github.com/acme/lib", {"README.md": "lib\n"})
    make_repo(repos, "github.com/acme/web", {"README.md": "web\n"})
    token = "pipeline-token-" + uuid.uuid4().hex
    set_secret(env, "TOKEN", token, "--global")
    spec = tmp_path / "batch.yaml"
    spec.write_text(
        "name: pipeline\non:\n"
        + "".join(f"  - repository: github.com/acme/{n}\n" for n in ("app", "lib", "web"))
        + "steps:\n"
        f"  - run: echo one > one.txt\n    container: {TEST_IMAGE}\n    env: [TOKEN]\n"
        f"  - run: if [ -f go.mod ]; then exit 1; fi; sleep 60\n    container: {TEST_IMAGE}\n"
        f"  - run: echo three > three.txt\n    container: {TEST_IMAGE}\n    env: [TOKEN]\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: pipeline\n"
        "  commit:\n    message: m\n"
    )
    since = time.time()
    proc = run_runner(
        [
            "run",
            str(spec),
            "--repos-root",
            str(repos),
            "--out",
            str(tmp_path / "out"),
            "--json",
            "-j",
            "2",
            "--fail-fast",
        ],
        env,
    )
    until = time.time() + 1
    assert proc.returncode == 3, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    run_id = events[0]["run_id"]
    finished = {e["repository"]: e for e in events if e["event"] == "workspace.finished"}
    assert {r: e["status"] for r, e in finished.items()} == {
        "github.com/acme/app": "failed",
        "github.com/acme/lib": "canceled",
        "github.com/acme/web": "canceled",
    }
    started = [e for e in events if e["event"] == "step.started"]
    assert not any(e["step"] == 3 for e in started)
    # Containers were made ahead (app's step 3 at least, while its step 2 ran) that
    # never ran a step; every one is gone when runner exits, and so are the networks.
    created = container_events(run_id, since, until, "create")
    assert len(created) > len(started)
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == []
    networks = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label=org.runner.network={run_id}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert networks == []
    assert scan_tree([tmp_path / "out", tmp_path / "home", tmp_path / "tmp"], [token]) == []
    assert token not in proc.stdout + proc.stderr
