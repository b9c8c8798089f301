"""The developer's loop on the real engine (issue 23).

One spec with an `on:` query, `workspaces:` and an `if:` serves the first
test: `runner workspaces` agrees with what `runner run` then does, each
workspace gets a log holding no value, `--keep-workspace` keeps one failed
tree and refuses the other (it holds a secret), and `--only-failed`, once the
cause is fixed, re-runs exactly the failed workspaces and leaves the others'
results as they were. The second test asks `runner cache why` after a
secret was set, the step's image rebuilt and a mounted file edited.
The pure parts (differences, tombstones, lint, `if:` rule) are unit-tested in
tests/test_cache_why.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    TEST_IMAGE,
    make_repo,
    run_runner,
    runner_env,
    scan_tree,
    set_secret,
)

pytestmark = pytest.mark.docker

KEY_V1 = "devloop-api-key-0123456789"
KEY_V2 = "devloop-api-key-rotated-9876"

SPEC = f"""
name: devloop
on:
  - repositoriesMatchingQuery: file:README.md
  - repository: github.com/acme/mono
workspaces:
  - rootAtLocationOf: package.json
    in: github.com/acme/mono
steps:
  - run: echo step1 >> touched.txt; echo "key is $API_KEY"
    container: {TEST_IMAGE}
    env: [API_KEY]
  - run: |
      if [ "$(cat /mnt/flag)" != ok ]; then
        if [ -f go.mod ]; then echo "go is broken" >&2; exit 1; fi
        if [ "${{{{ steps.path }}}}" = svc/b ]; then echo "$API_KEY" > secret.txt; exit 2; fi
      fi
      echo fine > fixed.txt
    container: {TEST_IMAGE}
    env: [API_KEY]
    mount:
      - path: ./flag
        mountpoint: /mnt/flag
  - run: echo lib-only > lib.txt
    container: {TEST_IMAGE}
    if: ${{{{ eq repository.name "github.com/acme/lib" }}}}
changesetTemplate:
  title: Devloop
  body: Iterating
  branch: dev/loop
  commit:
    message: Devloop
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    set_secret(env, "API_KEY", KEY_V1, "--user", "alice")
    return env


def _repos(root: Path) -> Path:
    make_repo(root, "github.com/acme/app", {"README.md": "# app\n", "go.mod": "module app\n"})
    make_repo(root, "github.com/acme/lib", {"README.md": "# lib\n"})
    make_repo(
        root,
        "github.com/acme/mono",
        {"svc/a/package.json": "{}\n", "svc/b/package.json": "{}\n", ".gitignore": "secret.txt\n"},
    )
    return root


def _workspaces(args: list[str], env: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    proc = run_runner(["workspaces", *args, "--json"], env)
    assert proc.returncode == 0, proc.stderr
    return {(w["repository"], w["path"]): w for w in json.loads(proc.stdout)}


def _run(args: list[str], env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    proc = run_runner(["run", *args, "--json"], env)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, events, proc.stdout + proc.stderr


def _fates(preview: dict[str, Any], fate: str) -> list[int]:
    return [s["step"] for s in preview["steps"] if s["status"] == fate]


def _events_of(events: list[dict[str, Any]], name: str, where: tuple[str, str]) -> list[int]:
    return [
        e["step"]
        for e in events
        if e["event"] == name and (e.get("repository"), e.get("path")) == where
    ]


@pytest.mark.slow
def test_preview_logs_keep_and_only_failed_follow_what_runs(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repos = _repos(tmp_path / "repos")
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    flag = spec.parent / "flag"
    flag.write_text("broken\n")
    out = tmp_path / "out"
    common = [str(spec), "--repos-root", str(repos)]
    app, lib, svc_a, svc_b = (
        ("github.com/acme/app", ""),
        ("github.com/acme/lib", ""),
        ("github.com/acme/mono", "svc/a"),
        ("github.com/acme/mono", "svc/b"),
    )

    before = _workspaces(common, env)
    assert set(before) == {app, lib, svc_a, svc_b}
    assert before[app]["files"] == ["README.md"] and before[svc_a]["files"] == []
    assert _fates(before[lib], "runs") == [1, 2, 3]
    assert _fates(before[svc_a], "skipped") == [3]

    code, events, text = _run([*common, "--out", str(out), "--keep-workspace"], env)
    assert code == 3, text
    summary = json.loads((out / "summary.json").read_text())
    entries = {(w["repository"], w["path"]): w for w in summary["workspaces"]}
    assert set(entries) == set(before)
    # What ran and what was skipped is what the preview said.
    for where in (lib, svc_a):
        assert entries[where]["status"] == "changed"
        assert _events_of(events, "step.started", where) == _fates(before[where], "runs")
        assert _events_of(events, "step.skipped", where) == _fates(before[where], "skipped")
        assert entries[where]["steps_run"] == before[where]["steps_to_run"]
    for where in (app, svc_b):
        assert entries[where]["status"] == "failed"
        assert _events_of(events, "step.started", where) == [1, 2]

    # A log per workspace, named in the summary; the failed ones listed at the end.
    for where, entry in entries.items():
        assert entry["log"] == f"{where[0]}/{where[1] or '_root'}/main.log"
        assert (out / entry["log"]).is_file()
    lib_log = (out / entries[lib]["log"]).read_text()
    assert "step 1 stdout | key is [REDACTED:API_KEY]" in lib_log
    assert "workspace.finished status=changed" in lib_log
    assert "go is broken" in (out / entries[app]["log"]).read_text()
    [finished] = [e for e in events if e["event"] == "run.finished"]
    assert finished["failed_logs"] == [entries[app]["log"], entries[svc_b]["log"]]

    # The failed app's tree is kept, without runner's git data; svc/b's holds the key.
    kept = out / "github.com/acme/app/_root/main.workspace"
    assert entries[app]["workspace"] == "github.com/acme/app/_root/main.workspace"
    assert sorted(p.name for p in kept.iterdir()) == ["README.md", "go.mod", "touched.txt"]
    assert entries[svc_b]["workspace"] is None
    assert entries[svc_b]["workspace_not_kept"] == "not kept: holds secret API_KEY"
    assert not (out / "github.com/acme/mono/svc/b/main.workspace").exists()

    # Fixed: the preview sees the cached prefixes, and --only-failed runs just those two.
    flag.write_text("ok\n")
    fixed = _workspaces(common, env)
    assert _fates(fixed[lib], "cached") == [1]  # the flag is mounted into step 2: its key moved
    assert _fates(fixed[app], "cached") == [1] and _fates(fixed[app], "runs") == [2]
    code, events, text = _run([*common, "--out", str(out), "--only-failed"], env)
    assert code == 0, text
    started = {(e["repository"], e["path"]) for e in events if e["event"] == "workspace.started"}
    assert started == {app, svc_b}
    again = json.loads((out / "summary.json").read_text())
    assert again["counts"] == {"changed": 4, "unchanged": 0, "failed": 0, "canceled": 0}
    rerun = {(w["repository"], w["path"]): w for w in again["workspaces"]}
    assert rerun[lib] == entries[lib] and rerun[svc_a] == entries[svc_a]
    for where in (app, svc_b):
        assert rerun[where]["steps_cached"] == fixed[where]["steps_cached"] == 1
        assert rerun[where]["steps_run"] == fixed[where]["steps_to_run"] == 1
    assert not kept.exists()  # the earlier attempt's tree went with its entry
    for rel in again["files"]:
        assert (out / rel).is_file(), rel
    assert (out / "github.com/acme/lib/_root/dev-loop.patch").is_file()

    home, tmp = Path(env["RUNNER_HOME"]), Path(env["TMPDIR"])
    assert scan_tree([out, home, tmp], [KEY_V1]) == []


WHY_SPEC = """
name: why
on:
  - repository: github.com/acme/app
steps:
  - run: cat /mnt/data > data.txt; test -n "$API_KEY"
    container: runner-test/devloop-why:latest
    env: [API_KEY]
    mount:
      - path: ./data.txt
        mountpoint: /mnt/data
changesetTemplate:
  title: Why
  body: Why
  branch: why
  commit:
    message: Why
"""


def _build(label: str) -> str:
    dockerfile = f"FROM {TEST_IMAGE}\nLABEL org.runner.test.devloop={label}\n"
    proc = subprocess.run(
        ["docker", "build", "-q", "-t", "runner-test/devloop-why:latest", "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def test_cache_why_names_the_secret_version_the_image_and_the_mounted_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    spec.write_text(WHY_SPEC)
    (spec.parent / "data.txt").write_text("one\n")
    common = [str(spec), "--repos-root", str(repos)]
    images = [_build("one")]
    try:
        code, _, text = _run([*common, "--out", str(tmp_path / "out")], env)
        assert code == 0, text
        hit = run_runner(["cache", "why", *common], env)
        assert hit.returncode == 0, hit.stderr
        assert "step 1: hit" in hit.stdout

        set_secret(env, "API_KEY", KEY_V2, "--user", "alice")
        images.append(_build("two"))
        (spec.parent / "data.txt").write_text("two\n")
        proc = run_runner(["cache", "why", *common, "--json"], env)
        assert proc.returncode == 0, proc.stderr
        [workspace] = json.loads(proc.stdout)
        [step] = workspace["steps"]
        assert (step["status"], step["closest"], step["invalidated_by"]) == (
            "miss",
            "tombstone",
            "secret set",
        )
        found = {d["input"]: d for d in step["differences"]}
        assert set(found) == {"secret", "image", "mount"}
        assert (found["secret"]["name"], found["secret"]["was"], found["secret"]["now"]) == (
            "API_KEY",
            "v1",
            "v2",
        )
        assert found["image"]["name"] == "runner-test/devloop-why:latest"
        assert found["image"]["was"] == images[0][:19] and found["image"]["now"] == images[1][:19]
        assert found["mount"]["name"] == "/mnt/data"

        text_proc = run_runner(["cache", "why", *common], env)
        assert "secret API_KEY v1 → v2 (invalidated by secret set)" in text_proc.stdout
        assert scan_tree([Path(env["RUNNER_HOME"])], [KEY_V1, KEY_V2]) == []
        for output in (proc.stdout, text_proc.stdout, text_proc.stderr):
            assert KEY_V1 not in output and KEY_V2 not in output
    finally:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)
