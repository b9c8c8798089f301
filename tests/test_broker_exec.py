"""Brokered secrets beyond `runner run` on the default network: executors, `allow`, gVisor.

Through a coordinator and an executor (separate processes; the executor gets
``--broker-ca-file`` and ``--add-host`` as its operator's settings): a user
sets a brokered secret against the coordinator, submits a job whose step
calls a local HTTPS server with ``Authorization: Bearer $GITHUB_TOKEN`` and
then sends the placeholder over plain HTTP. The server sees the real value;
the job log shows the placeholder redacted and the mismatch; the audit log
records the brokered use once for the job; the coordinator's database, the
job's log, result and web page, and everything the executor left hold
neither the value nor the raw placeholder.

Locally, the same broker in the strictest sandbox at once: ``--network
allow`` (the proxy both enforces the allow list and brokers) under
``--isolation gvisor``.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.testing.tls import LocalCA, Recorded, http_recorder, https_recorder
from tests.attack_support import (
    Cluster,
    hits,
    leak_forms,
    proc_cmdlines,
    run_cli,
    runner_temp_leftovers,
    scan_paths,
)
from tests.helpers import make_repo, runner_env, set_secret
from tests.web_support import csrf_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

API = "api.test.example"
PLAIN = "plain.test.example"
OTHER = "other.test.example"  # bound to nothing, listed nowhere
REPO = "github.com/acme/app"
ENDED = ("completed", "failed", "canceled")


def _value() -> str:
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


def _spec(folder: Path, script: str, image: str) -> Path:
    spec = folder / "brokered.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    indented = "".join(f"      {line}\n" for line in script.splitlines())
    spec.write_text(
        f"name: brokered\non:\n  - repository: {REPO}\nsteps:\n"
        f"  - run: |\n{indented}    container: {image}\n    env: [GITHUB_TOKEN]\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: brokered\n"
        "  commit:\n    message: m\n"
    )
    return spec


def _calls(api: Recorded, plain: Recorded, *, other: int | None = None) -> str:
    """Twice to the bound host, once in clear to an unbound one (and once to ``other``)."""
    lines = [
        f'curl -sS -H "Authorization: Bearer $GITHUB_TOKEN" https://{API}:{api.port}/user',
        f'curl -sS -o /dev/null -H "Authorization: token $GITHUB_TOKEN" https://{API}:{api.port}/',
        'echo "token is $GITHUB_TOKEN"',
        f'curl -sS -o /dev/null -H "Authorization: Bearer $GITHUB_TOKEN" http://{PLAIN}:{plain.port}/',
    ]
    if other is not None:  # refused by the allow list before any TLS
        lines.append(f"curl -sS -o /dev/null https://{OTHER}:{other}/ || echo other-refused")
    return "\n".join([*lines, "echo brokered > brokered.txt"])


def _hosts() -> list[str]:
    return [arg for host in (API, PLAIN, OTHER) for arg in ("--add-host", f"{host}:127.0.0.1")]


def _placeholder(plain: Recorded, value: str) -> str:
    """What the unbound host got: the placeholder, shaped like the value and never it."""
    (sent,) = plain.authorizations
    placeholder = sent.removeprefix("Bearer ")
    assert placeholder != value and len(placeholder) == len(value)
    assert placeholder.startswith("ghp_")
    return placeholder


def _web_job_page(c: Cluster, job_id: str) -> bytes:
    """The job's page and its log as alice sees them, signed in to the web pages."""
    import httpx

    token = c.tokens["alice"].read_text().strip()
    with httpx.Client(base_url=c.url, follow_redirects=True, timeout=10) as web:
        form = csrf_of(web.get("/sign-in").text)
        signed = web.post(
            "/sign-in",
            data={"token": token, "csrf_token": form, "next": "/"},
            headers={"Origin": c.url},
        )
        assert signed.status_code == 200 and "sign-in" not in str(signed.url)
        pages = [web.get(f"/jobs/{job_id}"), web.get(f"/jobs/{job_id}/log.json")]
    assert [page.status_code for page in pages] == [200, 200]
    return b"".join(page.content for page in pages)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[LocalCA, Recorded, Recorded]]:
    ca = LocalCA(tmp_path / "ca")
    with https_recorder(ca.issue(API)) as api, http_recorder() as plain:
        yield ca, api, plain


def test_a_brokered_secret_through_a_coordinator_and_an_executor(
    tmp_path: Path, debian_image: str, servers: tuple[LocalCA, Recorded, Recorded]
) -> None:
    ca, api, plain = servers
    value = _value()
    repos = tmp_path / "repos"
    make_repo(repos, REPO, {"README.md": "# app\n"})
    c = Cluster(tmp_path, repos)
    try:
        c.cli("user", "add", "alice")
        c.token("user", "alice")
        c.token("executor", "fleet", "exec.tok")
        c.start_server()
        # The user sets it against the coordinator, as she would from her laptop.
        remote = ["--url", c.url, "--token-file", str(c.tokens["alice"])]
        bound = ["--user", "alice", "--broker-host", API]
        done = run_cli(["secret", "set", "GITHUB_TOKEN", *bound, *remote], c.env, input=value)
        assert done.returncode == 0, done.stderr
        # The upstream CA and the names are the operator's, on the executor's command line.
        c.start_executor("exec-a", "--broker-ca-file", str(ca.path), *_hosts())
        spec = _spec(tmp_path / "specs", _calls(api, plain), debian_image)
        submitted = c.remote("submit", str(spec), "--namespace", "user:alice")
        assert submitted.returncode == 0, submitted.stderr
        (job_id,) = submitted.stdout.split()
        job = c.wait_jobs([job_id], states=ENDED, timeout=240)[job_id]
        assert job["state"] == "completed", job
        events = c.events(job_id)
        logs = c.remote("jobs", "logs", job_id)
        with c.api() as client:
            result = client.job_result(job_id)
        page = _web_job_page(c, job_id)
        audit = json.loads(c.cli("secret", "log", "GITHUB_TOKEN", "--json"))
        for name in list(c.procs):
            c.stop(name)
    finally:
        c.close()

    # The server got the real value, twice, as the step spelled it; the step saw the
    # placeholder redacted, in its output and in the server's echo.
    assert api.authorizations == [f"Bearer {value}", f"token {value}"]
    lines = [e.get("line") for e in events if e["event"] == "step.output"]
    assert "recorder saw: Bearer [REDACTED:GITHUB_TOKEN]" in lines
    assert "token is [REDACTED:GITHUB_TOKEN]" in lines
    # In clear to an unbound host: the placeholder only, and the mismatch in the job's log.
    placeholder = _placeholder(plain, value)
    mismatches = [e for e in events if e["event"] == "secret.broker_mismatch"]
    assert [(e["step"], e["secret"], e["host"]) for e in mismatches] == [(1, "GITHUB_TOKEN", PLAIN)]
    assert f"secret.broker_mismatch step=1 secret=GITHUB_TOKEN host={PLAIN}" in logs.stdout
    assert result["broker_mismatch"] == 1
    # One audit entry for the job's brokered uses: both requests, the host, the executor.
    (used,) = [e for e in audit if e["event"] == "brokered"]
    assert (used["job"], used["count"], used["actor"]) == (job_id, 2, "executor:exec-a")
    assert API in used["detail"]
    # Neither the value nor the raw placeholder anywhere the job went.
    seen = json.dumps([events, result, audit]).encode() + logs.stdout.encode() + page
    assert b"[REDACTED:GITHUB_TOKEN]" in page
    forms = {**leak_forms([value]), placeholder.encode(): "placeholder"}
    assert hits(seen, forms) == []
    left = [c.home, c.logs, c.exec_tmp, tmp_path / "exec-a-home", tmp_path / "specs"]
    assert scan_paths(left, forms) == []
    assert hits(proc_cmdlines(), forms) == []
    assert runner_temp_leftovers(c.exec_tmp) == []


def test_brokering_under_gvisor_with_an_allow_list(
    tmp_path: Path,
    debian_image: str,
    gvisor: None,
    servers: tuple[LocalCA, Recorded, Recorded],
) -> None:
    """The strictest sandbox at once: the proxy enforces the list and brokers, under gVisor."""
    ca, api, plain = servers
    value = _value()
    home, tmp, out, repos = (tmp_path / name for name in ("home", "tmp", "out", "repos"))
    tmp.mkdir()
    make_repo(repos, REPO, {"README.md": "# app\n"})
    env = runner_env(home, TMPDIR=str(tmp))
    set_secret(env, "GITHUB_TOKEN", value, "--user", "alice", "--broker-host", API)
    # The bound host and the plain one are listed; OTHER is not.
    listed = [f"--allow-host={API}:{api.port}", f"--allow-host={PLAIN}:{plain.port}"]
    spec = _spec(tmp_path / "specs", _calls(api, plain, other=api.port), debian_image)
    sandbox = ["--isolation", "gvisor", "--network", "allow", *listed]
    flags = [*sandbox, "--broker-ca-file", str(ca.path), *_hosts()]
    where = ["--repos-root", str(repos), "--out", str(out), "--json"]
    done = run_cli(["run", str(spec), *where, *flags], env, timeout=240)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    lines = [e.get("line") for e in events if e["event"] == "step.output"]

    assert api.authorizations == [f"Bearer {value}", f"token {value}"]
    assert "recorder saw: Bearer [REDACTED:GITHUB_TOKEN]" in lines
    placeholder = _placeholder(plain, value)
    assert events[0]["isolation"] == "gvisor"
    # The proxy refused the unlisted host and brokered the listed one.
    assert "other-refused" in lines
    kinds = [(e["event"], e["host"]) for e in events if "host" in e and e["event"] != "step.output"]
    assert kinds == [("secret.broker_mismatch", PLAIN), ("step.egress_denied", OTHER)]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["broker_mismatch"], summary["egress_denied"]) == (1, 1)
    # The local audit log has the run's brokered uses too.
    audit = json.loads(run_cli(["secret", "log", "GITHUB_TOKEN", "--json"], env).stdout)
    (used,) = [e for e in audit if e["event"] == "brokered"]
    assert (used["count"], used["actor"]) == (2, "alice") and API in used["detail"]
    forms = {**leak_forms([value]), placeholder.encode(): "placeholder"}
    assert hits(done.stdout.encode() + done.stderr.encode(), forms) == []
    assert scan_paths([home, tmp, out], forms) == []
    assert runner_temp_leftovers(tmp) == []
