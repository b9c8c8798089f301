"""File secrets (issue 19): a value delivered as a file on a tmpfs, its variable the path.

The step loop on the fake runtime for what reaches which field of the step;
the real engine for where the file lives (a tmpfs of that container alone,
readable by the step's user only) and for what the run leaves behind.
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

from runner.env import HostEnv, plan_env
from runner.errors import ExecutionError
from runner.execute.docker_sandbox import secret_files_tmpfs
from runner.execute.job import register_values, reveal_secrets
from runner.execute.runtime import SECRET_FILES_DIR, StepContainer, secret_file_path
from runner.execute.steps import RunContext, RunLimits, WorkspaceRunner
from runner.plan import Workspace
from runner.redact.active import ActiveRedactor
from runner.secrets.delivery import Delivery
from runner.secrets.names import VALUE_MAX_BYTES
from runner.secrets.value import Secret
from runner.spec import load_spec_text
from runner.testing import FakeRuntime, FakeSecretStore, FakeStepRun
from tests.helpers import (
    RUNNER,
    TEST_IMAGE,
    git,
    leak_forms,
    make_repo,
    proc_cmdlines,
    run_runner,
    runner_env,
    scan_bytes,
    scan_tree,
    set_secret,
)

IMAGE_ID = "sha256:" + "d" * 64
# A kubeconfig-like value: long lines, a short one, quotes and a $ for the shell payload.
KUBE = (
    "apiVersion: v1\n"
    "server: https://k8s.example.test\n"
    "ok\n"
    f"token: 'kube-{uuid.uuid4().hex}' \"$HOME\"\n"
)
TOKEN = "env-token-" + uuid.uuid4().hex[:12]
TEMPLATE = (
    "changesetTemplate:\n  title: t\n  body: b\n  branch: runner/files\n  commit:\n    message: m\n"
)


# The seam ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"secret_files": {"1KUBE": Secret(KUBE)}}, "'1KUBE' is not valid"),
        ({"secret_files": {"KUBE/../x": Secret(KUBE)}}, "is not valid"),
        ({"secret_files": {"KUBE": Secret(KUBE + "\0")}}, "NUL character"),
        (
            {"secret_files": {"KUBE": Secret(KUBE)}, "secret_env": {"KUBE": Secret(TOKEN)}},
            "both as a file secret and as a variable",
        ),
    ],
)
def test_a_file_secret_the_shell_cannot_write_is_refused_without_its_value(
    fields: dict[str, Any], said: str
) -> None:
    with pytest.raises(ExecutionError, match=said) as caught:
        StepContainer(image=IMAGE_ID, script="true", workdir="/work", **fields)
    assert "kube-" not in str(caught.value) and TOKEN not in str(caught.value)


def test_the_tmpfs_size_does_not_tell_a_values_length() -> None:
    def size(value: str) -> int:
        step = StepContainer(
            image=IMAGE_ID, script="true", workdir="/w", secret_files={"F": Secret(value)}
        )
        (tmpfs,) = secret_files_tmpfs(step)
        assert tmpfs.target == SECRET_FILES_DIR and tmpfs.mode == 0o1777
        return tmpfs.size

    # The largest value a secret may have fits; a short one gets the same room.
    assert size("a" * 10) == size("b" * VALUE_MAX_BYTES) >= VALUE_MAX_BYTES + 4096
    no_files = StepContainer(image=IMAGE_ID, script="true", workdir="/w")
    assert secret_files_tmpfs(no_files) == []


# The step loop ----------------------------------------------------------------------------------


def test_the_step_loop_gives_a_file_secret_as_a_file_and_redacts_each_line(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repos", "github.com/acme/app", {"README.md": "hi\n"})
    workspace = Workspace(
        repository="github.com/acme/app",
        repo_path=repo,
        branch="main",
        commit=git(repo, "rev-parse", "HEAD"),
        path="",
        only_fetch_workspace=False,
        search_result_paths=(),
    )
    spec = load_spec_text(
        "name: files\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: show\n    container: {TEST_IMAGE}\n    env: [KUBECONFIG, TOKEN]\n" + TEMPLATE,
        "spec.yaml",
    )
    store = FakeSecretStore()
    store.set(
        "KUBECONFIG", "user:alice", Secret(KUBE), actor="alice", delivery=Delivery(type="file")
    )
    store.set("TOKEN", "user:alice", Secret(TOKEN), actor="alice")
    plan = plan_env(spec, "user:alice", store)
    secrets = reveal_secrets(
        plan, lambda ref, step: store.reveal(ref.id, version=ref.version, actor="alice")
    )
    redactor = ActiveRedactor()
    register_values(redactor, plan=plan, secrets=secrets)
    lines: list[str] = []

    def show(run: FakeStepRun) -> int:
        path = run.getenv("KUBECONFIG") or ""
        run.stdout(f"path {path}\n")
        run.stdout(run.read(path))
        run.stdout(f"token {run.getenv('TOKEN')}\n")
        return 0

    runtime = FakeRuntime(handler=show, images={TEST_IMAGE: IMAGE_ID})
    (tmp_path / "work").mkdir()
    ctx = RunContext(
        run_id="run-files",
        spec=spec,
        spec_dir=tmp_path,
        namespace="user:alice",
        env_plan=plan,
        secrets=secrets,
        host=HostEnv(),
        host_macs={},
        images={TEST_IMAGE: IMAGE_ID},
        runtime=runtime,
        redactor=redactor,
        reporter=_Lines(lines),
        limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
        cancel=threading.Event(),
        cache=None,
        temp_root=tmp_path / "work",
    )
    result = WorkspaceRunner(ctx, workspace).run()
    assert result.status == "unchanged", result
    (step,) = runtime.steps
    # The file secret is in secret_files alone: neither a variable nor in the env.
    assert set(step.secret_files) == {"KUBECONFIG"} and set(step.secret_env) == {"TOKEN"}
    assert "KUBECONFIG" not in step.env
    assert lines[0] == f"path {secret_file_path('KUBECONFIG')}"
    shown = "\n".join(lines)
    assert "[REDACTED:KUBECONFIG]" in shown and "[REDACTED:TOKEN]" in shown
    # Every line of the value, the short one next to the others too, is masked.
    assert scan_bytes(shown.encode(), leak_forms([KUBE, TOKEN])) == []
    assert "\nok\n" not in shown


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def event(self, name: str, **fields: Any) -> None:
        if name == "step.output":
            self.lines.append(str(fields["line"]))

    def close(self) -> None:
        pass


# The real engine --------------------------------------------------------------------------------

PROBE = """\
cat "$KUBECONFIG"
echo "path=$KUBECONFIG"
stat -c 'mode=%a owner=%u' "$KUBECONFIG"
awk '$2 == "/run/runner-secrets" { print "fs=" $3 }' /proc/mounts
echo "in-env=$(env | grep -c kube- || true)"
touch ready
while [ ! -f go ]; do sleep 0.1; done
rm ready go
echo done > result.txt
"""


@pytest.mark.docker
def test_a_file_secret_on_the_engine_is_on_a_tmpfs_only_and_leaves_nothing(
    tmp_path: Path, docker_client: Any
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    set_secret(env, "KUBECONFIG", KUBE, "--user", "alice", "--type", "file")
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    run_script = "".join(f"      {line}\n" for line in PROBE.splitlines())
    spec.write_text(
        "name: files\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: |\n{run_script}    container: {TEST_IMAGE}\n    env: [KUBECONFIG]\n" + TEMPLATE
    )
    out = tmp_path / "out"
    # A non-root step user: the wrapper writes the file as that user.
    args = ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json"]
    proc = subprocess.Popen(
        [RUNNER, *args, "--user", "1000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    forms = leak_forms([KUBE])
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first, proc.communicate(timeout=60)[1]
        run_id = json.loads(first)["run_id"]
        deadline = time.monotonic() + 60
        ready: list[Path] = []
        while time.monotonic() < deadline and not ready and proc.poll() is None:
            ready = list(tmp.glob("runner-ws-*/repo/ready"))
            time.sleep(0.1)
        assert ready, f"the step never started: {proc.communicate(timeout=60)[1]}"
        (container,) = docker_client.containers.list(
            filters={"label": f"org.runner.run-id={run_id}"}
        )
        inspect = docker_client.api.inspect_container(container.id)
        # Docker knows the tmpfs, and nothing of what is on it.
        tmpfs = [m for m in inspect["Mounts"] if m["Destination"] == SECRET_FILES_DIR]
        assert tmpfs and tmpfs[0]["Type"] == "tmpfs" and tmpfs[0]["Source"] == ""
        assert scan_bytes(json.dumps(inspect).encode(), forms) == []
        # The container's own layer holds the mount point at most, never the file.
        changed = [c["Path"] for c in docker_client.api.diff(container.id)]
        assert not [p for p in changed if p.startswith(SECRET_FILES_DIR + "/")], changed
        upper = inspect["GraphDriver"]["Data"].get("UpperDir")
        root = Path(docker_client.info()["DockerRootDir"])
        assert (
            scan_tree([root / "containers" / container.id, Path(upper or "/nonexistent")], [KUBE])
            == []
        )
        assert scan_bytes(proc_cmdlines(), forms) == []
        (ready[0].parent / "go").touch()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    lines = [e["line"] for e in map(json.loads, stdout.splitlines()) if e["event"] == "step.output"]
    # (The mask takes the value's final line end with it, so the next line follows it.)
    assert any(line.endswith(f"path={secret_file_path('KUBECONFIG')}") for line in lines)
    assert "mode=400 owner=1000" in lines and "fs=tmpfs" in lines and "in-env=0" in lines
    assert any("[REDACTED:KUBECONFIG]" in line for line in lines)
    assert scan_bytes((stdout + stderr).encode(), forms) == []
    # Afterwards: nothing on the host's disk, Docker's folder included.
    assert (
        docker_client.containers.list(all=True, filters={"label": f"org.runner.run-id={run_id}"})
        == []
    )
    assert scan_tree([out, Path(env["RUNNER_HOME"]), tmp, root / "containers"], [KUBE]) == []
    accessed = json.loads(run_runner(["secret", "log", "KUBECONFIG", "--json"], env).stdout)
    assert [e["job"] for e in accessed if e["event"] == "accessed"] == [run_id]


@pytest.mark.docker
def test_a_root_step_owns_its_file_and_a_shell_payload_keeps_every_byte(
    docker_client: Any, tmp_path: Path
) -> None:
    from runner.execute.docker_runtime import DockerRuntime

    runtime = DockerRuntime(docker_client.api, scratch_dir=tmp_path)
    out: list[bytes] = []
    step = StepContainer(
        image=runtime.image_id(TEST_IMAGE),
        script='stat -c "%a %u" "$A"; cat "$B"; wc -c < "$C"; ls -A /run/runner-secrets | tr "\\n" " "',
        workdir="/",
        # C is as large as a secret may be, next to two others on the same tmpfs.
        secret_files={
            "A": Secret(KUBE),
            "B": Secret("b-" * 8 + "\n\n"),
            "C": Secret("c" * VALUE_MAX_BYTES),
        },
    )
    exit_ = runtime.run_step(step, on_output=lambda s, b: out.append(b), cancel=threading.Event())
    assert exit_.succeeded, out
    assert b"".join(out).decode() == f"400 0\n{'b-' * 8}\n\n{VALUE_MAX_BYTES}\nA B C "
