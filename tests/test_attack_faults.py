"""Injected faults: what breaks under runner, and what it does then.

Local: the Docker engine SIGKILLed during a step (a private dockerd, restarted
afterwards), a full disk under the workspace (a 2 MiB tmpfs as TMPDIR), a
SQLite database locked by another process, a PostgreSQL server restarted under
the coordinator (a private server), wrong and corrupt master keys, tampered
ciphertexts. Distributed: an executor SIGKILLed mid-job, the coordinator
SIGKILLed and restarted mid-job, the engine under an executor killed during a
step. The memory-limit kill is in test_attack_limits.py.

Every failure must come as a clear one-line error (exit 1 for a command, exit
3 for a run whose workspace failed), never a traceback, and leave nothing
behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.attack_support import (
    RUN_LABEL,
    RUNNER,
    TEST_IMAGE,
    Cluster,
    Dockerd,
    base_env,
    events_of,
    private_dockerd,
    private_postgres,
    run_cli,
    runner_temp_leftovers,
    wait_for,
)
from tests.helpers import make_repo

# Starlette's TestClient asks for a package we do not use; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TAIL = "changesetTemplate: {title: t, body: b, branch: b, commit: {message: m}}\n"
VALUE = "fault-secret-value-0123456789"


def spec_file(
    folder: Path, name: str, script: str, *, env: str = "", repo: str = "github.com/acme/app"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    env_block = f"    env: [{env}]\n" if env else ""
    path.write_text(
        f"name: {name}\non:\n  - repository: {repo}\nsteps:\n"
        f"  - run: {json.dumps(script)}\n    container: {TEST_IMAGE}\n{env_block}" + TAIL
    )
    return path


@pytest.fixture
def local(tmp_path: Path) -> dict[str, Any]:
    """A home, a TMPDIR and one repository for `runner run`."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    env = base_env(RUNNER_HOME=str(tmp_path / "home"), TMPDIR=str(tmp), RUNNER_USER="alice")
    return {"env": env, "tmp": tmp, "repos": repos, "root": tmp_path}


def run_args(local: dict[str, Any], spec: Path, out: str = "out") -> list[str]:
    return [
        "run",
        str(spec),
        "--repos-root",
        str(local["repos"]),
        "--out",
        str(local["root"] / out),
        "--json",
    ]


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# == The Docker engine dies during a step =======================================================


@pytest.fixture(scope="module")
def engine() -> Iterator[Dockerd]:
    with private_dockerd() as d:
        yield d


def _kill_engine_mid_step(
    engine: Dockerd, local: dict[str, Any]
) -> tuple[subprocess.CompletedProcess[str], float]:
    spec = spec_file(
        local["root"] / "specs", "engine", "touch /work/started; sleep 60; echo done > done.txt"
    )
    env = {**local["env"], "DOCKER_HOST": engine.host}
    proc = subprocess.Popen(
        [RUNNER, *run_args(local, spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: bool(list(local["tmp"].glob("runner-ws-*/repo/started"))),
            timeout=60,
            what="the step",
        )
        engine.kill()
        killed = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.start()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), took


@pytest.mark.docker
@pytest.mark.slow
def test_engine_killed_during_a_step_fails_the_workspace_clearly(
    engine: Dockerd, local: dict[str, Any]
) -> None:
    proc, took = _kill_engine_mid_step(engine, local)
    assert proc.returncode == 3, proc.stderr
    assert took < 30
    assert "Traceback" not in proc.stderr
    (finished,) = [e for e in events_of(proc.stdout) if e["event"] == "workspace.finished"]
    assert finished["status"] == "failed"
    assert "the Docker engine failed" in finished["error"]
    assert "check that the Docker engine is running" in finished["error"]
    summary = json.loads((local["root"] / "out" / "summary.json").read_text())
    assert summary["counts"]["failed"] == 1
    assert runner_temp_leftovers(local["tmp"]) == []
    # The engine is back: the next run works.
    ok = spec_file(local["root"] / "specs", "after", "echo back > back.txt")
    again = run_cli(run_args(local, ok, "out2"), {**local["env"], "DOCKER_HOST": engine.host})
    assert again.returncode == 0, again.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_a_container_the_dead_engine_kept_is_swept_by_runner_cleanup(
    engine: Dockerd, local: dict[str, Any]
) -> None:
    proc, _ = _kill_engine_mid_step(engine, local)
    assert proc.returncode == 3
    env = {**local["env"], "DOCKER_HOST": engine.host}
    cleanup = run_cli(["cleanup"], env)
    assert cleanup.returncode == 0, cleanup.stderr
    assert engine.containers() == []


# == A full disk ==============================================================================


@pytest.fixture
def tiny_tmp(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "tiny"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.docker
@pytest.mark.parametrize(
    ("script", "says"),
    [
        ("dd if=/dev/zero of=big bs=1M count=10", "No space left on device"),
        # The step shrugs; runner's own snapshot of the workspace then fails.
        ("dd if=/dev/zero of=big bs=1M count=10 2>/dev/null || true", "No space left on device"),
    ],
    ids=["the step fails", "runner fails after the step"],
)
def test_a_full_disk_fails_the_workspace_clearly(
    local: dict[str, Any], tiny_tmp: Path, script: str, says: str, docker_client: Any
) -> None:
    spec = spec_file(local["root"] / "specs", "disk", script)
    proc = run_cli(run_args(local, spec), {**local["env"], "TMPDIR": str(tiny_tmp)})
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    (finished,) = [e for e in events_of(proc.stdout) if e["event"] == "workspace.finished"]
    assert finished["status"] == "failed" and says in finished["error"]
    assert list(tiny_tmp.iterdir()) == []
    assert json.loads((local["root"] / "out" / "summary.json").read_text())["counts"]["failed"] == 1


# == A locked SQLite database ===================================================================


@contextlib.contextmanager
def sqlite_locked(path: Path, seconds: float, mode: str = "IMMEDIATE") -> Iterator[None]:
    """Another process holds a write lock on ``path`` for ``seconds``."""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        f"c.execute('BEGIN {mode}')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('COMMIT')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.wait(seconds + 30)


@pytest.mark.docker
def test_a_locked_sqlite_database_makes_commands_wait_and_loses_nothing(
    local: dict[str, Any], docker_client: Any
) -> None:
    env = local["env"]
    db = local["root"] / "home" / "runner.db"
    assert run_cli(["secret", "set", "A", "--user", "alice"], env, input=VALUE).returncode == 0
    with sqlite_locked(db, 1.5):
        started = time.monotonic()
        proc = run_cli(["secret", "set", "B", "--user", "alice"], env, input=VALUE + "b")
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started >= 1
    with sqlite_locked(db, 1, mode="EXCLUSIVE"):
        listed = run_cli(["secret", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    assert {s["name"] for s in json.loads(listed.stdout)} == {"A", "B"}
    # A run whose audit write and cache writes meet the lock.
    spec = spec_file(local["root"] / "specs", "locked", 'echo "$A" | wc -c > n.txt', env="A")
    with sqlite_locked(db, 1.5):
        proc = run_cli(run_args(local, spec), env)
    assert proc.returncode == 0, proc.stderr
    log = json.loads(run_cli(["secret", "log", "A", "--json"], env).stdout)
    assert [e["event"] for e in log].count("accessed") == 1


def test_a_locked_sqlite_database_delays_coordinator_requests_and_loses_nothing(
    tmp_path: Path,
) -> None:
    from runner.secrets.value import Secret
    from tests.test_queue_support import ManualClock, World, make_repos

    db = tmp_path / "state.db"
    world = World(f"sqlite:///{db}", make_repos(tmp_path / "repos"), ManualClock())
    try:
        alice = world.client("alice")
        alice.secret_set("A", "user:alice", Secret(VALUE))
        with sqlite_locked(db, 2):
            alice.secret_set("B", "user:alice", Secret(VALUE + "b"))
            assert alice.whoami()["name"] == "alice"
        names = {m.name for m in alice.secrets_list(namespace="user:alice")}
        assert names == {"A", "B"}
    finally:
        world.close()


# == A restarted PostgreSQL =====================================================================


@pytest.mark.postgres
def test_the_coordinator_survives_a_postgres_restart_and_loses_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    from runner.queue.bundle import Bundle
    from runner.secrets.value import Secret
    from tests.test_queue_support import (
        SPEC_WITH_SECRET,
        ManualClock,
        World,
        make_repos,
        write_spec,
    )

    with private_postgres() as pg:
        world = World(pg.create_database("attack"), make_repos(tmp_path / "repos"), ManualClock())
        try:
            alice = world.client("alice")
            alice.secret_set("TOKEN", "user:alice", Secret(VALUE))
            bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
            first = alice.submit(bundle, "user:alice")["jobs"]
            pg.restart()
            # Requests are retried on a new connection; nothing written before is lost.
            assert alice.whoami()["name"] == "alice"
            second = alice.submit(bundle, "user:alice")["jobs"]
            assert {j["id"] for j in alice.jobs_list()} == {j["id"] for j in first + second}
            claim = world.client("exec").claim("ex1")
            assert claim is not None and next(iter(claim.secrets.values())).reveal() == VALUE
        finally:
            world.close()


# == Wrong, corrupt and missing master keys; tampered rows ======================================


def _tables(db: Path) -> dict[str, list[Any]]:
    conn = sqlite3.connect(db)
    try:
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        # A table no command has needed yet (the cache's, before any run) is empty.
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608
            if table in present
            else []
            for table in ("secrets", "secret_versions", "master_keys", "secret_audit", "step_cache")
        }
    finally:
        conn.close()


def _key_id(home: Path) -> str:
    lines = [
        x for x in (home / "master.key").read_text().splitlines() if x and not x.startswith("#")
    ]
    return lines[0].split()[0]


def _random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


BAD_KEYS = {
    "another key id": lambda kid: f"mk-someone-else {_random_key()}\n",
    "truncated key": lambda kid: f"{kid} {_random_key()[:20]}\n",
    "not base64": lambda kid: f"{kid} !!!!not-base64!!!!\n",
    "garbage": lambda kid: "\x7fELF\x02\x01 garbage \x00\n",
    "empty": lambda kid: "",
    "missing": None,
}


@pytest.mark.parametrize("variant", list(BAD_KEYS))
def test_a_wrong_or_corrupt_master_key_is_a_clear_error_and_changes_nothing(
    local: dict[str, Any], variant: str
) -> None:
    env, home = local["env"], local["root"] / "home"
    assert run_cli(["secret", "set", "A", "--user", "alice"], env, input=VALUE).returncode == 0
    key_file = local["root"] / "bad.key"
    make = BAD_KEYS[variant]
    if make is not None:
        key_file.write_text(make(_key_id(home)))
        key_file.chmod(0o600)
    bad_env = {**env, "RUNNER_MASTER_KEY_FILE": str(key_file)}
    before = _tables(home / "runner.db")
    spec = spec_file(local["root"] / "specs", "key", 'echo "$A"', env="A")
    for args, stdin in (
        (["secret", "list"], None),
        (["secret", "set", "NEW", "--user", "alice"], VALUE + "n"),
        (["keys", "rotate"], None),
        (run_args(local, spec), None),
    ):
        proc = run_cli(args, bad_env, input=stdin)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        line = one_line_error(proc.stderr)
        assert "master key" in line, line
    assert _tables(home / "runner.db") == before
    assert not key_file.exists() or make is not None  # a missing key is not invented
    assert not (local["root"] / "out").exists()


def test_a_key_with_the_right_id_but_wrong_bytes_is_refused_before_any_write(
    local: dict[str, Any],
) -> None:
    env, home = local["env"], local["root"] / "home"
    assert run_cli(["secret", "set", "A", "--user", "alice"], env, input=VALUE).returncode == 0
    key_file = local["root"] / "impostor.key"
    key_file.write_text(f"{_key_id(home)} {_random_key()}\n")
    key_file.chmod(0o600)
    before = _tables(home / "runner.db")
    proc = run_cli(
        ["secret", "set", "NEW", "--user", "alice"],
        {**env, "RUNNER_MASTER_KEY_FILE": str(key_file)},
        input=VALUE + "n",
    )
    assert proc.returncode == 1
    assert "master key" in one_line_error(proc.stderr)
    assert _tables(home / "runner.db") == before


@pytest.mark.docker
def test_a_run_with_a_wrong_key_of_the_right_id_fails_before_any_container(
    local: dict[str, Any], docker_client: Any
) -> None:
    env, home = local["env"], local["root"] / "home"
    assert run_cli(["secret", "set", "A", "--user", "alice"], env, input=VALUE).returncode == 0
    key_file = local["root"] / "impostor.key"
    key_file.write_text(f"{_key_id(home)} {_random_key()}\n")
    key_file.chmod(0o600)
    before = _tables(home / "runner.db")
    spec = spec_file(local["root"] / "specs", "impostor", 'echo "$A"', env="A")
    proc = run_cli(run_args(local, spec), {**env, "RUNNER_MASTER_KEY_FILE": str(key_file)})
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "cannot decrypt secret A in user:alice v1" in line
    assert _tables(home / "runner.db") == before
    assert proc.stdout == "" and runner_temp_leftovers(local["tmp"]) == []


@pytest.mark.docker
@pytest.mark.parametrize("column", ["ciphertext", "wrapped_key", "nonce", "swapped"])
def test_a_tampered_row_is_refused_by_name(
    local: dict[str, Any], column: str, docker_client: Any
) -> None:
    env, home = local["env"], local["root"] / "home"
    for name in ("A", "B"):
        assert (
            run_cli(["secret", "set", name, "--user", "alice"], env, input=VALUE + name).returncode
            == 0
        )
    conn = sqlite3.connect(home / "runner.db")
    try:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT s.name, v.secret_id, v.ciphertext, v.wrapped_key, v.nonce "
                "FROM secret_versions v JOIN secrets s ON s.id = v.secret_id"
            )
        }
        sid, ciphertext, wrapped, nonce = rows["A"]
        if column == "swapped":
            # B's sealed value moved into A's row: authenticated to another row, refused.
            _, b_ct, b_wrapped, b_nonce = rows["B"]
            conn.execute(
                "UPDATE secret_versions SET ciphertext = ?, wrapped_key = ?, nonce = ? WHERE secret_id = ?",
                [b_ct, b_wrapped, b_nonce, sid],
            )
        else:
            value = {"ciphertext": ciphertext, "wrapped_key": wrapped, "nonce": nonce}[column]
            flipped = bytearray(value)
            flipped[len(flipped) // 2] ^= 0x01
            conn.execute(
                f"UPDATE secret_versions SET {column} = ? WHERE secret_id = ?",  # noqa: S608
                [bytes(flipped), sid],
            )
        conn.commit()
    finally:
        conn.close()
    spec = spec_file(local["root"] / "specs", "tamper", 'echo "$A"', env="A")
    proc = run_cli(run_args(local, spec), env)
    assert proc.returncode == 1
    assert "cannot decrypt secret A in user:alice v1" in one_line_error(proc.stderr)
    assert proc.stdout == ""


# == Coordinator and executors ==================================================================


def _cluster(tmp_path: Path, names: list[str], **settings: str) -> Cluster:
    repos = tmp_path / "repos"
    for name in names:
        make_repo(repos, name, {"README.md": f"# {name}\n"})
    c = Cluster(tmp_path, repos, **settings)
    c.cli("user", "add", "alice")
    c.token("user", "alice")
    c.token("executor", "fleet", "exec.tok")
    c.cli("secret", "set", "TOKEN", "--user", "alice", stdin=VALUE)
    return c


@pytest.fixture
def teardown_containers(docker_client: Any) -> Iterator[list[str]]:
    """Job ids whose containers are removed after the test (a killed executor leaves them)."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={job_id}"}
        ):
            container.remove(force=True)


def _submit(c: Cluster, folder: Path, script: str, repos: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"s{len(list(folder.iterdir()))}.yaml"
    on = "".join(f"  - repository: {r}\n" for r in repos)
    path.write_text(
        f"name: fault\non:\n{on}steps:\n  - run: {json.dumps(script)}\n"
        f"    container: {TEST_IMAGE}\n    env: [TOKEN]\n" + TAIL
    )
    proc = c.remote("submit", str(path), "--namespace", "user:alice")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def _step_running(c: Cluster, job_id: str) -> bool:
    try:
        return any(e["event"] == "step.started" for e in c.events(job_id))
    except Exception:
        return False


@pytest.mark.docker
@pytest.mark.slow
def test_an_executor_killed_mid_job_the_job_completes_once_elsewhere(
    tmp_path: Path, teardown_containers: list[str]
) -> None:
    c = _cluster(tmp_path, ["github.com/acme/app"])
    try:
        c.start_server()
        (job,) = _submit(
            c,
            tmp_path / "specs",
            "echo hi > hi.txt; sleep 3; echo token $TOKEN",
            ["github.com/acme/app"],
        )
        teardown_containers.append(job)
        first = c.start_executor("exec-a")
        wait_for(lambda: _step_running(c, job), timeout=60, what="the step to start")
        c.start_executor("exec-b")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        jobs = c.wait_jobs([job], states=("completed", "failed", "canceled"), timeout=60)
        assert jobs[job]["state"] == "completed", jobs[job]
        assert jobs[job]["executor"] == "exec-b" and jobs[job]["resets"] == 1
        events = c.events(job)
        assert [e["event"] for e in events].count("run.finished") == 1
        assert [e["event"] for e in events].count("run.started") == 2
        result = json.loads(c.remote("jobs", "show", job, "--json").stdout)["result"]
        (changeset,) = result["changesets"]
        assert "+hi" in changeset["commits"][0]["diff"]
        assert "token [REDACTED:TOKEN]" in [e.get("line") for e in events]
    finally:
        c.close()


@pytest.mark.docker
@pytest.mark.slow
def test_the_coordinator_killed_and_restarted_mid_job_the_job_completes(
    tmp_path: Path, teardown_containers: list[str]
) -> None:
    # No stall may end a job here: the coordinator's restart takes as long as the machine's
    # load makes it, and the executor must simply carry on.
    c = _cluster(tmp_path, ["github.com/acme/app", "github.com/acme/lib"], RUNNER_STALL_LIMIT="30")
    try:
        c.start_server()
        jobs = _submit(
            c,
            tmp_path / "specs",
            "echo before; sleep 3; echo after > after.txt; echo after",
            ["github.com/acme/app", "github.com/acme/lib"],
        )
        teardown_containers.extend(jobs)
        executor = c.start_executor("exec-a", "--max-jobs", "2")
        wait_for(lambda: all(_step_running(c, j) for j in jobs), timeout=60, what="both steps")
        c.stop("server", signal.SIGKILL)
        time.sleep(1.5)  # the executor keeps running its steps, with nobody to talk to
        c.start_server("server-again")
        done = c.wait_jobs(jobs, states=("completed", "failed", "canceled"), timeout=60)
        assert [done[j]["state"] for j in jobs] == ["completed", "completed"], done
        assert all(done[j]["attempts"] == 1 and done[j]["resets"] == 0 for j in jobs)
        for job in jobs:
            names = [e["event"] for e in c.events(job)]
            assert names.count("run.started") == 1 and names.count("run.finished") == 1
            lines = [e.get("line") for e in c.events(job)]
            assert "before" in lines and "after" in lines
        assert executor.poll() is None  # it rode out the outage
    finally:
        c.close()


@pytest.mark.docker
@pytest.mark.slow
def test_the_engine_killed_under_an_executor_errors_the_job_which_is_retried(
    tmp_path: Path, engine: Dockerd, teardown_containers: list[str]
) -> None:
    c = _cluster(tmp_path, ["github.com/acme/app"])
    try:
        c.start_server()
        (job,) = _submit(
            c,
            tmp_path / "specs",
            "touch started; sleep 4; echo done > done.txt",
            ["github.com/acme/app"],
        )
        teardown_containers.append(job)
        doomed = c.start_executor("exec-private", DOCKER_HOST=engine.host)
        wait_for(
            lambda: bool(list(c.exec_tmp.glob("runner-ws-*/repo/started"))),
            timeout=60,
            what="the step",
        )
        doomed.send_signal(signal.SIGTERM)  # stop claiming; the running job goes on
        try:
            engine.kill()
            assert doomed.wait(60) == 0  # it drained: its one job ended errored
            seen = c.jobs()[job]
            assert seen["state"] == "errored", seen
            assert "the Docker engine failed" in (seen["error"] or "")
            assert runner_temp_leftovers(c.exec_tmp) == []
        finally:
            engine.start()
        c.start_executor("exec-main")
        done = c.wait_jobs([job], states=("completed", "failed", "canceled"), timeout=90)
        assert done[job]["state"] == "completed" and done[job]["attempts"] == 2, done[job]
        assert done[job]["executor"] == "exec-main"
        assert runner_temp_leftovers(c.exec_tmp) == []
    finally:
        c.close()


@pytest.mark.docker
@pytest.mark.slow
def test_after_a_retried_job_no_container_of_it_is_left_on_the_engine(
    tmp_path: Path, engine: Dockerd, teardown_containers: list[str]
) -> None:
    c = _cluster(tmp_path, ["github.com/acme/app"])
    try:
        c.start_server()
        (job,) = _submit(
            c,
            tmp_path / "specs",
            "touch started; sleep 4; echo done > done.txt",
            ["github.com/acme/app"],
        )
        teardown_containers.append(job)
        first = c.start_executor("exec-first", DOCKER_HOST=engine.host)
        wait_for(
            lambda: bool(list(c.exec_tmp.glob("runner-ws-*/repo/started"))),
            timeout=60,
            what="the step",
        )
        first.send_signal(signal.SIGTERM)
        try:
            engine.kill()
            assert first.wait(60) == 0
        finally:
            engine.start()
        c.start_executor("exec-second", DOCKER_HOST=engine.host)
        done = c.wait_jobs([job], states=("completed", "failed", "canceled"), timeout=90)
        assert done[job]["state"] == "completed" and done[job]["attempts"] == 2, done[job]
        assert engine.containers(f"{RUN_LABEL}={job}") == []
    finally:
        c.close()
