"""Coordinator throughput: claim-and-complete cycles per second, and what they cost.

A real ``runner server`` subprocess on 127.0.0.1 per backend (SQLite in its
``RUNNER_HOME``; PostgreSQL in a fresh database of the server named by
``RUNNER_TEST_POSTGRES_URL``). Each round first queues trivial jobs (a spec
without steps over one repository with many workspaces), then 8 executor
threads drain the queue, three ways on the same database: over HTTP as
``runner executor`` does it (each thread its own keep-alive connection; one
claim, then each job's completion claims the next in the same request, until
no job comes back: one request per job); in-process, through the same
``Coordinator`` the server runs (claim, then complete: two service calls per
job, the same two the server makes for a complete-and-claim); and in raw SQL
(one ``UPDATE … RETURNING`` claims, one ``UPDATE`` completes). On PostgreSQL a
fourth drain spreads the HTTP clients over two replicas. Each figure is completed
jobs over the wall time of its drain; the ratios are taken within a round; the
backends alternate round by round, and the median round counts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

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
def serve(
    box: Sandbox, backend: str, env: dict[str, str], log: Path, *, tokens: Server | None = None
) -> Iterator[Server]:
    """A `runner server` on ``env``'s state; ``tokens``: a replica using that one's tokens."""
    if tokens is not None:
        user, executor = tokens.user_token, tokens.executor_token
    else:
        user = timed([RUNNER, "token", "create", "--user", USER], env).proc.stdout.strip()
        executor = timed(
            [RUNNER, "token", "create", "--executor", "bench"], env
        ).proc.stdout.strip()
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


class LoadClient:
    """One executor's keep-alive connection: HTTP/1.1 written and read by hand.

    The load generator shares the coordinator's cores, so it must cost little: httpx
    spent 2.3-2.8 ms of CPU per claim-and-complete, as much as the coordinator itself
    (3 ms), and the figure measured the client half of the time; the standard
    library's ``http.client`` still spent 0.25-0.3 ms a job (a response object and an
    email-parser pass over the headers per answer) when the server spent 0.5. Real
    executors run elsewhere. This one sends the same requests (a ``Content-Length``
    body, keep-alive) and reads answers the server sends with a ``Content-Length`` or
    none (204); anything else is a ``BenchError``.
    """

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 80
        self._sock = socket.create_connection((host, port), timeout=60)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._answers = self._sock.makefile("rb")
        self._headers = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        )

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer (None for 204); a BenchError for any error status."""
        data = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\n{self._headers}Content-Length: {len(data)}\r\n\r\n"
        self._sock.sendall(head.encode() + data)
        status_line = self._answers.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise BenchError(f"POST {path}: no HTTP answer ({status_line[:100]!r})")
        status, length = int(parts[1]), 0
        while (line := self._answers.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" or (
                name == b"connection" and value.strip().lower() == b"close"
            ):
                raise BenchError(f"POST {path}: unexpected {line.strip()!r}")
        answer = self._answers.read(length) if length else b""
        if status >= 400:
            raise BenchError(f"POST {path}: {status} {answer[:300]!r}")
        return json.loads(answer) if answer else None

    def close(self) -> None:
        self._answers.close()
        self._sock.close()


def _timed(
    worker: Callable[[int], None],
    ready: threading.Barrier,
    done: list[int],
    errors: list[str],
    what: str,
) -> Drain:
    """Run ``worker(i)`` on a thread per client; the clock starts once all pass ``ready``."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(done))]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise BenchError(f"{what} failed: {errors[0][:300]}")
    return Drain(sum(done), seconds)


def drain(server: Server, clients: int = CLIENTS) -> Drain:
    """``clients`` executor threads drain the queue as ``runner executor`` does: one claim,
    then each completion asks for the next job (``"claim"`` in its body) until none comes."""
    ready = threading.Barrier(clients + 1)
    done = [0] * clients
    errors: list[str] = []

    def worker(index: int) -> None:
        name = f"bench-{index}"
        client = LoadClient(server.url, server.executor_token)
        try:
            try:
                # Open the keep-alive connection before the clock starts.
                client.post("/api/executor/heartbeat", {"executor": name, "jobs": []})
            finally:
                ready.wait()
            claim = {"executor": name}
            job = client.post("/api/executor/claim", claim)
            while job is not None:
                job = client.post(
                    f"/api/executor/jobs/{job['job']['id']}/complete",
                    {"lease": job["lease"], "result": RESULT, "claim": claim},
                )
                done[index] += 1
        except (BenchError, OSError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()

    return _timed(worker, ready, done, errors, "an executor client")


# In-process and raw SQL: the floors the HTTP figure is measured against ------------------


class InProcess:
    """The same ``Coordinator`` class the server runs, on the server's database, in this
    process: claim and complete called directly from ``CLIENTS`` threads (no HTTP)."""

    def __init__(self, box: Sandbox, env: dict[str, str], server: Server) -> None:
        from runner.config import Settings
        from runner.log import configure_logging
        from runner.namespaces import parse_namespace
        from runner.queue.policies import SqlPolicyStore
        from runner.queue.service import Coordinator, CoordinatorSettings
        from runner.queue.store import SqlJobStore
        from runner.queue.tokens import SqlTokenStore
        from runner.secrets import open_store
        from runner.users.sql import SqlUserDirectory

        settings = Settings(
            home=Path(env["RUNNER_HOME"]), database_url=env.get("RUNNER_DATABASE_URL")
        )
        self.store = open_store(settings)
        db = self.store.db
        self.db_url = settings.effective_database_url
        self.coordinator = Coordinator(
            jobs=SqlJobStore(db),
            tokens=SqlTokenStore(db),
            secrets=self.store,
            users=SqlUserDirectory(db),
            settings=CoordinatorSettings(repos_root=box.repos.resolve()),
            cache=None,
            policies=SqlPolicyStore(db),
        )
        self.user = self.coordinator.authenticate(server.user_token)
        self.executor = self.coordinator.authenticate(server.executor_token)
        self.namespace = parse_namespace(f"user:{USER}")
        # The server's logging chain (JSON lines into a file, as `runner server` writes
        # them here): the same cost per line, and no job lines on the bench's stdout.
        self._log = (box.root / f"inprocess-{server.backend}.log").open("w")
        configure_logging(fmt="json", stream=self._log)

    def close(self) -> None:
        self.store.close()
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "stream", None) is self._log:
                logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
        self._log.close()

    def fill(self, spec: Path, jobs: int) -> None:
        from runner.queue.bundle import Bundle

        bundle = Bundle.from_spec_file(spec).to_json()
        queued = 0
        while queued < jobs:
            _, records = self.coordinator.submit(self.user, bundle=bundle, namespace=self.namespace)
            queued += len(records)

    def settle(self) -> None:
        """On SQLite, the filling's pages moved from the WAL into the database before a
        drain is timed. Left there, the first claims crossing the checkpoint threshold
        copied them inside the clock: a fixed 20 ms that made a 600-job raw SQL drain
        (80 ms) a quarter slower and the in-process ratio look better than it was."""
        if self.db_url.startswith("sqlite:"):
            self.store.db.once("PRAGMA wal_checkpoint(TRUNCATE)")

    def drain(self) -> Drain:
        """The service calls the HTTP executors' requests make (``api.complete_answer``):
        a claim, then each job's completion and the next claim in one turn."""
        c = self.coordinator
        started = threading.local()

        def cycle(name: str) -> bool:
            claimed = (
                c.claim(self.executor, executor=name)
                if not hasattr(started, "job")
                else started.job
            )
            if claimed is None:
                return False
            lease = claimed.lease
            with c.turn():
                c.complete(self.executor, lease.job.id, lease=lease.token, result=RESULT)
                started.job = c.claim(self.executor, executor=name)
            return True

        return _threads(cycle)

    def drain_raw(self) -> Drain:
        """The floor: one ``UPDATE … RETURNING`` claims, one ``UPDATE`` completes, each
        thread on its own connection in autocommit, nothing else (no lease check, no
        secrets, no plan); on SQLite with a busy timeout and runner's pragmas."""
        floor = RawSql(self.db_url)
        try:
            return _threads(floor.cycle, prepare=floor.connect)
        finally:
            floor.close()


class RawSql:
    """The raw SQL floor's connections and cycle. Each thread connects before the clock
    starts, as the in-process coordinator's connection and the HTTP clients' are open
    by then: connecting inside the clock (as the first version did) made the floor a
    sixth slower on a 600-job round and its ratio look better than it was."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._postgres = not url.startswith("sqlite:")
        self._local = threading.local()
        self._opened: list[Any] = []
        self._guard = threading.Lock()
        lock = " FOR UPDATE SKIP LOCKED" if self._postgres else ""
        mark = "%s" if self._postgres else "?"
        self._claim = (
            f"UPDATE runner_jobs SET state = 'processing', executor = {mark},"  # noqa: S608
            f" attempts = attempts + 1, lease_hash = {mark}, heartbeat_at = {mark}"
            " WHERE seq = (SELECT seq FROM runner_jobs WHERE state = 'queued'"
            f" ORDER BY seq LIMIT 1{lock}) RETURNING id"
        )
        self._complete = (
            f"UPDATE runner_jobs SET state = 'completed', result = {mark},"  # noqa: S608
            f" finished_at = {mark} WHERE id = {mark}"
        )
        self._result = json.dumps(RESULT)

    def connect(self) -> None:
        """This thread's connection (called by each thread before the clock starts)."""
        import sqlite3

        import psycopg

        from runner.db import sqlite_path

        if self._postgres:
            conn: Any = psycopg.connect(self._url, autocommit=True)
        else:
            conn = sqlite3.connect(
                sqlite_path(self._url),
                isolation_level=None,
                timeout=30,
                check_same_thread=False,
            )
            # The durability runner's own connection has (db.py): the default, FULL,
            # syncs the WAL at every commit and made this floor ten times slower.
            conn.execute("PRAGMA synchronous = NORMAL")
        # The schema read now, not by the first claim inside the clock.
        conn.execute("SELECT seq FROM runner_jobs WHERE seq < 0").fetchall()
        self._local.conn = conn
        with self._guard:
            self._opened.append(conn)

    def cycle(self, name: str) -> bool:
        conn = self._local.conn
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        row = conn.execute(self._claim, (name, uuid.uuid4().hex, now)).fetchone()
        if row is None:
            return False
        conn.execute(self._complete, (self._result, now, row[0]))
        return True

    def close(self) -> None:
        for conn in self._opened:
            conn.close()
        self._opened.clear()


def _threads(
    cycle: Any, clients: int = CLIENTS, *, prepare: Callable[[], None] | None = None
) -> Drain:
    """``clients`` threads call ``cycle(name)`` until it answers False; each calls
    ``prepare()`` first, before the clock starts."""
    ready = threading.Barrier(clients + 1)
    done = [0] * clients
    errors: list[str] = []

    def worker(index: int) -> None:
        try:
            try:
                if prepare is not None:
                    prepare()
            finally:
                ready.wait()
            while cycle(f"bench-{index}"):
                done[index] += 1
        except Exception as exc:  # reported as the bench's failure
            errors.append(f"{type(exc).__name__}: {exc}")

    return _timed(worker, ready, done, errors, "an in-process client")


@dataclass
class Backend:
    name: str
    server: Server
    local: InProcess
    replica: Server | None = None  # a second `runner server` on the same database


def _measure(backend: Backend, spec: Path, jobs: int) -> dict[str, Drain]:
    """One round on one backend: HTTP, in-process, raw SQL (and two replicas)."""
    out: dict[str, Drain] = {}
    local = backend.local
    fill(backend.server, spec, jobs)
    local.settle()
    out["http"] = drain(backend.server)
    local.fill(spec, jobs)
    local.settle()
    out["inprocess"] = local.drain()
    local.fill(spec, jobs)
    local.settle()
    out["raw_sql"] = local.drain_raw()
    if backend.replica is not None:
        fill(backend.server, spec, jobs)
        local.settle()
        out["two_replicas"] = drain_spread([backend.server, backend.replica])
    for what, result in out.items():
        if result.jobs < jobs:
            raise BenchError(f"{backend.name} {what}: {result.jobs} of {jobs} jobs were claimed")
    return out


def drain_spread(servers: list[Server], clients: int = CLIENTS) -> Drain:
    """Like ``drain``, the clients spread over several replicas of one coordinator."""
    parts: list[Drain] = []
    lock = threading.Lock()
    share = clients // len(servers)

    def one(server: Server) -> None:
        result = drain(server, share)
        with lock:
            parts.append(result)

    threads = [threading.Thread(target=one, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Drain(sum(p.jobs for p in parts), max(p.seconds for p in parts))


def run(
    quick: bool = False, *, postgres_url: str | None = None, require_services: bool = False
) -> dict[str, Any]:
    min_rounds, max_rounds = (2, 2) if quick else (3, 5)
    jobs = 200 if quick else 3000
    notes: dict[str, str] = {}
    if postgres_url is None:
        if require_services:
            raise BenchError("RUNNER_TEST_POSTGRES_URL is not set (make bench starts PostgreSQL)")
        notes["coordinator_claims_per_s"] = (
            "PostgreSQL not measured: RUNNER_TEST_POSTGRES_URL was not set (make bench sets it)"
        )
    figures: dict[str, dict[str, list[float]]] = {}
    drains: dict[str, dict[str, list[Drain]]] = {}
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
        backends: list[Backend] = []
        sqlite_env = runner_env(box.root / "home-sqlite", TMPDIR=str(box.tmp))
        server = stack.enter_context(serve(box, "sqlite", sqlite_env, box.root / "s.log"))
        local = InProcess(box, sqlite_env, server)
        stack.callback(local.close)
        backends.append(Backend("sqlite", server, local))
        if postgres_url is not None:
            db_url = stack.enter_context(postgres_database(postgres_url))
            pg_env = runner_env(
                box.root / "home-postgresql", TMPDIR=str(box.tmp), RUNNER_DATABASE_URL=db_url
            )
            server = stack.enter_context(serve(box, "postgresql", pg_env, box.root / "p.log"))
            replica = stack.enter_context(
                serve(box, "postgresql", pg_env, box.root / "p2.log", tokens=server)
            )
            local = InProcess(box, pg_env, server)
            stack.callback(local.close)
            backends.append(Backend("postgresql", server, local, replica))
        for backend in backends:  # warm-up: imports, plans, connections, prepared statements
            _measure(backend, spec, WORKSPACES_PER_SUBMISSION)
        progress(
            f"coordinator: rounds of {jobs} jobs, {CLIENTS} clients, over HTTP, in-process and "
            f"raw SQL on {', '.join(b.name for b in backends)}"
        )
        r = 0
        while r < max_rounds:
            order = backends[r % len(backends) :] + backends[: r % len(backends)]
            for backend in order:
                out = _measure(backend, spec, jobs)
                kept = drains.setdefault(backend.name, {})
                for what, result in out.items():
                    kept.setdefault(what, []).append(result)
                mine = figures.setdefault(backend.name, {})
                mine.setdefault("http", []).append(out["http"].per_s)
                mine.setdefault("http_vs_inprocess", []).append(
                    out["http"].per_s / out["inprocess"].per_s
                )
                mine.setdefault("inprocess_vs_raw_sql", []).append(
                    out["inprocess"].per_s / out["raw_sql"].per_s
                )
                if "two_replicas" in out:
                    mine.setdefault("two_replicas", []).append(out["two_replicas"].per_s)
            r += 1
            if r >= min_rounds and all(
                relative_spread(v) <= 0.15 for f in figures.values() for v in f.values()
            ):
                break
    claims: dict[str, float | None] = {"sqlite": None, "postgresql": None}
    http_vs: dict[str, float | None] = {"sqlite": None, "postgresql": None}
    raw_vs: dict[str, float | None] = {"sqlite": None, "postgresql": None}
    for name, f in figures.items():
        claims[name] = round(median(f["http"]), 1)
        http_vs[name] = round(median(f["http_vs_inprocess"]), 3)
        raw_vs[name] = round(median(f["inprocess_vs_raw_sql"]), 3)
        if "two_replicas" in f:
            claims[f"{name}_two_replicas"] = round(median(f["two_replicas"]), 1)
    return {
        "coordinator_claims_per_s": claims,
        "coordinator_http_vs_inprocess": http_vs,
        "coordinator_inprocess_vs_raw_sql": raw_vs,
        "notes": notes,
        "details": {
            "load_before": load,
            "load_after": load_average(),
            **{
                backend: {
                    "jobs": jobs,
                    "clients": CLIENTS,
                    "wall_s": [round(d.seconds, 3) for d in values["http"]],
                    "per_s": {what: [round(d.per_s, 1) for d in ds] for what, ds in values.items()},
                }
                for backend, values in drains.items()
            },
        },
    }
