"""Leak canary: specs that try every way to print a secret, then a scan of everything.

Local half: `runner run` (JSON events and the plain terminal output), with the
cache on. Distributed half: the same specs through a coordinator on
PostgreSQL and two executors. While steps run, a watcher looks at `docker
inspect` of every step container, Docker's folder of each, and every
process's command line; afterwards the scan covers stdout and stderr, every
process's log, the database files (or a `pg_dump`), the cache, results, job
logs and the temporary folders. Zero hits, for each value and each of its
registered encodings. A secret written into a file fails the workspace.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.attack_support import (
    CANARY,
    Cluster,
    LocalCanary,
    Watcher,
    canary_spec,
    events_of,
    hits,
    leak_forms,
    proc_cmdlines,
    run_cli,
    runner_temp_leftovers,
    scan_paths,
)
from tests.helpers import make_repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# A multi-line global value: each line is registered on its own.
GLOBAL_CANARY = (
    "-----BEGIN CANARY-----\nline-one-ABCDEF123\nline-two-GHIJKL456\n-----END CANARY-----"
)
VALUES = [CANARY, GLOBAL_CANARY]
# A one-off local value (`--secret-file`) the plain run gives CANARY instead of the stored one.
LOCAL_CANARY = 'L0c4l/c4n+ry=v&l "q\\z<>'
VARIABLES = ("CANARY", "GLOBAL_CANARY")
# A file secret (`--type file`): the step reads it through the path its variable holds.
FILE_CANARY = 'F1le/c4n+ry=v&l "q\\z<>\nsecond-line-Qx7'
# A value a step makes while it runs and masks with `::add-mask::`: the spec holds it
# reversed only, so nothing but the step's own output ever carries it.
MASK_CANARY = "M4sk/run+t1me=v&l-9Zq"
EXTRAS_SPEC = """name: canary-extras
description: a file secret and a mask added at run time
on:
  - repository: github.com/acme/app
steps:
  - run: |
      echo "file at $FILE_CANARY"
      cat "$FILE_CANARY"; echo
      m="$(echo '{reversed}' | rev)"
      echo "::add-mask::$m"
      echo "masked: $m"
    container: runner-test/busybox:latest
    env:
      - FILE_CANARY
  - run: |
      m="$(echo '{reversed}' | rev)"
      echo "later step: $m"
      echo "later on stderr: $m" >&2
      printf '%s' "$m" > masked.txt
    container: runner-test/busybox:latest
changesetTemplate:
  title: extras
  body: extras
  branch: canary/extras
  commit:
    message: extras
""".format(reversed=MASK_CANARY[::-1])
REPOS = ["github.com/acme/app", "github.com/acme/lib"]


def _run_flags() -> set[str]:
    """Every flag `runner run` has, read when the tests are collected."""
    import click

    import runner.cli  # noqa: F401  (registers the commands)
    from runner.cli._app import cli

    # The group loads its commands when asked (lazily, to keep start-up short).
    run = cli.get_command(click.Context(cli), "run")
    assert run is not None
    return {flag for param in run.params for flag in getattr(param, "opts", ())}


def _sandbox(flags: tuple[str, ...], name: str) -> Any:
    """A sandbox to run the canary in; skipped, saying why, where `runner run` lacks its flag."""
    missing = [flag for flag in flags if flag.startswith("--") and flag not in _run_flags()]
    marks = (
        [pytest.mark.skip(reason=f"`runner run` has no {', '.join(missing)} flag (issue 18)")]
        if missing
        else []
    )
    return pytest.param(flags, id=name, marks=marks)


# The canary also runs in the sandbox's strictest shapes: under gVisor, and with egress
# through the job's proxy only.
SANDBOXES = [
    pytest.param((), id="default"),
    _sandbox(("--isolation", "gvisor"), "gvisor"),
    _sandbox(("--network", "allow"), "allow"),
]


def make_repos(root: Path) -> Path:
    for name in REPOS:
        make_repo(root, name, {"README.md": f"# {name}\n"})
    return root


def write_specs(folder: Path, repositories: list[str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "print": canary_spec(title="print", repositories=repositories, variables=VARIABLES),
        "fail": canary_spec(
            title="fail", repositories=repositories[:1], variables=VARIABLES, fail=True
        ),
        "file": canary_spec(
            title="file", repositories=repositories[:1], variables=VARIABLES, write_file=True
        ),
    }
    paths = {}
    for kind, text in specs.items():
        paths[kind] = folder / f"{kind}.yaml"
        paths[kind].write_text(text)
    return paths


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_local_run_leaks_no_secret_anywhere(
    tmp_path: Path, docker_client: Any, request: pytest.FixtureRequest, sandbox: tuple[str, ...]
) -> None:
    if "gvisor" in sandbox:
        request.getfixturevalue("gvisor")  # the engine must have runsc
    local = LocalCanary.make(tmp_path)
    env, out = local.env, local.out
    repos = make_repos(tmp_path / "repos")
    local.set_secret("CANARY", CANARY, "--user=alice")
    local.set_secret("GLOBAL_CANARY", GLOBAL_CANARY, "--global")
    local.set_secret("FILE_CANARY", FILE_CANARY, "--user=alice", "--type", "file")
    specs = write_specs(tmp_path / "specs", REPOS)
    specs["extras"] = specs["print"].parent / "extras.yaml"
    specs["extras"].write_text(EXTRAS_SPEC)
    forms = leak_forms([*VALUES, LOCAL_CANARY, FILE_CANARY, MASK_CANARY])
    local_file = tmp_path / "private" / "local.env"  # the user's own file: not scanned
    local_file.parent.mkdir()
    local_file.write_text(f"CANARY='{LOCAL_CANARY}'\n")
    local_file.chmod(0o600)
    common = ["--repos-root", str(repos), *sandbox]
    terminal = b""
    with Watcher(forms) as watcher:
        runs = {}
        for kind in ("print", "fail", "file"):
            proc = run_cli(
                ["run", str(specs[kind]), *common, "--out", str(out / kind), "--json", "-v"], env
            )
            terminal += proc.stdout.encode() + proc.stderr.encode()
            runs[kind] = proc
        # The same spec again, printed for a person (no JSON), the cache bypassed; once,
        # as how runner prints does not depend on the sandbox.
        plain = None
        if not sandbox:
            plain = run_cli(
                [
                    "run",
                    str(specs["print"]),
                    *common,
                    "--out",
                    str(out / "plain"),
                    "--no-cache",
                    "--secret-file",
                    str(local_file),
                ],
                env,
            )
            terminal += plain.stdout.encode() + plain.stderr.encode()
            # A file secret and a mask made at run time, once (they ride the same pipes
            # under every sandbox).
            extras = run_cli(
                ["run", str(specs["extras"]), *common, "--out", str(out / "extras"), "--json"],
                env,
            )
            terminal += extras.stdout.encode() + extras.stderr.encode()
    assert watcher.containers_seen, "the watcher never saw a step container"

    # What each run did: the printing spec succeeds; the failing step and the file fail.
    assert runs["print"].returncode == 0, runs["print"].stderr
    if plain is not None:
        assert plain.returncode == 0, plain.stderr
        assert "local secret CANARY overrides the stored one from user:alice" in plain.stderr
    printed = events_of(runs["print"].stdout)
    lines = [e["line"] for e in printed if e["event"] == "step.output"]
    assert "plain [REDACTED:CANARY]" in lines
    assert any("[REDACTED:GLOBAL_CANARY]" in line for line in lines)
    assert runs["fail"].returncode == 3
    (failed,) = [e for e in events_of(runs["fail"].stdout) if e["event"] == "workspace.finished"]
    assert failed["status"] == "failed"
    assert "fatal: the token [REDACTED:CANARY] was refused" in failed["error"]
    assert runs["file"].returncode == 3
    (leaked,) = [e for e in events_of(runs["file"].stdout) if e["event"] == "workspace.finished"]
    assert leaked["status"] == "failed" and "CANARY" in leaked["error"]
    assert "leaked.txt" in leaked["error"] and "no diff was written" in leaked["error"]
    # No changeset or patch for it; its log (redacted) is all that is kept.
    kept = sorted(p.suffix for p in (out / "file").rglob("*") if p.is_file())
    assert kept == [".json", ".log"], kept  # summary.json and the workspace's log
    if not sandbox:
        _check_extras(extras.returncode, events_of(extras.stdout))
    changesets = list((out / "print").rglob("*.json"))
    assert len(changesets) == 3  # two changesets and the summary
    if "gvisor" in sandbox:
        summary = json.loads((out / "print" / "summary.json").read_text())
        assert summary["isolation"] == "gvisor"

    # Zero hits anywhere.
    local.assert_no_leaks(terminal, watcher, forms, specs["print"].parent)
    cache = run_cli(["cache", "list", "--json"], env)
    assert cache.returncode == 0 and json.loads(cache.stdout), cache.stderr
    assert hits(cache.stdout.encode(), forms) == []
    audit = run_cli(["secret", "log", "--json"], env)
    assert hits(audit.stdout.encode(), forms) == []


def _check_extras(code: int, events: list[dict[str, Any]]) -> None:
    """The file secret reached its step redacted; the mask hid the value from then on."""
    lines = [e["line"] for e in events if e["event"] == "step.output"]
    assert any(line.startswith("file at /") for line in lines), lines
    assert any("[REDACTED:FILE_CANARY]" in line for line in lines), lines
    assert not any("add-mask" in line for line in lines), lines
    assert "masked: [REDACTED:MASK]" in lines
    assert "later on stderr: [REDACTED:MASK]" in lines
    assert "later step: [REDACTED:MASK]" in lines
    # The later step wrote the mask into the repository: its workspace fails, naming it.
    assert code == 3
    (finished,) = [e for e in events if e["event"] == "workspace.finished"]
    assert finished["status"] == "failed" and "MASK" in finished["error"], finished
    assert not any(e["event"] == "step.cached" for e in events)


def web_pages(c: Cluster, job_ids: list[str]) -> bytes:
    """Sign in to the coordinator's web pages as alice; every page of her jobs and secrets."""
    import re

    import httpx

    token = c.tokens["alice"].read_text().strip()
    with httpx.Client(base_url=c.url, follow_redirects=True, timeout=10) as web:
        form = web.get("/sign-in").text
        match = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert match, form[:500]
        signed_in = web.post(
            "/sign-in",
            data={"token": token, "csrf_token": match.group(1), "next": "/"},
            headers={"Origin": c.url},
        )
        assert signed_in.status_code == 200 and "sign-in" not in str(signed_in.url), signed_in.text[
            :300
        ]
        pages = ["/", "/jobs", "/secrets", "/secrets/user:alice", "/secrets/user:alice/CANARY/log"]
        for job_id in job_ids:
            pages += [f"/jobs/{job_id}", f"/jobs/{job_id}/log.json"]
        out = b""
        for page in pages:
            answer = web.get(page)
            assert answer.status_code == 200, (page, answer.status_code)
            out += answer.content
    assert b"[REDACTED:CANARY]" in out  # the job pages show the redacted output
    return out


@pytest.mark.postgres
def test_distributed_run_leaks_no_secret_anywhere(
    tmp_path: Path, docker_client: Any, postgres_url: str
) -> None:
    from tests.test_queue_support import fresh_postgres_database

    repos = make_repos(tmp_path / "repos")
    with fresh_postgres_database(postgres_url) as db_url:
        cluster = Cluster(tmp_path, repos, RUNNER_DATABASE_URL=db_url)
        try:
            _distributed(cluster, tmp_path)
        finally:
            cluster.close()
        dump = subprocess.run(["pg_dump", "--no-owner", db_url], capture_output=True, check=False)
        if dump.returncode != 0:  # pg_dump not on PATH: the server's own one
            pgbin = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))[-1]
            dump = subprocess.run(
                [str(pgbin), "--no-owner", db_url], capture_output=True, check=True
            )
    forms = leak_forms(VALUES)
    assert b"runner_jobs" in dump.stdout
    assert hits(dump.stdout, forms) == []


def _distributed(c: Cluster, tmp_path: Path) -> None:
    c.cli("user", "add", "alice")
    c.token("user", "alice")
    c.token("executor", "fleet", "exec.tok")
    c.cli("secret", "set", "CANARY", "--user", "alice", stdin=CANARY)
    c.cli("secret", "set", "GLOBAL_CANARY", "--global", stdin=GLOBAL_CANARY)
    c.start_server()
    specs = write_specs(tmp_path / "specs", REPOS)
    forms = leak_forms(VALUES)
    with Watcher(forms, extra_paths=[c.exec_tmp]) as watcher:
        c.start_executor("exec-a")
        c.start_executor("exec-b")
        ids: dict[str, list[str]] = {}
        for kind, path in specs.items():
            proc = c.remote("submit", str(path), "--namespace", "user:alice")
            assert proc.returncode == 0, proc.stderr
            ids[kind] = proc.stdout.split()
        every = [j for js in ids.values() for j in js]
        jobs = c.wait_jobs(every, states=("completed", "failed", "canceled"), timeout=120)
    assert watcher.containers_seen, "the watcher never saw a step container"
    assert [jobs[j]["state"] for j in ids["print"]] == ["completed", "completed"]
    assert [jobs[j]["state"] for j in ids["fail"]] == ["failed"]
    assert [jobs[j]["state"] for j in ids["file"]] == ["failed"]

    seen = b""
    for job_id in every:
        logs = c.remote("jobs", "logs", job_id, "--json")
        shown = c.remote("jobs", "show", job_id, "--json")
        assert logs.returncode == 0 and shown.returncode == 0, logs.stderr + shown.stderr
        seen += logs.stdout.encode() + shown.stdout.encode()
    lines = [e.get("line", "") for j in ids["print"] for e in c.events(j)]
    assert "plain [REDACTED:CANARY]" in lines
    fail_error = json.loads(c.remote("jobs", "show", ids["fail"][0], "--json").stdout)["error"]
    assert "fatal: the token [REDACTED:CANARY] was refused" in fail_error
    file_error = json.loads(c.remote("jobs", "show", ids["file"][0], "--json").stdout)["error"]
    assert "CANARY" in file_error and "leaked.txt" in file_error
    with c.api() as api:
        for job_id in ids["print"]:
            seen += json.dumps(api.job_result(job_id)).encode()
    audit = c.cli("secret", "log", "--json")
    seen += audit.encode()
    seen += web_pages(c, every)

    for name in list(c.procs):
        c.stop(name)
    assert hits(seen, forms) == []
    assert sorted(watcher.found) == []
    assert scan_paths([c.logs, c.home, c.exec_tmp, *c.root.glob("exec-*-home")], forms) == []
    assert hits(proc_cmdlines(), forms) == []
    assert runner_temp_leftovers(c.exec_tmp) == []


def test_a_secret_rebuilt_by_a_template_never_reaches_disk(
    tmp_path: Path, docker_client: Any
) -> None:
    local = LocalCanary.make(tmp_path)
    env, tmp = local.env, local.tmp
    repos = make_repos(tmp_path / "repos")
    local.set_secret("CANARY", CANARY, "--user=alice")
    spec = tmp_path / "rebuild.yaml"
    spec.write_text(
        "name: rebuild\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: |\n"
        "      printf '%s' \"$CANARY\" | head -c 10\n"
        "      printf '%s' \"$CANARY\" | tail -c +11 >&2\n"
        "    container: runner-test/busybox:latest\n    env: [CANARY]\n"
        "    outputs:\n"
        "      a: {value: '${{ step.stdout }}'}\n"
        "      b: {value: '${{ step.stderr }}'}\n"
        "  - run: |\n"
        "      : '${{ outputs.a }}${{ outputs.b }}'\n"
        "      sleep 2\n"
        "    container: runner-test/busybox:latest\n"
        "    env:\n      - JOINED: '${{ outputs.a }}${{ outputs.b }}'\n"
        "changesetTemplate: {title: t, body: b, branch: b, commit: {message: m}}\n"
    )
    forms = leak_forms([CANARY])
    with Watcher(forms, extra_paths=[tmp], interval=0.1) as watcher:
        proc = run_cli(
            [
                "run",
                str(spec),
                "--repos-root",
                str(repos),
                "--out",
                str(local.out),
                "--json",
            ],
            env,
        )
    assert proc.returncode == 3, proc.stderr
    (finished,) = [e for e in events_of(proc.stdout) if e["event"] == "workspace.finished"]
    assert finished["status"] == "failed" and "CANARY" in finished["error"], finished["error"]
    local.assert_no_leaks(proc.stdout.encode() + proc.stderr.encode(), watcher, forms)
