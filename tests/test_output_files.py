"""A run's --out against the previous run's: what is replaced, kept and removed.

Run on the fake runtime through `runner run`'s own front door
(`runner.execute.run.execute`), twice on the same --out: the previous run's
files stay until the new run has written its own, so a file written again
with the same bytes is left as it was (a cached re-run rewrites nothing),
and what the new run did not write again is removed at its end.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from runner.env import HostEnv, plan_env
from runner.execute.run import RunOutcome, RunPlan, execute
from runner.execute.steps import RunLimits
from runner.output import remove_stale
from runner.plan import discover, plan_workspaces
from runner.redact.active import ActiveRedactor
from runner.report import RecordingReporter
from runner.spec import load_spec_text
from runner.testing import FakeRuntime, FakeSecretStore, FakeStepRun
from tests.helpers import make_repo

IMAGE = "runner-test/busybox:latest"
IMAGE_ID = "sha256:" + "e" * 64
APP, LIB = "github.com/acme/app", "github.com/acme/lib"

SPEC = f"""
name: out-files
on:
  - repository: {APP}
  - repository: {LIB}
steps:
  - run: touch x.txt
    container: {IMAGE}
changesetTemplate:
  title: t
  body: b
  branch: out-files
  commit:
    message: m
"""


def _run(tmp_path: Path, out: Path, handler: Callable[[FakeStepRun], int]) -> RunOutcome:
    spec = load_spec_text(SPEC, "spec.yaml")
    root = tmp_path / "repos"
    if not root.exists():
        for name in (APP, LIB):
            make_repo(root, name, {"README.md": f"# {name}\n"})
    redactor = ActiveRedactor()
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    plan = RunPlan(
        run_id="out-files",
        spec=spec,
        spec_dir=tmp_path,
        namespace="user:alice",
        actor="alice",
        workspaces=plan_workspaces(spec, discover(root)),
        env_plan=plan_env(spec, "user:alice", FakeSecretStore()),
        host=HostEnv(),
        images={IMAGE: IMAGE_ID},
    )
    return execute(
        plan,
        reveal=lambda ref, step: FakeSecretStore().reveal(
            ref.id, version=ref.version, actor="alice"
        ),
        runtime=FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID}),
        redactor=redactor,
        registry=redactor,
        reporter=RecordingReporter(),
        limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
        out_dir=out,
        parallelism=1,
        fail_fast=False,
        cancel=threading.Event(),
        host_mac_key=b"k" * 32,
        temp_root=work,
    )


def _files(out: Path) -> list[str]:
    return list(json.loads((out / "summary.json").read_text())["files"])


def test_a_new_run_keeps_what_it_writes_again_and_removes_the_rest_at_its_end(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"

    def both_change(run: FakeStepRun) -> int:
        run.host_path("x.txt").write_text("same\n")
        return 0

    first = _run(tmp_path, out, both_change)
    assert first.counts["changed"] == 2
    app_json = out / APP / "_root" / "out-files.json"
    lib_json = out / LIB / "_root" / "out-files.json"
    lib_patch = lib_json.with_suffix(".patch")
    assert lib_json.is_file() and lib_patch.is_file()
    before = app_json.stat()
    previous = _files(out)
    mine = out / APP / "_root" / "notes.txt"  # the user's own file, in a folder of runner's
    mine.write_text("mine\n")

    seen_mid_run: list[list[str]] = []

    def only_app_changes(run: FakeStepRun) -> int:
        # While the run runs, its summary still names the previous run's files: a run
        # killed here leaves them to the next run, which clears them.
        seen_mid_run.append(_files(out))
        if APP in run.host_path("README.md").read_text():
            run.host_path("x.txt").write_text("same\n")
        return 0

    second = _run(tmp_path, out, only_app_changes)
    assert second.counts == {"changed": 1, "unchanged": 1, "failed": 0, "canceled": 0}
    assert seen_mid_run and all(set(previous) <= set(seen) for seen in seen_mid_run)
    # The same bytes: the file was not written again.
    after = app_json.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Not written again: removed once the run ended; its folder keeps the new log.
    assert not lib_json.exists() and not lib_patch.exists()
    assert [p.suffix for p in (out / LIB / "_root").iterdir()] == [".log"]
    assert mine.read_text() == "mine\n"
    files = _files(out)
    assert "summary.json" not in files
    assert all((out / f).is_file() for f in files)
    assert not any(f.startswith(LIB) and not f.endswith(".log") for f in files)


def test_stale_files_go_only_inside_out_and_their_empty_folders_with_them(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.json").write_text("not runner's\n")
    (out / "deep" / "er").mkdir(parents=True)
    (out / "deep" / "er" / "old.json").write_text("old\n")
    (out / "deep" / "kept.json").write_text("new\n")
    (out / "linked").symlink_to(elsewhere)

    remove_stale(
        out,
        ["deep/er/old.json", "deep/kept.json", "linked/a.json", "../elsewhere/a.json"],
        keep={"deep/kept.json"},
    )

    assert not (out / "deep" / "er").exists()  # emptied, so removed
    assert (out / "deep" / "kept.json").read_text() == "new\n"
    assert (elsewhere / "a.json").read_text() == "not runner's\n"
