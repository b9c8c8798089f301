"""The workspace job (``runner.execute.job.run_job``) on the fake runtime.

`runner run` and `runner executor` are both thin front doors onto this
function; these tests pin what both therefore get: each secret revealed once
at its first step, every value registered before anything prints,
`workspace.finished` as each workspace ends, changesets checked for values
before the sink sees them, and one outcome per workspace in order.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from runner.env import HostEnv, SecretRef, plan_env
from runner.execute.job import (
    CheckedChangeset,
    Job,
    JobServices,
    WorkspaceOutcome,
    register_values,
    reveal_secrets,
    run_job,
)
from runner.execute.steps import RunLimits, WorkspaceResult
from runner.plan import Workspace
from runner.redact.active import ActiveRedactor
from runner.secrets.value import Secret
from runner.spec import load_spec_text
from runner.testing import FakeRuntime, FakeSecretStore, FakeStepRun
from tests.helpers import make_repo

IMAGE = "runner-test/busybox:latest"
IMAGE_ID = "sha256:" + "d" * 64
NAMESPACE = "user:alice"
TOKEN = "job-unit-token-value-5678"
OTHER = "job-unit-other-value-9012"


class Recorder:
    """A Reporter and a ResultSink that remember what they were given, in order."""

    def __init__(self, redactor: ActiveRedactor) -> None:
        self.redactor = redactor
        self.events: list[dict[str, Any]] = []
        self.kept: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def event(self, name: str, **fields: Any) -> None:
        with self.lock:
            # What a reporter would print, redacted with what is registered *now*.
            self.events.append(
                {"event": name, **fields, "_shown": self.redactor.redact(str(fields))}
            )

    def close(self) -> None:
        pass

    def keep(self, result: WorkspaceResult, changesets: Sequence[CheckedChangeset]) -> list[str]:
        with self.lock:
            self.kept.append((result.workspace.repository, [cs.branch for cs in changesets]))
        return [f"{result.workspace.repository}/{cs.branch}" for cs in changesets]


def _workspace(root: Path, name: str) -> Workspace:
    repo = make_repo(root, name, {"README.md": f"{name}\n"})
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    return Workspace(
        repository=name,
        repo_path=repo,
        branch="main",
        commit=commit,
        path="",
        only_fetch_workspace=False,
        search_result_paths=(),
    )


def _repository(run: FakeStepRun) -> str:
    """Which workspace a step runs in: each repository's README holds its name."""
    return run.host_path("README.md").read_text().strip()


def _job(
    tmp_path: Path, steps: str, names: Sequence[str], *, title: str = "t"
) -> tuple[Job, FakeSecretStore]:
    spec = load_spec_text(
        "name: job-unit\non:\n"
        + "".join(f"  - repository: {n}\n" for n in names)
        + f"steps:\n{steps}"
        + f"changesetTemplate:\n  title: {title}\n  body: b\n  branch: job-unit\n"
        "  commit:\n    message: m\n",
        "spec.yaml",
    )
    store = FakeSecretStore()
    store.set("TOKEN", NAMESPACE, Secret(TOKEN), actor="alice")
    store.set("OTHER", NAMESPACE, Secret(OTHER), actor="alice")
    job = Job(
        id="job-unit",
        spec=spec,
        spec_dir=tmp_path,
        namespace=NAMESPACE,
        env_plan=plan_env(spec, NAMESPACE, store),
        workspaces=[_workspace(tmp_path / "repos", n) for n in names],
        images={IMAGE: IMAGE_ID},
    )
    return job, store


def _services(tmp_path: Path, runtime: FakeRuntime, rec: Recorder, **extra: Any) -> JobServices:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return JobServices(
        runtime=runtime,
        registry=rec.redactor,
        redactor=rec.redactor,
        reporter=rec,
        sink=rec,
        limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
        cancel=threading.Event(),
        temp_root=work,
        **extra,
    )


def step(run: str, *extra: str) -> str:
    return f"  - run: {run}\n    container: {IMAGE}\n" + "".join(f"    {e}\n" for e in extra)


def test_each_secret_is_revealed_once_at_its_first_step_and_redacted_from_the_first_line(
    tmp_path: Path,
) -> None:
    job, store = _job(
        tmp_path,
        step("print", "env: [OTHER]") + step("print", "env: [TOKEN, OTHER]"),
        ["github.com/acme/app"],
    )
    revealed: list[tuple[str, int]] = []

    def reveal(ref: SecretRef, first_step: int) -> Secret:
        revealed.append((ref.name, first_step))
        return store.reveal(ref.id, version=ref.version, actor="alice", step=first_step)

    def print_env(run: FakeStepRun) -> int:
        run.stdout(f"{run.getenv('TOKEN')} {run.getenv('OTHER')}\n")
        return 0

    rec = Recorder(ActiveRedactor())
    outcomes = run_job(
        job,
        reveal,
        _services(tmp_path, FakeRuntime(handler=print_env, images={IMAGE: IMAGE_ID}), rec),
    )
    assert sorted(revealed) == [("OTHER", 1), ("TOKEN", 2)]
    assert [o.status for o in outcomes] == ["unchanged"]
    lines = [e["line"] for e in rec.events if e["event"] == "step.output"]
    assert lines and all(TOKEN not in line and OTHER not in line for line in lines)
    assert "[REDACTED:OTHER]" in lines[0]
    # Nothing the job reported, at the moment it reported it, could show a value.
    assert not [e for e in rec.events if TOKEN in e["_shown"] or OTHER in e["_shown"]]


def test_on_open_runs_after_registration_and_before_the_first_workspace(tmp_path: Path) -> None:
    job, store = _job(tmp_path, step("noop", "env: [TOKEN]"), ["github.com/acme/app"])
    rec = Recorder(ActiveRedactor())
    seen: list[str] = []

    def on_open() -> None:
        seen.append(rec.redactor.redact(f"value {TOKEN}"))
        assert not rec.events

    run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"),
        _services(tmp_path, FakeRuntime(handler=lambda run: 0, images={IMAGE: IMAGE_ID}), rec),
        on_open=on_open,
    )
    assert seen == ["value [REDACTED:TOKEN]"]


def test_a_changeset_holding_a_value_fails_its_workspace_and_reaches_no_sink(
    tmp_path: Path,
) -> None:
    # Each half of the value alone is no form of it, so the step's output passes the
    # redactor; the changeset's title puts the halves back together.
    half = len(TOKEN) // 2
    job, store = _job(
        tmp_path,
        step(
            "write",
            "env: [TOKEN]",
            "outputs:",
            "  a:",
            '    value: ${{ index (split step.stdout ",") 0 }}',
            "  b:",
            '    value: ${{ index (split step.stdout ",") 1 }}',
        ),
        ["github.com/acme/app", "github.com/acme/lib"],
        title="'${{ outputs.a }}${{ outputs.b }}'",
    )

    def write(run: FakeStepRun) -> int:
        run.host_path("new.txt").write_text("plain change\n")
        token = run.getenv("TOKEN") or ""
        if _repository(run) == "github.com/acme/app":
            run.stdout(f"{token[:half]},{token[half:]}")
        else:
            run.stdout("harmless,title")
        return 0

    rec = Recorder(ActiveRedactor())
    outcomes = run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"),
        _services(tmp_path, FakeRuntime(handler=write, images={IMAGE: IMAGE_ID}), rec),
    )
    by_repo = {o.workspace.repository: o for o in outcomes}
    leaked = by_repo["github.com/acme/app"]
    assert leaked.status == "failed", leaked.result.error
    assert "would hold a secret value" in (leaked.result.error or "")
    assert leaked.changesets == [] and leaked.kept == []
    assert by_repo["github.com/acme/lib"].status == "changed"
    assert rec.kept == [("github.com/acme/lib", ["job-unit"])]
    finished = {e["repository"]: e for e in rec.events if e["event"] == "workspace.finished"}
    assert finished["github.com/acme/app"]["status"] == "failed"
    assert finished["github.com/acme/lib"]["changeset"] == "github.com/acme/lib/job-unit"


def test_workspace_finished_comes_as_each_workspace_ends(tmp_path: Path) -> None:
    names = ["github.com/acme/a", "github.com/acme/b", "github.com/acme/c"]
    job, store = _job(tmp_path, step("work"), names)
    release_a = threading.Event()

    def work(run: FakeStepRun) -> int:
        # Workspace a waits until b and c have finished: their events must not wait for a.
        if _repository(run) == "github.com/acme/a" and not release_a.wait(10):
            return 9
        return 0

    class Releasing(Recorder):
        def event(self, name: str, **fields: Any) -> None:
            super().event(name, **fields)
            done = [e for e in self.events if e["event"] == "workspace.finished"]
            if len(done) == 2:
                release_a.set()

    rec = Releasing(ActiveRedactor())
    outcomes = run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"),
        _services(
            tmp_path, FakeRuntime(handler=work, images={IMAGE: IMAGE_ID}), rec, parallelism=3
        ),
    )
    assert [o.workspace.repository for o in outcomes] == names  # outcomes keep the list's order
    assert [o.status for o in outcomes] == ["unchanged"] * 3
    finished = [e["repository"] for e in rec.events if e["event"] == "workspace.finished"]
    assert finished[-1] == "github.com/acme/a"


def test_fail_fast_cancels_the_rest_and_reports_every_workspace(tmp_path: Path) -> None:
    names = ["github.com/acme/a", "github.com/acme/b", "github.com/acme/c"]
    job, store = _job(tmp_path, step("work"), names)
    rec = Recorder(ActiveRedactor())
    outcomes = run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"),
        _services(
            tmp_path,
            FakeRuntime(handler=lambda run: 1, images={IMAGE: IMAGE_ID}),
            rec,
            parallelism=1,
            fail_fast=True,
        ),
    )
    assert [o.status for o in outcomes] == ["failed", "canceled", "canceled"]
    finished = [e for e in rec.events if e["event"] == "workspace.finished"]
    assert [e["repository"] for e in finished] == names
    assert finished[1]["error"] == "not started: the run was stopped"


def test_register_values_is_the_one_door_for_secrets_and_host_values() -> None:
    store = FakeSecretStore()
    spec = load_spec_text(
        "name: reg\non:\n  - repository: github.com/acme/app\n"
        f"steps:\n{step('x', 'env: [TOKEN, HOSTVAR]')}"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: b\n  commit:\n    message: m\n",
        "spec.yaml",
    )
    meta, _ = store.set("TOKEN", NAMESPACE, Secret(TOKEN), actor="alice")
    host = HostEnv(patterns=("HOSTVAR",), values={"HOSTVAR": "host-value-for-the-test"})
    plan = plan_env(spec, NAMESPACE, store, host)
    registry = ActiveRedactor()
    secrets = reveal_secrets(plan, lambda ref, n: Secret(TOKEN))
    assert list(secrets) == [meta.id]
    register_values(registry, plan=plan, secrets=secrets, host=host)
    shown = registry.redact(f"{TOKEN} host-value-for-the-test")
    assert shown == "[REDACTED:TOKEN] [REDACTED:HOSTVAR]"


@pytest.mark.parametrize("front_door", ["runner.execute.run", "runner.queue.executor"])
def test_both_front_doors_run_the_same_job_function(front_door: str) -> None:
    import importlib

    module = importlib.import_module(front_door)
    assert module.run_job is run_job
    assert isinstance(WorkspaceOutcome, type)
