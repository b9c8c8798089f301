"""Per-workspace logs (issue 23) when workspaces share a repository and path.

An `on:` entry with several branches gives workspaces that differ only in
branch: each keeps its own `OUT/<repository>/_root/<branch>.log`, named as
its changeset files are, and every event names its branch. Run on the fake
runtime through `runner run`'s own front door (`runner.execute.run.execute`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from runner.env import HostEnv, plan_env
from runner.execute.run import RunPlan, execute
from runner.execute.steps import RunLimits
from runner.plan import Workspace, discover, plan_workspaces
from runner.redact.active import ActiveRedactor
from runner.report import RecordingReporter
from runner.secrets.value import Secret
from runner.spec import load_spec_text
from runner.spec.models import BatchSpec
from runner.testing import FakeRuntime, FakeSecretStore, FakeStepRun
from tests.helpers import git, make_repo

IMAGE = "runner-test/busybox:latest"
IMAGE_ID = "sha256:" + "e" * 64
REPO = "github.com/acme/app"
BRANCHES = ("main", "release/1.x")
TOKEN = "branch-log-token-0123456789"

SPEC = f"""
name: branch-logs
on:
  - repository: {REPO}
    branches: [main, release/1.x]
steps:
  - run: cat README.md
    container: {IMAGE}
    env: [TOKEN]
changesetTemplate:
  title: t
  body: b
  branch: logs
  commit:
    message: m
"""


def _workspaces(spec: BatchSpec, root: Path) -> list[Workspace]:
    """The spec's workspaces as `runner run` plans them: one per branch of the repository."""
    repo = make_repo(root, REPO, {"README.md": "on main\n"})
    git(repo, "checkout", "-q", "-b", "release/1.x")
    (repo / "README.md").write_text("on release/1.x\n")
    git(repo, "commit", "-q", "-am", "release")
    git(repo, "checkout", "-q", "main")
    planned = plan_workspaces(spec, discover(root))
    assert [(w.repository, w.path, w.branch) for w in planned] == [(REPO, "", b) for b in BRANCHES]
    return planned


def _print_readme(run: FakeStepRun) -> int:
    run.stdout(run.host_path("README.md").read_text())
    run.stdout(f"token {run.getenv('TOKEN')}\n")
    return 0


def test_workspaces_differing_only_in_branch_keep_their_own_logs(tmp_path: Path) -> None:
    spec = load_spec_text(SPEC, "spec.yaml")
    store = FakeSecretStore()
    store.set("TOKEN", "user:alice", Secret(TOKEN), actor="alice")
    redactor = ActiveRedactor()
    reporter = RecordingReporter()
    out = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    plan = RunPlan(
        run_id="branch-logs",
        spec=spec,
        spec_dir=tmp_path,
        namespace="user:alice",
        actor="alice",
        workspaces=_workspaces(spec, tmp_path / "repos"),
        env_plan=plan_env(spec, "user:alice", store),
        host=HostEnv(),
        images={IMAGE: IMAGE_ID},
    )
    outcome = execute(
        plan,
        reveal=lambda ref, step: store.reveal(
            ref.id, version=ref.version, actor="alice", step=step
        ),
        runtime=FakeRuntime(handler=_print_readme, images={IMAGE: IMAGE_ID}),
        redactor=redactor,
        registry=redactor,
        reporter=reporter,
        limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
        out_dir=out,
        parallelism=2,
        fail_fast=False,
        cancel=threading.Event(),
        host_mac_key=b"k" * 32,
        temp_root=work,
    )
    assert outcome.counts["unchanged"] == 2

    # Each workspace's log is its own, beside where its changesets would go.
    logs = {b: (out / REPO / "_root" / f"{b.replace('/', '-')}.log") for b in BRANCHES}
    for branch, log in logs.items():
        text = log.read_text()
        assert f"| on {branch}" in text
        other = next(b for b in BRANCHES if b != branch)
        assert f"on {other}" not in text
        assert text.count("workspace.started") == text.count("workspace.finished") == 1
        assert TOKEN not in text and "[REDACTED:TOKEN]" in text
    summary = json.loads((out / "summary.json").read_text())
    assert {e["branch"]: e["log"] for e in summary["workspaces"]} == {
        b: str(p.relative_to(out)) for b, p in logs.items()
    }

    # The events say which branch they belong to, so --json readers can tell too.
    of_workspaces: list[dict[str, Any]] = [e for e in reporter.events if e.get("repository")]
    assert of_workspaces and all(e.get("branch") in BRANCHES for e in of_workspaces)
    lines = {e["branch"]: e["line"] for e in of_workspaces if e["event"] == "step.output"}
    assert lines.keys() == set(BRANCHES)
