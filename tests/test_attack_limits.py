"""Resource limits: per-step memory and CPU, and the cap on a job's log volume.

They come from `runner run` flags (`--memory`, `--cpus`, `--log-cap`) and from
the settings (`RUNNER_STEP_MEMORY_MB`, `RUNNER_STEP_CPUS`,
`RUNNER_JOB_LOG_CAP_MB`) that executors read, never from spec keys. Each is
read back from the running container's `HostConfig`, and each is shown to
bite: a step over its memory is killed and its workspace fails saying why; a
job that prints past the cap fails with a clear error.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runner.config import MIB, settings_from_env
from tests.attack_support import (
    RUN_LABEL,
    RUNNER,
    TEST_IMAGE,
    Cluster,
    base_env,
    events_of,
    run_cli,
    wait_for,
)
from tests.helpers import make_repo

pytestmark = pytest.mark.docker

TAIL = "changesetTemplate: {title: t, body: b, branch: b, commit: {message: m}}\n"
WAIT_FOR_GO = "touch ready; while [ ! -f go ]; do sleep 0.1; done; rm ready go; echo ok > ok.txt"
GREEDY = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"


def spec_file(folder: Path, name: str, *scripts: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    steps = "".join(f"  - run: {json.dumps(s)}\n    container: {TEST_IMAGE}\n" for s in scripts)
    path.write_text(
        f"name: {name}\non:\n  - repository: github.com/acme/app\nsteps:\n{steps}{TAIL}"
    )
    return path


@pytest.fixture
def local(tmp_path: Path) -> dict[str, Any]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    env = base_env(RUNNER_HOME=str(tmp_path / "home"), TMPDIR=str(tmp), RUNNER_USER="alice")
    return {"env": env, "tmp": tmp, "repos": repos, "root": tmp_path}


def run_args(local: dict[str, Any], spec: Path, *extra: str) -> list[str]:
    return [
        "run", str(spec), "--repos-root", str(local["repos"]),
        "--out", str(local["root"] / "out"), "--json", *extra,
    ]  # fmt: skip


def host_config_while_running(
    docker_client: Any, folder: Path, start: Any, *, timeout: float = 60
) -> dict[str, Any]:
    """Start something whose step waits for `go`; read its container's HostConfig meanwhile."""
    handle = start()
    ready: list[Path] = []

    def step_is_waiting() -> bool:
        ready[:] = list(folder.glob("runner-ws-*/repo/ready"))
        return bool(ready)

    wait_for(step_is_waiting, timeout=timeout, what="the step to wait for go")
    workspace = str(ready[0].parent.resolve())
    mine = [
        info
        for c in docker_client.containers.list(filters={"label": RUN_LABEL})
        for info in [docker_client.api.inspect_container(c.id)]
        if any(m.get("Source") == workspace for m in info["Mounts"])
    ]
    assert len(mine) == 1, [m["Id"] for m in mine]
    (ready[0].parent / "go").touch()
    return {"config": mine[0]["HostConfig"], "handle": handle}


def test_run_flags_set_memory_and_cpus_on_the_step_container(
    local: dict[str, Any], docker_client: Any
) -> None:
    spec = spec_file(local["root"] / "specs", "limits", WAIT_FOR_GO)

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [RUNNER, *run_args(local, spec, "--memory", "64m", "--cpus", "0.5")],
            env=local["env"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    seen = host_config_while_running(docker_client, local["tmp"], start)
    proc = seen["handle"]
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen["config"]["Memory"] == 64 * MIB
    assert seen["config"]["NanoCpus"] == 500_000_000


def test_settings_set_memory_and_cpus_when_no_flag_does(
    local: dict[str, Any], docker_client: Any
) -> None:
    spec = spec_file(local["root"] / "specs", "settings", WAIT_FOR_GO)
    env = {**local["env"], "RUNNER_STEP_MEMORY_MB": "48", "RUNNER_STEP_CPUS": "0.25"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [RUNNER, *run_args(local, spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    seen = host_config_while_running(docker_client, local["tmp"], start)
    _, err = seen["handle"].communicate(timeout=60)
    assert seen["handle"].returncode == 0, err
    assert seen["config"]["Memory"] == 48 * MIB
    assert seen["config"]["NanoCpus"] == 250_000_000


def test_without_limits_the_container_has_none(local: dict[str, Any], docker_client: Any) -> None:
    spec = spec_file(local["root"] / "specs", "unlimited", WAIT_FOR_GO)

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [RUNNER, *run_args(local, spec)],
            env=local["env"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    seen = host_config_while_running(docker_client, local["tmp"], start)
    seen["handle"].communicate(timeout=60)
    assert seen["config"]["Memory"] == 0 and seen["config"]["NanoCpus"] == 0


def test_spec_keys_cannot_set_limits(local: dict[str, Any]) -> None:
    spec = local["root"] / "keys.yaml"
    spec.write_text(
        "name: keys\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: echo\n    container: {TEST_IMAGE}\n    memory: 8g\n    cpus: 64\n" + TAIL
    )
    proc = run_cli(["validate", str(spec)], local["env"])
    assert proc.returncode == 1
    assert "unknown key 'memory'" in proc.stderr and "unknown key 'cpus'" in proc.stderr


@pytest.mark.parametrize(
    ("flag", "says"),
    [("--memory=0", "not a positive size"), ("--memory=lots", "not a size"), ("--cpus=0", "0")],
)
def test_nonsense_limits_are_usage_errors(local: dict[str, Any], flag: str, says: str) -> None:
    spec = spec_file(local["root"] / "specs", "bad", "echo")
    proc = run_cli(run_args(local, spec, flag), local["env"])
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr


def test_a_step_over_its_memory_limit_is_killed_and_the_workspace_says_why(
    local: dict[str, Any], docker_client: Any
) -> None:
    spec = spec_file(local["root"] / "specs", "greedy", GREEDY)
    proc = run_cli(run_args(local, spec, "--memory", "32m"), local["env"])
    assert proc.returncode == 3, proc.stderr
    (finished,) = [e for e in events_of(proc.stdout) if e["event"] == "workspace.finished"]
    assert finished["status"] == "failed"
    assert "step 1 was killed: it went over its memory limit" in finished["error"]


def test_the_default_log_cap_is_100_mib() -> None:
    assert settings_from_env({}).job_log_cap_bytes == 100 * MIB
    assert settings_from_env({"RUNNER_JOB_LOG_CAP_MB": "7"}).job_log_cap_bytes == 7 * MIB


PRINT_2MB = "head -c 2000000 /dev/zero | tr '\\0' 'x' | fold -w 100"


def test_a_step_printing_past_the_log_cap_fails_the_workspace(
    local: dict[str, Any], docker_client: Any
) -> None:
    spec = spec_file(local["root"] / "specs", "loud", PRINT_2MB + "; echo done > done.txt")
    proc = run_cli(run_args(local, spec, "--log-cap", "1m"), local["env"])
    assert proc.returncode == 3, proc.stderr
    (finished,) = [e for e in events_of(proc.stdout) if e["event"] == "workspace.finished"]
    assert finished["status"] == "failed" and "over the log cap" in finished["error"]
    # The same with the default cap goes through.
    proc = run_cli(run_args(local, spec), local["env"])
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_log_cap_counts_the_whole_job_not_each_step(
    local: dict[str, Any], docker_client: Any
) -> None:
    half = "head -c 700000 /dev/zero | tr '\\0' 'y' | fold -w 100"
    spec = spec_file(local["root"] / "specs", "two", half, half + "; echo > done.txt")
    proc = run_cli(run_args(local, spec, "--log-cap", "1m"), local["env"])
    assert proc.returncode == 3, proc.stderr[-500:]


def test_a_step_printing_forever_is_stopped_at_the_cap(
    local: dict[str, Any], docker_client: Any
) -> None:
    # Bursts of 500 kB a second: past a 1 MiB cap within about two seconds.
    burst = "head -c 500000 /dev/zero | tr '\\0' z | fold -w 200; sleep 1"
    spec = spec_file(local["root"] / "specs", "forever", f"while :; do {burst}; done")
    # Stopped by the cap, not by the step timeout (which would say so instead); no
    # wall-clock assertion, as the machine's load decides how long the bursts take.
    proc = run_cli(run_args(local, spec, "--log-cap", "1m", "--timeout", "120"), local["env"])
    assert proc.returncode == 3
    (finished,) = [e for e in events_of(proc.stdout) if e["event"] == "workspace.finished"]
    assert "over the log cap" in finished["error"] and "timeout" not in finished["error"]


def test_a_chatty_step_that_times_out_is_a_timeout_not_an_engine_failure(
    tmp_path: Path, docker_client: Any
) -> None:
    import threading

    import docker

    from runner.execute.docker_runtime import DockerRuntime
    from runner.execute.runtime import Mount, StepContainer

    # A short API timeout, so the hang costs seconds here rather than a minute.
    runtime = DockerRuntime(docker.APIClient(version="auto", timeout=5))
    try:
        step = StepContainer(
            image=runtime.image_id(TEST_IMAGE),
            script="while :; do echo " + "z" * 200 + "; done",
            workdir="/work",
            mounts=[Mount(source=tmp_path, target="/work", read_only=False)],
            labels={RUN_LABEL: f"attack-{tmp_path.name}"},
            timeout_s=2,
        )
        started = time.monotonic()
        result = runtime.run_step(step, on_output=lambda s, c: None, cancel=threading.Event())
        assert result.timed_out and not result.succeeded
        assert time.monotonic() - started < 5
    finally:
        runtime.sweep(RUN_LABEL, f"attack-{tmp_path.name}")
        runtime.close()


# == Through a coordinator: the executor's settings ============================================


@pytest.mark.slow
def test_executor_settings_set_limits_and_the_log_cap(tmp_path: Path, docker_client: Any) -> None:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    c = Cluster(tmp_path, repos)
    ids: list[str] = []
    try:
        c.cli("user", "add", "alice")
        c.token("user", "alice")
        c.token("executor", "fleet", "exec.tok")
        c.start_server()
        specs = tmp_path / "specs"
        submitted = {}
        for name, script in (("wait", WAIT_FOR_GO), ("greedy", GREEDY), ("loud", PRINT_2MB)):
            proc = c.remote("submit", str(spec_file(specs, name, script)))
            assert proc.returncode == 0, proc.stderr
            submitted[name] = proc.stdout.split()[0]
        ids.extend(submitted.values())

        def start() -> subprocess.Popen[bytes]:
            return c.start_executor(
                "exec-limited",
                RUNNER_STEP_MEMORY_MB="32",
                RUNNER_STEP_CPUS="0.75",
                RUNNER_JOB_LOG_CAP_MB="1",
            )

        seen = host_config_while_running(docker_client, c.exec_tmp, start)
        assert seen["config"]["Memory"] == 32 * MIB
        assert seen["config"]["NanoCpus"] == 750_000_000
        jobs = c.wait_jobs(ids, states=("completed", "failed", "canceled"), timeout=120)
        assert jobs[submitted["wait"]]["state"] == "completed"
        greedy = jobs[submitted["greedy"]]
        assert greedy["state"] == "failed" and greedy["attempts"] == 1, greedy
        assert "went over its memory limit" in greedy["error"]
        loud = jobs[submitted["loud"]]
        assert loud["state"] == "failed" and "over the log cap" in loud["error"], loud
    finally:
        c.close()
        for job_id in ids:
            for container in docker_client.containers.list(
                all=True, filters={"label": f"{RUN_LABEL}={job_id}"}
            ):
                container.remove(force=True)
