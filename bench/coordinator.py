"""Coordinator throughput: claim-and-complete cycles per second over HTTP.

A real ``runner server`` subprocess on 127.0.0.1 per backend (SQLite in its
``RUNNER_HOME``; PostgreSQL in a fresh database of the server named by
``RUNNER_TEST_POSTGRES_URL``). Each round first queues trivial jobs (a spec
without steps over one repository with many workspaces, submitted through the
user API), then 8 executor threads, each with its own httpx client and
keep-alive connection, loop claim → complete until the queue answers 204.
The figure is completed jobs over the wall time of that drain; the backends
alternate round by round, and the median round counts.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bench.common import (
    RUNNER,
    USER,
    BenchError,
    Sandbox,
    load_average,
    median,
    progress,
    relative_spread,
    runner_env,
    timed,
)

CLIENTS = 8
WORKSPACES_PER_SUBMISSION = 100
RESULT = {
    "status": "unchanged",
    "changesets": [],
    "outputs": {},
    "steps_run": 0,
    "steps_cached": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    backend: str
    url: str
    user_token: str
    executor_token: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``, dropped afterwards."""
    import psycopg

    name = f"runner_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def serve(box: Sandbox, backend: str, env: dict[str, str], log: Path) -> Iterator[Server]:
    user = timed([RUNNER, "token", "create", "--user", USER], env).proc.stdout.strip()
    executor = timed([RUNNER, "token", "create", "--executor", "bench"], env).proc.stdout.strip()
    port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                RUNNER,
                "server",
                "--listen",
                f"127.0.0.1:{port}",
                "--repos-root",
                str(box.repos),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    server = Server(backend, f"http://127.0.0.1:{port}", user, executor, proc)
    try:
        _wait_ready(server, log)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_ready(server: Server, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {server.user_token}"}
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"runner server ({server.backend}) exited: {' | '.join(tail)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + "/api/whoami", headers=headers, timeout=2).is_success:
                return
        time.sleep(0.1)
    raise BenchError(f"runner server ({server.backend}) did not answer within {timeout_s:g} s")


def fill(server: Server, spec: Path, jobs: int) -> None:
    """Queue ``jobs`` trivial jobs through the user API."""
    from runner.queue.bundle import Bundle

    body = {"namespace": f"user:{USER}", "bundle": Bundle.from_spec_file(spec).to_json()}
    headers = {"Authorization": f"Bearer {server.user_token}"}
    queued = 0
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        while queued < jobs:
            answer = http.post("/api/submissions", json=body)
            if answer.status_code != 201:
                raise BenchError(f"submitting failed ({answer.status_code}): {answer.text[:300]}")
            queued += len(answer.json()["jobs"])


@dataclass(frozen=True)
class Drain:
    jobs: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.jobs / self.seconds


def drain(server: Server, clients: int = CLIENTS) -> Drain:
    """``clients`` executor threads claim and complete until the queue is empty."""
    ready = threading.Barrier(clients + 1)
    done = [0] * clients
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {server.executor_token}"}

    def worker(index: int) -> None:
        name = f"bench-{index}"
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            try:
                # Open the keep-alive connection before the clock starts.
                http.post("/api/executor/heartbeat", json={"executor": name, "jobs": []})
            finally:
                ready.wait()
            try:
                while True:
                    claimed = http.post("/api/executor/claim", json={"executor": name})
                    if claimed.status_code == 204:
                        return
                    claimed.raise_for_status()
                    job = claimed.json()
                    answer = http.post(
                        f"/api/executor/jobs/{job['job']['id']}/complete",
                        json={"lease": job["lease"], "result": RESULT},
                    )
                    answer.raise_for_status()
                    done[index] += 1
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise BenchError(f"an executor client failed: {errors[0][:300]}")
    return Drain(sum(done), seconds)


def run(
    quick: bool = False, *, postgres_url: str | None = None, require_services: bool = False
) -> dict[str, Any]:
    min_rounds, max_rounds = (2, 2) if quick else (3, 5)
    jobs = 200 if quick else 600
    notes: dict[str, str] = {}
    if postgres_url is None:
        if require_services:
            raise BenchError("RUNNER_TEST_POSTGRES_URL is not set (make bench starts PostgreSQL)")
        notes["coordinator_claims_per_s"] = (
            "PostgreSQL not measured: RUNNER_TEST_POSTGRES_URL was not set (make bench sets it)"
        )
    rates: dict[str, list[float]] = {}
    drains: dict[str, list[Drain]] = {}
    load = load_average()
    with Sandbox("coordinator") as box, contextlib.ExitStack() as stack:
        box.repo(
            "github.com/bench/mono",
            {f"svc-{i:03d}/job.txt": f"{i}\n" for i in range(WORKSPACES_PER_SUBMISSION)},
        )
        spec = box.specs / "trivial.batch.yaml"
        spec.write_text(
            "name: trivial\non:\n  - repository: github.com/bench/mono\n"
            "workspaces:\n  - rootAtLocationOf: job.txt\nsteps: []\n"
        )
        servers: list[Server] = []
        sqlite_home = box.root / "home-sqlite"
        sqlite_env = runner_env(sqlite_home, TMPDIR=str(box.tmp))
        servers.append(stack.enter_context(serve(box, "sqlite", sqlite_env, box.root / "s.log")))
        if postgres_url is not None:
            db_url = stack.enter_context(postgres_database(postgres_url))
            pg_env = runner_env(
                box.root / "home-postgresql", TMPDIR=str(box.tmp), RUNNER_DATABASE_URL=db_url
            )
            servers.append(
                stack.enter_context(serve(box, "postgresql", pg_env, box.root / "p.log"))
            )
        for server in servers:  # warm-up: imports, plans, connections
            fill(server, spec, WORKSPACES_PER_SUBMISSION)
            drain(server)
        progress(
            f"coordinator: rounds of {jobs} jobs, {CLIENTS} clients, "
            f"on {', '.join(s.backend for s in servers)}"
        )
        r = 0
        while r < max_rounds:
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for server in order:
                fill(server, spec, jobs)
                result = drain(server)
                if result.jobs < jobs:
                    raise BenchError(
                        f"{server.backend}: {result.jobs} of {jobs} queued jobs were claimed"
                    )
                drains.setdefault(server.backend, []).append(result)
                rates.setdefault(server.backend, []).append(result.per_s)
            r += 1
            if r >= min_rounds and all(relative_spread(v) <= 0.15 for v in rates.values()):
                break
    figure: dict[str, float | None] = {"sqlite": None, "postgresql": None}
    for backend, values in rates.items():
        figure[backend] = round(median(values), 1)
    return {
        "coordinator_claims_per_s": figure,
        "notes": notes,
        "details": {
            "load_before": load,
            "load_after": load_average(),
            **{
                backend: {
                    "jobs": jobs,
                    "clients": CLIENTS,
                    "wall_s": [round(d.seconds, 3) for d in values],
                    "per_s": [round(d.per_s, 1) for d in values],
                }
                for backend, values in drains.items()
            },
        },
    }
