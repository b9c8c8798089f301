"""End to end, every process separate: a coordinator, executors, the CLI.

Executors start with no database URL, an empty RUNNER_HOME and no key file.
One is killed with SIGKILL mid-job; every job still completes exactly once.
Then: a secret removed between submit and claim, a graceful drain, a user's
cancel, an idle executor stopping on SIGTERM, the audit trail, and a leak
scan of the database, every process's log and the job logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.test_queue_support import free_port, leaks, make_repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RUNNER = str(Path(sys.executable).with_name("runner"))
TOKEN_VALUE = "e2e-token-value-4242-abcdef"
GONE_VALUE = "e2e-gone-value-7777-zyxwvu"
LABEL = "org.runner.run-id"

SPEC = """\
name: e2e
description: end to end
on:
{on}
steps:
  - run: echo hi > file.txt && echo "token is $TOKEN" && sleep {sleep}
    container: runner-test/busybox:latest
    env:
{env}
changesetTemplate:
  title: Hi
  body: Says hi
  branch: hi
  commit:
    message: hi
"""


def spec(repos: list[str], *, sleep: float = 2, env: tuple[str, ...] = ("TOKEN",)) -> str:
    return SPEC.format(
        on="\n".join(f"  - repository: {r}" for r in repos),
        sleep=sleep,
        env="\n".join(f"      - {name}" for name in env),
    )


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = root / "coordinator-home"
        self.repos = root / "repos"
        self.logs = root / "logs"
        self.logs.mkdir()
        self.tmp = root / "executor-tmp"
        self.tmp.mkdir()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.container_jobs: list[str] = []  # whose leftover containers to remove
        self._files: list[IO[bytes]] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        base.update(
            RUNNER_POLL_INTERVAL="0.3",
            RUNNER_HEARTBEAT_INTERVAL="0.5",
            RUNNER_STALL_LIMIT="3",
            RUNNER_USER="operator",
        )
        self.base_env = base
        self.coord_env = {**base, "RUNNER_HOME": str(self.home)}

    def cli(self, *args: str, stdin: str | None = None, ok: bool = True) -> str:
        proc = subprocess.run(
            [RUNNER, *args],
            env=self.coord_env,
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            timeout=60,
            check=False,
        )
        with (self.logs / "cli.log").open("ab") as fh:
            fh.write(proc.stderr)
        if ok:
            assert proc.returncode == 0, (args, proc.stderr.decode())
        return proc.stdout.decode()

    def remote(self, *args: str, who: str = "alice", ok: bool = True) -> str:
        out = self.cli(
            *args, "--url", self.url, "--token-file", str(self.root / f"{who}.tok"), ok=ok
        )
        with (self.logs / "cli-stdout.log").open("a") as fh:
            fh.write(out)
        return out

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        err = (self.logs / f"{name}.log").open("wb")
        self._files.append(err)
        proc = subprocess.Popen(
            [RUNNER, *args], env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def start_server(self) -> None:
        self.spawn(
            "server",
            ["server", "--listen", f"127.0.0.1:{self.port}", "--repos-root", str(self.repos)],
            self.coord_env,
        )
        import httpx

        wait_for(lambda: _answers(httpx, self.url), timeout=30, what="the coordinator")

    def start_executor(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        home = self.root / f"{name}-home"
        home.mkdir()
        env = {
            **self.base_env,
            "RUNNER_HOME": str(home),
            "TMPDIR": str(self.tmp),
        }
        return self.spawn(
            name,
            [
                "executor",
                "--url",
                self.url,
                "--token-file",
                str(self.root / "exec.tok"),
                "--name",
                name,
                *extra,
            ],
            env,
        )

    def api(self) -> Any:
        from runner.queue.client import CoordinatorClient

        token = (self.root / "alice.tok").read_text().strip()
        return CoordinatorClient(url=self.url, token=token, timeout_s=10)

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Polled in-process: a CLI call per poll would be too slow to catch a step."""
        with self.api() as api:
            return {j["id"]: j for j in api.jobs_list()}

    def events(self, job_id: str) -> list[dict[str, Any]]:
        lines: list[str] = []
        with self.api() as api:
            after = 0
            while True:
                page = api.job_logs(job_id, after=after)
                if not page["chunks"]:
                    break
                lines += [ln for ch in page["chunks"] for ln in ch["text"].splitlines()]
                after = page["next"]
        return [json.loads(line) for line in lines if line.strip()]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for fh in self._files:
            fh.close()


def _answers(httpx: Any, url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200)
    except httpx.HTTPError:
        return False


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path, docker_client: Any) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        if not c.container_jobs and c.procs.get("server") and c.procs["server"].poll() is None:
            c.container_jobs = list(c.jobs())
        c.stop_all()
        for job_id in c.container_jobs:
            for container in docker_client.containers.list(
                all=True, filters={"label": f"{LABEL}={job_id}"}
            ):
                container.remove(force=True)


def run_events(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    out = cluster.remote("jobs", "logs", job_id, "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_daemons_end_to_end(cluster: Cluster, docker_client: Any) -> None:
    c = cluster
    names = [f"github.com/acme/r{i}" for i in range(4)]
    for name in names:
        make_repo(c.repos, name)
    c.cli("user", "add", "alice")
    (c.root / "alice.tok").write_text(c.cli("token", "create", "--user", "alice"))
    (c.root / "exec.tok").write_text(c.cli("token", "create", "--executor", "fleet"))
    c.cli("secret", "set", "TOKEN", "--user", "alice", stdin=TOKEN_VALUE)
    c.cli("secret", "set", "GONE", "--user", "alice", stdin=GONE_VALUE)
    specs = c.root / "specs"
    specs.mkdir()
    (specs / "main.yaml").write_text(spec(names))
    (specs / "gone.yaml").write_text(spec(names[:1], sleep=0, env=("GONE",)))
    c.start_server()

    # Queued before any executor runs; GONE is removed before anyone can claim its job.
    main_jobs = c.remote("submit", str(specs / "main.yaml"), "--namespace", "user:alice").split()
    (gone_job,) = c.remote("submit", str(specs / "gone.yaml")).split()
    assert len(main_jobs) == 4
    c.cli("secret", "rm", "GONE", "--user", "alice")

    exec_a = c.start_executor("exec-a")
    exec_b = c.start_executor("exec-b", "--max-jobs", "2")

    # Kill exec-a while its step runs.
    def a_is_running_a_step() -> bool:
        for job_id, job in c.jobs().items():
            if job["executor"] == "exec-a" and job["state"] == "processing":
                events = run_events(c, job_id)
                if any(e["event"] == "step.started" for e in events):
                    a_is_running_a_step.job = job_id  # type: ignore[attr-defined]
                    return True
        return False

    wait_for(a_is_running_a_step, timeout=60, what="exec-a to run a step")
    killed_job: str = a_is_running_a_step.job  # type: ignore[attr-defined]
    exec_a.send_signal(signal.SIGKILL)
    exec_a.wait(10)

    def main_done() -> bool:
        jobs = c.jobs()
        return all(jobs[j]["state"] in ("completed", "failed", "canceled") for j in main_jobs)

    wait_for(main_done, timeout=90, what="every job to end")
    jobs = {j["id"]: j for j in json.loads(c.remote("jobs", "list", "--json"))}
    assert [jobs[j]["state"] for j in main_jobs] == ["completed"] * 4, [
        jobs[j]["error"] for j in main_jobs
    ]
    assert jobs[killed_job]["resets"] == 1 and jobs[killed_job]["executor"] == "exec-b"
    for job_id in main_jobs:
        events = run_events(c, job_id)
        assert [e["event"] for e in events].count("run.finished") == 1, job_id
        shown = json.loads(c.remote("jobs", "show", job_id, "--json"))
        (changeset,) = shown["result"]["changesets"]
        assert changeset["headRef"] == "refs/heads/hi"
        assert "+hi" in changeset["commits"][0]["diff"]
        outputs = [e["line"] for e in events if e["event"] == "step.output"]
        assert "token is [REDACTED:TOKEN]" in outputs
    assert jobs[gone_job]["state"] == "failed"
    gone_error = json.loads(c.remote("jobs", "show", gone_job, "--json"))["error"]
    assert "GONE" in gone_error and "removed after it was submitted" in gone_error

    # Graceful drain: exec-b finishes the job it runs, then exits 0.
    (specs / "drain.yaml").write_text(spec(names[:1], sleep=3))
    (drain_job,) = c.remote("submit", str(specs / "drain.yaml")).split()
    wait_for(lambda: c.jobs()[drain_job]["state"] == "processing", timeout=30, what="the drain job")
    exec_b.send_signal(signal.SIGTERM)
    assert exec_b.wait(60) == 0
    assert c.jobs()[drain_job]["state"] == "completed"

    # A user's cancel stops a running job within a heartbeat; then an idle executor
    # stops at once on SIGTERM.
    exec_c = c.start_executor("exec-c")
    (specs / "long.yaml").write_text(spec(names[:1], sleep=60))
    (long_job,) = c.remote("submit", str(specs / "long.yaml")).split()
    wait_for(
        lambda: any(e["event"] == "step.started" for e in c.events(long_job)),
        timeout=30,
        what="the long step to start",
    )
    asked = time.monotonic()
    assert "cancel requested" in c.remote("jobs", "cancel", long_job)
    wait_for(lambda: c.jobs()[long_job]["state"] == "canceled", timeout=10, what="cancel")
    assert time.monotonic() - asked < 6
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}={long_job}"})
    time.sleep(1)
    began = time.monotonic()
    exec_c.send_signal(signal.SIGTERM)
    assert exec_c.wait(10) == 0
    assert time.monotonic() - began < 5

    # Executors kept nothing of their own.
    for name in ("exec-a", "exec-b", "exec-c"):
        assert list((c.root / f"{name}-home").iterdir()) == []

    # Audit: one `accessed` event per secret per claim, naming the job and executor.
    audit = json.loads(c.cli("secret", "log", "--user", "alice", "--json"))
    accessed = [e for e in audit if e["event"] == "accessed"]
    jobs = c.jobs()
    for job_id in [*main_jobs, drain_job, long_job]:
        mine = [e for e in accessed if e["job"] == job_id]
        assert len(mine) == jobs[job_id]["attempts"], job_id
        assert all(e["name"] == "TOKEN" and e["actor"].startswith("executor:") for e in mine)
    assert len([e for e in accessed if e["job"] == killed_job]) == 2
    assert not [e for e in accessed if e["name"] == "GONE"]

    # Leak scan: database files, every process's log, the job logs.
    api_logs = b"".join(
        c.remote("jobs", "logs", j, "--json").encode() for j in [*main_jobs, gone_job, drain_job]
    )
    c.container_jobs = list(c.jobs())
    c.procs["server"].send_signal(signal.SIGTERM)
    assert c.procs["server"].wait(20) == 0
    scanned = {p.name: p.read_bytes() for p in c.home.glob("runner.db*")}
    scanned.update({p.name: p.read_bytes() for p in c.logs.iterdir()})
    scanned["api-job-logs"] = api_logs
    assert scanned["server.log"] and scanned["exec-b.log"]
    for value in (TOKEN_VALUE, GONE_VALUE):
        found = {name: leaks(value, data) for name, data in scanned.items()}
        assert {k: v for k, v in found.items() if v} == {}
