"""`runner run` end to end against the real Docker engine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    RUNNER,
    TEST_IMAGE,
    container_leaks,
    git,
    leak_forms,
    make_repo,
    proc_cmdlines,
    run_runner,
    runner_env,
    scan_bytes,
    scan_tree,
    set_secret,
    wait_for_file,
)

pytestmark = pytest.mark.docker

TAIL = """
changesetTemplate:
  title: Add hello
  body: Made by ${{ batch_change.name }} in ${{ repository.name }}
  branch: runner/hello
  commit:
    message: Add hello
"""
GLOBAL_VALUE = "global-value-0123456789"
ALICE_VALUE = "alice-value-9876543210"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return runner_env(tmp_path / "home", TMPDIR=str(tmp))


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    root = tmp_path / "repos"
    make_repo(root, "github.com/acme/app", {"README.md": "# app\n", "go.mod": "module app\n"})
    make_repo(root, "github.com/acme/lib", {"README.md": "# lib\n"})
    return root


def write_spec(tmp_path: Path, body: str, tail: str = TAIL) -> Path:
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(body + tail)
    return spec


def run(
    tmp_path: Path, env: dict[str, str], spec: Path, repos: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], Path]:
    out = tmp_path / "out"
    proc = run_runner(
        ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json", *extra], env
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc, events, out


def test_a_spec_runs_and_writes_a_changeset_patch_and_summary(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        f"name: hello\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: echo hello > hello.txt\n    container: {TEST_IMAGE}\n",
    )
    proc, events, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    names = [e["event"] for e in events]
    assert names[0] == "run.started" and names[-1] == "run.finished"
    assert {"workspace.started", "step.started", "step.finished", "workspace.finished"} <= set(
        names
    )
    base = out / "github.com/acme/app/_root/runner-hello"
    changeset = json.loads(base.with_suffix(".json").read_text())
    assert changeset["baseRepository"] == "github.com/acme/app"
    assert changeset["headRef"] == "refs/heads/runner/hello"
    assert changeset["baseRef"] == "refs/heads/main"
    assert changeset["baseRev"] == git(repos / "github.com/acme/app", "rev-parse", "HEAD")
    assert changeset["body"] == "Made by hello in github.com/acme/app"
    assert "+hello" in changeset["commits"][0]["diff"]
    assert base.with_suffix(".patch").read_text() == changeset["commits"][0]["diff"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workspaces"][0]["status"] == "changed"
    assert summary["counts"]["changed"] == 1
    # the patch applies to the original repository
    check = subprocess.run(
        ["git", "apply", "--check", str(base.with_suffix(".patch"))],
        cwd=repos / "github.com/acme/app",
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_namespaced_secret_wins_and_never_leaks(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    set_secret(env, "GH_TOKEN", GLOBAL_VALUE, "--global")
    set_secret(env, "GH_TOKEN", ALICE_VALUE, "--user", "alice")
    spec = write_spec(
        tmp_path,
        "name: secrets\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: |\n"
        "      printf %s \"$GH_TOKEN\" | sha256sum | cut -d' ' -f1 > token.sha\n"
        '      echo "the token is $GH_TOKEN"\n'
        '      echo "to stderr $GH_TOKEN" >&2\n'
        '      printf %s "$GH_TOKEN" | base64\n'
        f"    container: {TEST_IMAGE}\n    env:\n      - GH_TOKEN\n",
    )
    proc, events, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    patch = (out / "github.com/acme/app/_root/runner-hello.patch").read_text()
    assert hashlib.sha256(ALICE_VALUE.encode()).hexdigest() in patch
    lines = [e["line"] for e in events if e["event"] == "step.output"]
    assert "the token is [REDACTED:GH_TOKEN]" in lines
    assert "to stderr [REDACTED:GH_TOKEN]" in lines
    values = [GLOBAL_VALUE, ALICE_VALUE]
    forms = leak_forms(values)
    assert scan_bytes(proc.stdout.encode() + proc.stderr.encode(), forms) == []
    assert scan_tree([out, Path(env["RUNNER_HOME"]), Path(env["TMPDIR"])], values) == []
    # the access is on record, with the run id and the step
    log = run_runner(["secret", "log", "GH_TOKEN", "--json"], env)
    accessed = [e for e in json.loads(log.stdout) if e["event"] == "accessed"]
    assert len(accessed) == 1 and accessed[0]["namespace"] == "user:alice"
    assert accessed[0]["job"] == events[0]["run_id"]


def test_secret_is_in_the_step_but_not_in_inspect_argv_or_docker_files(
    tmp_path: Path, env: dict[str, str], repos: Path, docker_client: Any
) -> None:
    set_secret(env, "GH_TOKEN", ALICE_VALUE, "--user", "alice")
    spec = write_spec(
        tmp_path,
        "name: inspect\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: |\n"
        '      [ "$GH_TOKEN" = "$(cat /dev/null)$GH_TOKEN" ] && touch has-token\n'
        "      touch ready\n"
        "      while [ ! -f go ]; do sleep 0.1; done\n"
        "      rm ready go\n"
        f"    container: {TEST_IMAGE}\n    env: [GH_TOKEN]\n",
    )
    out = tmp_path / "out"
    proc, run_id = _start_interruptible(spec, repos, out, env)
    try:
        ready = wait_for_file(Path(env["TMPDIR"]), "runner-ws-*/repo/ready")
        forms = leak_forms([ALICE_VALUE])
        assert container_leaks(docker_client, run_id, [ALICE_VALUE]) == []
        assert scan_bytes(proc_cmdlines(), forms) == []
        (ready.parent / "go").touch()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    patch = (out / "github.com/acme/app/_root/runner-hello.patch").read_text()
    assert "has-token" in patch


def test_missing_image_stops_before_any_container(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: noimage\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: exit 0\n    container: runner-test/does-not-exist:1.0\n",
    )
    proc, events, _ = run(tmp_path, env, spec, repos)
    assert proc.returncode == 1
    assert "runner-test/does-not-exist:1.0" in proc.stderr
    lines = proc.stderr.strip().splitlines()
    last_error = max(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert all(line.startswith("  ") for line in lines[last_error + 1 :])  # the error's details
    assert events == []


def test_missing_secrets_are_listed_together_before_anything_runs(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: missing\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: exit 0\n    container: {TEST_IMAGE}\n    env: [ONE_MISSING, TWO_MISSING]\n",
    )
    proc, events, _ = run(tmp_path, env, spec, repos)
    assert proc.returncode == 1
    assert "ONE_MISSING" in proc.stderr and "TWO_MISSING" in proc.stderr
    assert events == []


def test_failing_step_shows_exit_code_and_redacted_stderr_others_continue(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    set_secret(env, "GH_TOKEN", GLOBAL_VALUE, "--global")
    spec = write_spec(
        tmp_path,
        "name: failing\non:\n  - repository: github.com/acme/app\n  - repository: github.com/acme/lib\n"
        "steps:\n  - run: |\n"
        '      if [ -f go.mod ]; then echo "bad $GH_TOKEN" >&2; exit 3; fi\n'
        "      echo ok > ok.txt\n"
        f"    container: {TEST_IMAGE}\n    env: [GH_TOKEN]\n",
    )
    proc, events, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 3
    finished = {e["repository"]: e for e in events if e["event"] == "workspace.finished"}
    assert finished["github.com/acme/lib"]["status"] == "changed"
    failed = finished["github.com/acme/app"]
    assert failed["status"] == "failed"
    assert "exit code 3" in failed["error"]
    assert "bad [REDACTED:GH_TOKEN]" in failed["error"]
    assert GLOBAL_VALUE not in proc.stdout + proc.stderr
    exits = [e["exit_code"] for e in events if e["event"] == "step.finished"]
    assert sorted(exits) == [0, 3]
    assert (out / "github.com/acme/lib/_root/runner-hello.patch").exists()


def test_if_false_skips_and_if_template_decides(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: conditions\non:\n  - repository: github.com/acme/app\n  - repository: github.com/acme/lib\n"
        "steps:\n"
        f"  - run: echo never > never.txt\n    container: {TEST_IMAGE}\n    if: false\n"
        f"  - run: echo app > only-app.txt\n    container: {TEST_IMAGE}\n"
        '    if: ${{ matches repository.name "*/app" }}\n'
        f"  - run: echo always > always.txt\n    container: {TEST_IMAGE}\n",
    )
    proc, events, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    skipped = sorted((e["repository"], e["step"]) for e in events if e["event"] == "step.skipped")
    assert skipped == [
        ("github.com/acme/app", 1),
        ("github.com/acme/lib", 1),
        ("github.com/acme/lib", 2),
    ]
    app_patch = (out / "github.com/acme/app/_root/runner-hello.patch").read_text()
    lib_patch = (out / "github.com/acme/lib/_root/runner-hello.patch").read_text()
    assert "only-app.txt" in app_patch and "only-app.txt" not in lib_patch
    assert "never.txt" not in app_patch + lib_patch


def test_outputs_in_three_formats_and_nested_yaml(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: outputs\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: |\n"
        '      echo \'{"count": 3, "names": ["a", "b"]}\'\n'
        "      echo 'config:' >&2\n"
        "      echo '  before:' >&2\n"
        "      echo '    hooks: [lint, test]' >&2\n"
        f"    container: {TEST_IMAGE}\n"
        "    outputs:\n"
        "      data:\n        value: ${{ step.stdout }}\n        format: json\n"
        "      conf:\n        value: ${{ step.stderr }}\n        format: yaml\n"
        "      plain:\n        value: hello ${{ repository.name }}\n"
        "  - run: |\n"
        "      echo '${{ index outputs.conf.config.before.hooks 1 }}' > hook.txt\n"
        "      echo '${{ outputs.data.count }} ${{ join outputs.data.names \",\" }}' > data.txt\n"
        "      echo '${{ outputs.plain }}' > plain.txt\n"
        f"    container: {TEST_IMAGE}\n",
        TAIL.replace("title: Add hello", "title: hooks ${{ outputs.conf.config.before.hooks }}"),
    )
    proc, _, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    changeset = json.loads((out / "github.com/acme/app/_root/runner-hello.json").read_text())
    diff = changeset["commits"][0]["diff"]
    assert "+test" in diff
    assert "+3 a,b" in diff
    assert "+hello github.com/acme/app" in diff
    assert changeset["title"] == "hooks [lint test]"
    assert changeset["outputs"]["data"] == {"count": 3, "names": ["a", "b"]}


def test_files_and_mounts(tmp_path: Path, env: dict[str, str], repos: Path) -> None:
    spec = write_spec(
        tmp_path,
        "name: files\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: |\n"
        "      cat /tmp/script.sh > from-files.txt\n"
        "      cat /mnt/data.txt > from-mount.txt\n"
        "      cat /mnt/dir/inner.txt > from-dir.txt\n"
        "      touch /mnt/data.txt 2>/dev/null && echo writable > writable.txt || true\n"
        f"    container: {TEST_IMAGE}\n"
        "    files:\n      /tmp/script.sh: echo ${{ repository.name }}\n"
        "    mount:\n"
        "      - path: data.txt\n        mountpoint: /mnt/data.txt\n"
        "      - path: ./dir\n        mountpoint: /mnt/dir\n",
    )
    (spec.parent / "data.txt").write_text("mounted content\n")
    (spec.parent / "dir").mkdir()
    (spec.parent / "dir" / "inner.txt").write_text("inner content\n")
    proc, _, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    patch = (out / "github.com/acme/app/_root/runner-hello.patch").read_text()
    assert "+echo github.com/acme/app" in patch
    assert "+mounted content" in patch
    assert "+inner content" in patch
    assert "writable.txt" not in patch


def test_mount_outside_the_spec_folder_is_refused(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    (tmp_path / "secret.txt").write_text("x")
    spec = write_spec(
        tmp_path,
        "name: escape\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: exit 0\n    container: {TEST_IMAGE}\n"
        "    mount:\n      - path: ../secret.txt\n        mountpoint: /x\n",
    )
    proc, _, _ = run(tmp_path, env, spec, repos)
    assert proc.returncode in (1, 3)
    assert "leaves the spec's folder" in proc.stdout + proc.stderr


def test_two_repositories_in_parallel(tmp_path: Path, env: dict[str, str], repos: Path) -> None:
    spec = write_spec(
        tmp_path,
        "name: parallel\non:\n  - repository: github.com/acme/app\n  - repository: github.com/acme/lib\n"
        f"steps:\n  - run: sleep 1; date +%s%N > started.txt\n    container: {TEST_IMAGE}\n",
    )
    started = time.monotonic()
    proc, events, out = run(tmp_path, env, spec, repos, "-j", "2")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    starts = [e for e in events if e["event"] in ("step.started", "step.finished")]
    # both steps started before either finished
    order = [e["event"] for e in starts]
    assert order[:2] == ["step.started", "step.started"], order
    assert elapsed > 0  # the ordering above is the evidence of parallelism
    assert len(list(out.rglob("*.patch"))) == 2


def test_workspaces_one_per_folder(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "repos"
    make_repo(
        root,
        "github.com/acme/mono",
        {"a/package.json": "{}", "b/c/package.json": "{}", "README.md": "x"},
    )
    spec = write_spec(
        tmp_path,
        "name: ws\non:\n  - repository: github.com/acme/mono\n"
        "workspaces:\n  - rootAtLocationOf: package.json\n    in: github.com/acme/*\n"
        f"steps:\n  - run: echo ${{{{ steps.path }}}} > where.txt\n    container: {TEST_IMAGE}\n",
        TAIL.replace("branch: runner/hello", 'branch: runner/ws-${{ replace steps.path "/" "-" }}'),
    )
    proc, events, out = run(tmp_path, env, spec, root)
    assert proc.returncode == 0, proc.stderr
    paths = sorted(e["path"] for e in events if e["event"] == "workspace.finished")
    assert paths == ["a", "b/c"]
    a = (out / "github.com/acme/mono/a/runner-ws-a.patch").read_text()
    bc = (out / "github.com/acme/mono/b/c/runner-ws-b-c.patch").read_text()
    assert "a/where.txt" in a and "+a" in a
    assert "b/c/where.txt" in bc and "+b/c" in bc


def test_transform_changes_and_import_changesets(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: transform\non:\n  - repository: github.com/acme/app\n"
        "transformChanges:\n  group:\n    - directory: docs\n      branch: runner/docs\n"
        "importChangesets:\n  - repository: github.com/acme/lib\n    externalIDs: [12, '34']\n"
        "steps:\n  - run: mkdir -p docs src && echo d > docs/a.md && echo s > src/b.go\n"
        f"    container: {TEST_IMAGE}\n",
    )
    proc, _, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    main = (out / "github.com/acme/app/_root/runner-hello.patch").read_text()
    docs = (out / "github.com/acme/app/_root/runner-docs.patch").read_text()
    assert "src/b.go" in main and "docs/a.md" not in main
    assert "docs/a.md" in docs and "src/b.go" not in docs
    docs_spec = json.loads((out / "github.com/acme/app/_root/runner-docs.json").read_text())
    assert docs_spec["headRef"] == "refs/heads/runner/docs"
    imports = json.loads((out / "imports.json").read_text())
    assert imports == [
        {"baseRepository": "github.com/acme/lib", "externalID": "12"},
        {"baseRepository": "github.com/acme/lib", "externalID": "34"},
    ]


def test_published_rules_resolve_per_changeset(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    tail = (
        TAIL
        + "  published:\n    - github.com/acme/*: draft\n    - github.com/acme/lib: true\n  fork: true\n"
    )
    spec = write_spec(
        tmp_path,
        "name: published\non:\n  - repository: github.com/acme/app\n  - repository: github.com/acme/lib\n"
        f"steps:\n  - run: echo x > x.txt\n    container: {TEST_IMAGE}\n",
        tail,
    )
    proc, _, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    app = json.loads((out / "github.com/acme/app/_root/runner-hello.json").read_text())
    lib = json.loads((out / "github.com/acme/lib/_root/runner-hello.json").read_text())
    assert app["published"] == "draft"
    assert lib["published"] is True
    assert app["fork"] is True


def test_big_output_is_shown_whole_and_captured_truncated(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: big\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: |\n"
        '      i=0; while [ $i -lt 30000 ]; do echo "line $i padding padding padding padding"; i=$((i+1)); done\n'
        f"    container: {TEST_IMAGE}\n"
        "    outputs:\n      captured:\n        value: ${{ len step.stdout }}\n"
        "  - run: echo '${{ outputs.captured }}' > size.txt\n"
        f"    container: {TEST_IMAGE}\n",
    )
    proc, events, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    lines = [e["line"] for e in events if e["event"] == "step.output" and e["step"] == 1]
    assert len(lines) >= 30000
    assert lines[-1].startswith("line 29999")
    captured = json.loads((out / "github.com/acme/app/_root/runner-hello.json").read_text())[
        "outputs"
    ]["captured"]
    assert 1024 * 1024 <= int(captured) <= 1024 * 1024 + 200  # 1 MiB plus the marker


def test_step_writing_a_secret_into_a_file_fails_and_writes_no_diff(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    set_secret(env, "GH_TOKEN", ALICE_VALUE, "--user", "alice")
    spec = write_spec(
        tmp_path,
        "name: leaky\non:\n  - repository: github.com/acme/app\nsteps:\n"
        '  - run: printf %s "$GH_TOKEN" | base64 > leaked.txt\n'
        f"    container: {TEST_IMAGE}\n    env: [GH_TOKEN]\n",
    )
    proc, events, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 3
    finished = next(e for e in events if e["event"] == "workspace.finished")
    assert finished["status"] == "failed"
    assert "GH_TOKEN" in finished["error"] and "leaked.txt" in finished["error"]
    assert list(out.rglob("*.patch")) == []
    assert scan_tree([out, Path(env["RUNNER_HOME"]), Path(env["TMPDIR"])], [ALICE_VALUE]) == []


def test_events_carry_no_resolved_value(tmp_path: Path, env: dict[str, str], repos: Path) -> None:
    set_secret(env, "GH_TOKEN", ALICE_VALUE, "--user", "alice")
    spec = write_spec(
        tmp_path,
        "name: events\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: echo $GH_TOKEN $LITERAL_VAR\n    container: {TEST_IMAGE}\n"
        "    env:\n      - GH_TOKEN\n      - LITERAL_VAR: visible-literal\n",
    )
    proc, events, _ = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    for event in events:
        if event["event"] != "step.output":
            assert "visible-literal" not in json.dumps(event)
    assert ALICE_VALUE not in proc.stdout


def _wait_for(pattern: str, folder: Path, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(folder.glob(pattern))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"nothing matched {pattern}")


def _runner_containers(docker_client: Any, run_id: str) -> list[Any]:
    label = f"org.runner.run-id={run_id}"
    return list(docker_client.containers.list(all=True, filters={"label": label}))


def _start_interruptible(
    spec: Path, repos: Path, out: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [RUNNER, "run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "run.started"
    return proc, str(first["run_id"])


def test_ctrl_c_leaves_nothing_behind(
    tmp_path: Path, env: dict[str, str], repos: Path, docker_client: Any
) -> None:
    spec = write_spec(
        tmp_path,
        "name: interrupt\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: touch started; sleep 300\n    container: {TEST_IMAGE}\n",
    )
    proc, run_id = _start_interruptible(spec, repos, tmp_path / "out", env)
    tmp = Path(env["TMPDIR"])
    _wait_for("runner-ws-*/repo/started", tmp)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - began < 15
    assert list(tmp.glob("runner-ws-*")) == []
    assert _runner_containers(docker_client, run_id) == []


def test_second_ctrl_c_exits_at_once_and_the_next_run_sweeps(
    tmp_path: Path, env: dict[str, str], repos: Path, docker_client: Any
) -> None:
    spec = write_spec(
        tmp_path,
        "name: interrupt2\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: touch started; trap '' TERM INT; sleep 300\n    container: {TEST_IMAGE}\n",
    )
    proc, run_id = _start_interruptible(spec, repos, tmp_path / "out", env)
    tmp = Path(env["TMPDIR"])
    _wait_for("runner-ws-*/repo/started", tmp)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # two signals at once reach Python's handler as one
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    # whatever the hard exit left (if anything), the next run sweeps
    quick = write_spec(
        tmp_path,
        "name: next\non:\n  - repository: github.com/acme/lib\nsteps:\n"
        f"  - run: exit 0\n    container: {TEST_IMAGE}\n",
    )
    proc2, _, _ = run(tmp_path, env, quick, repos)
    assert proc2.returncode == 0, proc2.stderr
    assert list(tmp.glob(f"runner-ws-{run_id}-*")) == []
    assert _runner_containers(docker_client, run_id) == []
    sweep = run_runner(["cleanup"], env)
    assert sweep.returncode == 0, sweep.stderr
    assert "swept 0 leftovers" in sweep.stdout


def test_missing_repository_is_named_before_anything_runs(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: norepo\non:\n  - repository: github.com/acme/nope\nsteps:\n"
        f"  - run: exit 0\n    container: {TEST_IMAGE}\n",
    )
    proc, events, _ = run(tmp_path, env, spec, repos)
    assert proc.returncode == 1
    assert "github.com/acme/nope" in proc.stderr
    assert events == []


def test_query_selects_repositories_and_search_result_paths(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: query\non:\n  - repositoriesMatchingQuery: file:go.mod module\nsteps:\n"
        "  - run: echo '${{ repository.search_result_paths }}' > paths.txt\n"
        f"    container: {TEST_IMAGE}\n",
    )
    proc, events, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    repositories = [e["repository"] for e in events if e["event"] == "workspace.finished"]
    assert repositories == ["github.com/acme/app"]
    patch = (out / "github.com/acme/app/_root/runner-hello.patch").read_text()
    assert "+go.mod" in patch


def test_unsupported_query_is_refused_naming_what(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: structural\non:\n  - repositoriesMatchingQuery: 'fmt.Sprintf(:[a]) patterntype:structural'\n"
        f"steps:\n  - run: exit 0\n    container: {TEST_IMAGE}\n",
    )
    proc, _, _ = run(tmp_path, env, spec, repos)
    assert proc.returncode == 1
    assert "structural" in proc.stderr


def test_timeout_kills_the_step_and_fails_the_workspace(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: slow\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: sleep 60\n    container: {TEST_IMAGE}\n",
    )
    started = time.monotonic()
    proc, events, _ = run(tmp_path, env, spec, repos, "--timeout", "2")
    assert proc.returncode == 3
    assert time.monotonic() - started < 40
    finished = next(e for e in events if e["event"] == "workspace.finished")
    assert "timed out after 2 s" in finished["error"]


def test_fail_fast_stops_the_other_workspaces(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: failfast\non:\n  - repository: github.com/acme/app\n  - repository: github.com/acme/lib\n"
        "steps:\n  - run: |\n      if [ -f go.mod ]; then exit 1; fi\n      sleep 60\n"
        f"    container: {TEST_IMAGE}\n",
    )
    started = time.monotonic()
    proc, events, _ = run(tmp_path, env, spec, repos, "--fail-fast", "-j", "2")
    assert time.monotonic() - started < 40
    statuses = {e["repository"]: e["status"] for e in events if e["event"] == "workspace.finished"}
    assert statuses == {"github.com/acme/app": "failed", "github.com/acme/lib": "canceled"}
    assert proc.returncode == 3


def test_org_namespace_uses_the_orgs_secret(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    set_secret(env, "GH_TOKEN", GLOBAL_VALUE, "--global")
    set_secret(env, "GH_TOKEN", ALICE_VALUE, "--org", "acme")
    spec = write_spec(
        tmp_path,
        "name: org\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: printf %s \"$GH_TOKEN\" | sha256sum | cut -d' ' -f1 > token.sha\n"
        f"    container: {TEST_IMAGE}\n    env: [GH_TOKEN]\n",
    )
    proc, _, out = run(tmp_path, env, spec, repos, "--namespace", "org:acme")
    assert proc.returncode == 0, proc.stderr
    patch = (out / "github.com/acme/app/_root/runner-hello.patch").read_text()
    assert hashlib.sha256(ALICE_VALUE.encode()).hexdigest() in patch


def test_out_folder_is_replaced_but_a_foreign_one_refused(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: outdir\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: echo x > x.txt\n    container: {TEST_IMAGE}\n",
    )
    proc, _, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    stale = out / "github.com/acme/app/_root/runner-hello.json"
    assert stale.exists()
    spec.write_text(spec.read_text().replace("branch: runner/hello", "branch: runner/other"))
    proc, _, out = run(tmp_path, env, spec, repos)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert (out / "github.com/acme/app/_root/runner-other.json").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    proc2 = run_runner(["run", str(spec), "--repos-root", str(repos), "--out", str(foreign)], env)
    assert proc2.returncode == 1
    assert "not written by runner" in proc2.stderr
    assert (foreign / "keep.txt").read_text() == "mine"


def test_the_next_run_sweeps_what_a_dead_run_left(
    tmp_path: Path, env: dict[str, str], repos: Path, docker_client: Any
) -> None:
    dead_run = "deadbeef00000000"
    runs = Path(env["RUNNER_HOME"]) / "runs"
    runs.mkdir(parents=True)
    (runs / dead_run).write_text("999999999")  # no such process
    leftover_dir = Path(env["TMPDIR"]) / f"runner-ws-{dead_run}-abc"
    (leftover_dir / "repo").mkdir(parents=True)
    container = docker_client.containers.run(
        TEST_IMAGE, ["sleep", "300"], detach=True, labels={"org.runner.run-id": dead_run}
    )
    try:
        spec = write_spec(
            tmp_path,
            "name: sweeper\non:\n  - repository: github.com/acme/lib\nsteps:\n"
            f"  - run: exit 0\n    container: {TEST_IMAGE}\n",
        )
        proc, _, _ = run(tmp_path, env, spec, repos)
        assert proc.returncode == 0, proc.stderr
        assert not leftover_dir.exists()
        assert _runner_containers(docker_client, dead_run) == []
        assert not (runs / dead_run).exists()
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


def test_terminal_gets_a_live_display_and_the_summary_table(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    import os
    import pty

    spec = write_spec(
        tmp_path,
        "name: live\non:\n  - repository: github.com/acme/app\n  - repository: github.com/acme/lib\n"
        f"steps:\n  - run: echo hi > hi.txt\n    container: {TEST_IMAGE}\n",
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [RUNNER, "run", str(spec), "--repos-root", str(repos), "--out", str(tmp_path / "out")],
        env={**env, "COLUMNS": "120", "TERM": "xterm"},
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        screen += data
    stdout, _ = proc.communicate(timeout=60)
    os.close(leader)
    assert proc.returncode == 0
    text = screen.decode("utf-8", "replace")
    assert "workspaces" in text  # the progress bar over all workspaces
    assert "2/2" in text
    assert "changed" in text
    lines = stdout.splitlines()
    assert lines[0].split() == ["STATUS", "REPOSITORY", "PATH", "CHANGESET"]
    assert any(line.startswith("changed") and "github.com/acme/lib" in line for line in lines)
    assert "2 changed" in lines[-1]


def test_without_a_terminal_logs_go_to_stderr_and_the_summary_to_stdout(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    spec = write_spec(
        tmp_path,
        "name: plain\non:\n  - repository: github.com/acme/app\n"
        f"steps:\n  - run: echo visible-output-line\n    container: {TEST_IMAGE}\n",
    )
    proc = run_runner(
        ["run", str(spec), "--repos-root", str(repos), "--out", str(tmp_path / "o")], env
    )
    assert proc.returncode == 0, proc.stderr
    assert "visible-output-line" in proc.stderr
    assert "visible-output-line" not in proc.stdout
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "workspace.finished" for r in records)
    assert proc.stdout.splitlines()[0].startswith("STATUS")


def test_run_and_env_explain_close_the_database_and_leave_no_write_ahead_log(
    tmp_path: Path,
) -> None:
    """SQLite folds its log back into the database, and removes it, when the last
    connection closes. `runner run` ended with its connection open: the log grew by
    each run's writes, and every later command read all of it again first."""
    make_repo(tmp_path / "repos", "github.com/acme/app", {"README.md": "app\n"})
    spec = tmp_path / "nosteps.yaml"
    spec.write_text("name: nosteps\non:\n  - repository: github.com/acme/app\nsteps: []\n")
    home = tmp_path / "home"
    env = runner_env(home)
    run = [
        "run",
        str(spec),
        "--repos-root",
        str(tmp_path / "repos"),
        "--out",
        str(tmp_path / "out"),
    ]
    for args in (run, ["env", "explain", str(spec)], run):
        proc = run_runner(args, env)
        assert proc.returncode == 0, proc.stderr
        assert (home / "runner.db").exists()
        assert not (home / "runner.db-wal").exists(), args[0]
