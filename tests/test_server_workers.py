"""`runner server --workers N`: N processes on one listening socket, each a coordinator
replica on the same PostgreSQL; SQLite refuses more than one.

Real `runner server` processes: the parent binds, forks its workers and supervises them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.queue.bundle import Bundle
from tests.attack_support import wait_for
from tests.helpers import RUNNER, make_repo, run_runner, runner_env
from tests.test_queue_support import free_port, fresh_postgres_database

JOBS = 60
CLIENTS = 8
RESULT = {"status": "unchanged", "changesets": [], "outputs": {}, "steps_run": 0}
SPEC = (
    "name: workers\non:\n  - repository: github.com/acme/mono\n"
    "workspaces:\n  - rootAtLocationOf: job.txt\nsteps: []\n"
)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class Server:
    def __init__(self, env: dict[str, str], *args: str, session: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(env["RUNNER_HOME"]) / f"server-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [RUNNER, "server", "--listen", f"127.0.0.1:{self.port}", "--repos-root", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                start_new_session=session,  # a process group of its own, as in a terminal
            )

        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=90, what="the coordinator", every=0.1)
        wait_for(lambda: len(children(self.proc.pid)) == 2, timeout=30, what="two workers")
        self.workers = children(self.proc.pid)
        # The metric files the workers have mapped: one directory for the server.
        self.metrics_dirs = {
            Path(line.split()[-1]).parent
            for pid in self.workers
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if "runner-server-metrics-" in line
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def pg_env(postgres_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/mono", {f"d{i:02d}/job.txt": "x" for i in range(JOBS)})
    with fresh_postgres_database(postgres_url) as db:
        yield runner_env(tmp_path / "home", RUNNER_DATABASE_URL=db), repos


def token(env: dict[str, str], *args: str) -> str:
    proc = run_runner(["token", "create", *args], env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def drain(url: str, executor_token: str) -> tuple[list[str], list[str]]:
    """CLIENTS executors claim and complete until the queue is empty: (job ids, errors)."""
    done: list[str] = []
    errors: list[str] = []

    def client(index: int) -> None:
        claim = {"executor": f"e{index}"}
        headers = {"Authorization": f"Bearer {executor_token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            try:
                answer = http.post("/api/executor/claim", json=claim)
                while answer.status_code == 200 and answer.content not in (b"", b"null"):
                    job = answer.json()
                    done.append(job["job"]["id"])
                    answer = http.post(
                        f"/api/executor/jobs/{job['job']['id']}/complete",
                        json={"lease": job["lease"], "result": RESULT, "claim": claim},
                    )
                if answer.status_code not in (200, 204):
                    errors.append(f"{answer.status_code}: {answer.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return done, errors


def metric(text: str, name: str, label: str) -> float:
    found = re.search(rf"^{name}\{{{label}\}} (\S+)$", text, re.M)
    assert found is not None, text
    return float(found.group(1))


@pytest.mark.postgres
def test_two_workers_share_the_queue_and_the_metrics_and_stop_together(
    pg_env: tuple[dict[str, str], Path],
) -> None:
    env, repos = pg_env
    user = token(env, "--user", "alice")
    executor = token(env, "--executor", "e")
    server = Server(env, str(repos), "--workers", "2")
    try:
        workers = server.workers
        (metrics_dir,) = server.metrics_dirs
        assert metrics_dir.is_dir()
        spec = repos.parent / "spec.yaml"
        spec.write_text(SPEC)
        body = {"namespace": "user:alice", "bundle": Bundle.from_spec_file(spec).to_json()}
        headers = {"Authorization": f"Bearer {user}"}
        answer = httpx.post(server.url + "/api/submissions", json=body, headers=headers, timeout=60)
        assert answer.status_code == 201, answer.text

        done, errors = drain(server.url, executor)

        assert errors == []
        assert len(done) == JOBS and set(Counter(done).values()) == {1}  # each job once
        jobs = httpx.get(server.url + "/api/jobs", headers=headers, timeout=30).json()
        assert sorted(j["id"] for j in jobs) == sorted(done)
        assert {j["state"] for j in jobs} == {"completed"}
        # Whichever worker answers a scrape, it counts the jobs of both.
        for _ in range(6):
            text = httpx.get(server.url + "/metrics", timeout=30).text
            assert metric(text, "runner_claims_total", 'result="claimed"') == JOBS
            assert metric(text, "runner_job_outcomes_total", 'outcome="completed"') == JOBS
            assert metric(text, "runner_jobs", 'state="completed"') == JOBS
        assert all(alive(pid) for pid in workers)

        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.log.read_text()
        assert not any(alive(pid) for pid in workers)
        assert not metrics_dir.exists()
    finally:
        server.stop()


@pytest.mark.postgres
def test_workers_end_with_a_killed_server_and_a_dead_worker_stops_it(
    pg_env: tuple[dict[str, str], Path],
) -> None:
    env, repos = pg_env
    killed = Server(env, str(repos), "--workers", "2")
    try:
        killed.proc.kill()  # SIGKILL: the parent cleans nothing up; the kernel tells them
        killed.proc.wait(10)
        wait_for(
            lambda: not any(alive(pid) for pid in killed.workers),
            timeout=30,
            what="the workers of a killed server to end",
        )
    finally:
        killed.stop()
    server = Server(env, str(repos), "--workers", "2")
    try:
        # The next server removes the metrics a killed one could not.
        assert killed.metrics_dirs and not any(p.exists() for p in killed.metrics_dirs)
        os.kill(server.workers[0], signal.SIGKILL)
        assert server.proc.wait(30) == 1
        assert not any(alive(pid) for pid in server.workers)
        assert not any(p.exists() for p in server.metrics_dirs)
        assert f"coordinator worker {server.workers[0]} was killed by signal 9" in (
            server.log.read_text()
        )
    finally:
        server.stop()


@pytest.mark.postgres
def test_ctrl_c_stops_the_server_and_its_workers_gracefully(
    pg_env: tuple[dict[str, str], Path],
) -> None:
    env, repos = pg_env
    server = Server(env, str(repos), "--workers", "2", session=True)
    try:
        (metrics_dir,) = server.metrics_dirs
        # A terminal's Ctrl-C: SIGINT to every process of the foreground group at once,
        # the supervisor and its workers alike.
        os.killpg(server.proc.pid, signal.SIGINT)
        assert server.proc.wait(30) == 0, server.log.read_text()
        assert not any(alive(pid) for pid in server.workers)
        assert not metrics_dir.exists()
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()


def test_sqlite_refuses_more_than_one_worker(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "home")
    flag = run_runner(["server", "--workers", "2", "--listen", "127.0.0.1:0"], env)
    setting = run_runner(
        ["server", "--listen", "127.0.0.1:0"], {**env, "RUNNER_SERVER_WORKERS": "3"}
    )

    for proc, asked in ((flag, 2), (setting, 3)):
        assert proc.returncode != 0
        assert f"--workers {asked} needs PostgreSQL: a SQLite database has one writer" in (
            proc.stderr
        )


# A supervisor with two forked workers that ignore SIGTERM: one of them ends by itself
# (or a stop signal comes), and the supervisor must still come back, the other killed.
_STUBBORN = """
import ctypes, os, signal, sys, threading, time
import runner.queue.server as server
server.WORKER_STOP_S = 0.5

def worker(exit_after):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # gone with the test's process, if it fails
        time.sleep(exit_after)
        os._exit(3)
    return pid

stubborn = worker(600)
if sys.argv[1] == "dies":
    dying = worker(0.3)
    print(server._supervise({stubborn, dying}) == (dying, 3))
else:
    other = worker(600)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    print(server._supervise({stubborn, other}) is None)
try:
    os.kill(stubborn, 0)
    print("alive")
except ProcessLookupError:
    print("gone")
"""


@pytest.mark.parametrize("how", ["dies", "stopped"])
def test_a_worker_that_ignores_its_stop_does_not_hold_the_server(how: str) -> None:
    import sys

    # The timeout is the assertion: a supervisor waiting for that worker never returns.
    done = subprocess.run(
        [sys.executable, "-c", _STUBBORN, how], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["True", "gone"]  # after the log lines
