"""Coordinator replicas: two `runner server` processes on one PostgreSQL serve the same
API and pages; on SQLite a second one is refused; web sessions survive a restart.

Every process is separate (``tests.attack_support.Cluster``).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.web.session import COOKIE_NAME
from tests.attack_support import Cluster, free_port, wait_for
from tests.test_queue_support import fresh_postgres_database, make_repos, write_spec

SPEC = """\
name: replicas
description: two coordinators
on:
  - repository: github.com/acme/one
  - repository: github.com/acme/two
steps:
  - run: echo hi > file.txt && sleep 2
    container: runner-test/busybox:latest
changesetTemplate:
  title: Hi
  body: Hi
  branch: hi
  commit:
    message: hi
"""

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(url: str, token_file: Path) -> str:
    """Sign in to the pages at ``url`` as a browser would; the session cookie's value."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        form = browser.get("/sign-in")
        found = _CSRF.search(form.text)
        assert found is not None, form.text
        answer = browser.post(
            "/sign-in",
            data={"token": token_file.read_text().strip(), "csrf_token": found.group(1)},
        )
        assert answer.status_code == 303, answer.text
        return answer.cookies[COOKIE_NAME]


def page(url: str, path: str, session: str) -> httpx.Response:
    return httpx.get(url + path, cookies={COOKIE_NAME: session}, timeout=30)


def start_server(cluster: Cluster, name: str, port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    cluster.spawn(
        name,
        ["server", "--listen", f"127.0.0.1:{port}", "--repos-root", str(cluster.repos)],
        # One process per replica: these tests kill replicas with SIGKILL, which would
        # leave a multi-worker server's metrics folder until the next server starts
        # (tests/test_server_workers.py covers workers).
        {**cluster.coord_env, "RUNNER_SERVER_WORKERS": "1"},
    )

    def answers() -> bool:
        try:
            return httpx.get(url + "/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout=90, what=f"the coordinator {name}", every=0.2)
    return url


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, make_repos(tmp_path / "repos"))
    try:
        yield c
    finally:
        c.close()


def test_sqlite_serves_one_coordinator_whose_sessions_survive_a_kill(cluster: Cluster) -> None:
    cluster.cli("user", "add", "alice")
    alice = cluster.token("user", "alice")
    url = start_server(cluster, "first", cluster.port)
    session = sign_in(url, alice)
    assert page(url, "/jobs", session).status_code == 200

    # A second server on the same SQLite file is refused, with what to do instead.
    second = cluster.spawn(
        "second",
        ["server", "--listen", f"127.0.0.1:{free_port()}", "--repos-root", str(cluster.repos)],
        cluster.coord_env,
    )
    assert second.wait(60) == 1
    said = (cluster.logs / "second.log").read_text()
    assert "another `runner server` is running on the SQLite database" in said
    assert "PostgreSQL" in said

    # Killed outright, the first leaves no stale lock: it starts again at once, and the
    # browser's session is still signed in (the session lives in the database).
    cluster.stop("first", signal.SIGKILL)
    url = start_server(cluster, "first-again", cluster.port)
    again = page(url, "/jobs", session)
    assert again.status_code == 200 and "Sign in" not in again.text
    # The session row keeps the token's id, never the token.
    token = alice.read_text().strip()
    assert token.encode() not in (cluster.home / "runner.db").read_bytes()
    # Revoking the token ends the session on the next request.
    token_id = json.loads(cluster.cli("token", "list", "--json"))[0]["id"]
    cluster.cli("token", "revoke", token_id)
    assert page(url, "/jobs", session).status_code == 303


@pytest.mark.docker
@pytest.mark.postgres
@pytest.mark.slow
def test_two_replicas_on_postgresql_share_jobs_and_sessions(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two coordinators, two executors (one per coordinator), a client alternating between
    the coordinators and a browser signed in on one and then using the other; one
    coordinator is killed with SIGKILL mid-run. Every job completes exactly once."""
    with fresh_postgres_database(postgres_url) as db_url:
        cluster = Cluster(tmp_path, make_repos(tmp_path / "repos"), RUNNER_DATABASE_URL=db_url)
        try:
            _two_replicas(cluster, tmp_path)
        finally:
            cluster.close()


def _two_replicas(cluster: Cluster, tmp_path: Path) -> None:
    cluster.cli("user", "add", "alice")
    alice = cluster.token("user", "alice")
    executor = cluster.token("executor", "fleet", "exec.tok")
    urls = [
        start_server(cluster, "coord-a", cluster.port),
        start_server(cluster, "coord-b", free_port()),
    ]
    for name, url in (("exec-a", urls[0]), ("exec-b", urls[1])):
        home = tmp_path / f"{name}-home"
        home.mkdir()
        cluster.spawn(
            name,
            ["executor", "--url", url, "--token-file", str(executor), "--name", name],
            {**cluster.env, "RUNNER_HOME": str(home), "TMPDIR": str(cluster.exec_tmp)},
        )
    spec = write_spec(tmp_path / "spec", SPEC)
    job_ids: list[str] = []
    for i in range(3):  # submitted through A, B, A
        base = urls[i % 2]
        answer = _remote(cluster, base, alice, "submit", str(spec), "--json")
        job_ids += [j["id"] for j in json.loads(answer)["jobs"]]

    # Signed in on A, the browser goes on to B.
    session = sign_in(urls[0], alice)
    listed = page(urls[1], "/jobs", session)
    assert listed.status_code == 200 and all(j in listed.text for j in job_ids)

    # Both replicas see the same queue.
    def states(url: str) -> dict[str, str]:
        jobs = json.loads(_remote(cluster, url, alice, "jobs", "list", "--json"))
        return {j["id"]: j["state"] for j in jobs}

    # Started: processing, or already done (the later submissions' steps are cache hits,
    # and on a busy machine every job may end before the first look).
    wait_for(
        lambda: any(s != "queued" for s in states(urls[1]).values()),
        timeout=120,
        what="a job to start",
    )
    assert set(states(urls[0])) == set(states(urls[1])) == set(job_ids)
    cluster.stop("coord-a", signal.SIGKILL)

    # B's resetter hands A's executor's jobs on; B's executor completes them all.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        seen = states(urls[1])
        if all(seen[j] in ("completed", "failed", "canceled") for j in job_ids):
            break
        time.sleep(0.5)
    assert [seen[j] for j in job_ids] == ["completed"] * len(job_ids), seen
    for job_id in job_ids:
        shown = json.loads(_remote(cluster, urls[1], alice, "jobs", "show", job_id, "--json"))
        assert shown["result"]["status"] == "changed"
        logs = _remote(cluster, urls[1], alice, "jobs", "logs", job_id, "--json")
        finished = [e for e in map(json.loads, logs.splitlines()) if e["event"] == "run.finished"]
        assert len(finished) == 1, (job_id, finished)
    # The session signed in on the killed replica still works on the other.
    assert "Sign in" not in page(urls[1], "/jobs", session).text


def _remote(cluster: Cluster, url: str, token: Path, *args: str) -> str:
    from tests.attack_support import run_cli

    proc = run_cli([*args, "--url", url, "--token-file", str(token)], cluster.env, timeout=120)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout
