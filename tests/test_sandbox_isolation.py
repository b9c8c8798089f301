"""Isolation levels and hardening, end to end on the real engine, at both levels.

A probe step reports what it sees from inside its container: its kernel, its
privileges, what it may mount, create and open. runc steps share the host's
kernel; gVisor steps have one of their own. Both levels get the same
hardening: no new privileges, fewer capabilities than Docker's default, a
pids limit, read-only script and files, and ``--user`` where it is given.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner.execute.steps import RUN_LABEL
from runner.sandbox import DROPPED_CAPABILITIES, Isolation
from runner.testing import FakeRuntime
from tests.helpers import TEST_IMAGE, make_repo, run_runner, runner_env
from tests.test_spec_corpus import CORPUS

# Both levels on the real engine; gVisor's runs are the longer ones.
LEVELS = [
    pytest.param("runc", marks=pytest.mark.docker),
    pytest.param("gvisor", marks=[pytest.mark.docker, pytest.mark.slow]),
]


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest) -> str:
    """The isolation level a test runs at, on an engine that has it."""
    request.getfixturevalue("docker_client")
    if request.param == "gvisor":
        request.getfixturevalue("gvisor")
    return str(request.param)


REPOSITORY = "github.com/acme/app"

# Capability numbers (linux/capability.h) for decoding CapEff.
CAPABILITIES = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "FOWNER": 3,
    "SETGID": 6,
    "SETUID": 7,
    "NET_RAW": 13,
    "MKNOD": 27,
    "AUDIT_WRITE": 29,
    "SETFCAP": 31,
}
# What installing packages as root needs (dpkg and apk chown files, apt drops to _apt).
KEPT = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")

PROBE = r"""
echo "kernel=$(uname -r)"
echo "dmesg=$(dmesg 2>&1 | head -n 1)"
grep -E '^(NoNewPrivs|CapEff):' /proc/self/status | tr -d ' \t' | sed 's/:/=/'
echo "$(setpriv -d | grep no_new_privs | tr -d ' ' | sed 's/:/=/')"
echo "uid=$(id -u)"
mount -t tmpfs none /mnt 2>/dev/null && echo mount=ok || echo mount=refused
mknod /work/probe-device c 1 3 2>/dev/null && echo mknod=ok || echo mknod=refused
ping -c 1 -W 2 127.0.0.1 >/dev/null 2>&1 && echo raw_socket=ok || echo raw_socket=refused
{ echo tampered >> /.runner/step.sh; } 2>/dev/null && echo script=writable || echo script=read-only
{ echo tampered >> /etc/probe.txt; } 2>/dev/null && echo files=writable || echo files=read-only
echo probed > probe.txt && echo workspace=writable
"""


def _spec(tmp_path: Path, name: str, steps: str) -> Path:
    spec = tmp_path / "spec" / f"{name}.yaml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(
        f"name: {name}\non:\n  - repository: {REPOSITORY}\nsteps:\n{steps}"
        "changesetTemplate:\n  title: Probe\n  body: Probe\n  branch: probe\n"
        "  commit:\n    message: Probe\n"
    )
    return spec


def _step(script: str, extra: str = "") -> str:
    body = "".join(f"      {line}\n" for line in script.strip().splitlines())
    return f"  - run: |\n{body}    container: {TEST_IMAGE}\n{extra}"


class Run:
    """One `runner run --json` in its own home, temp folder and output folder."""

    def __init__(self, tmp_path: Path, spec: Path, *flags: str, **settings: str) -> None:
        repos = tmp_path / "repos"
        if not (repos / REPOSITORY).exists():
            make_repo(repos, REPOSITORY, {"README.md": "# app\n"})
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.out = tmp_path / "out"
        env = runner_env(tmp_path / "home", TMPDIR=str(self.tmp), **settings)
        args = ["run", str(spec), "--repos-root", str(repos), "--out", str(self.out), "--json"]
        self.proc = run_runner([*args, *flags], env, timeout=300)
        self.events = [json.loads(line) for line in self.proc.stdout.splitlines() if line.strip()]

    def lines(self) -> list[str]:
        return [e["line"] for e in self.events if e["event"] == "step.output"]

    def facts(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for line in self.lines():
            key, sep, value = line.partition("=")
            if sep:
                found[key] = value
        return found

    def finished(self) -> dict[str, Any]:
        (event,) = [e for e in self.events if e["event"] == "workspace.finished"]
        return dict(event)

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return data

    def run_id(self) -> str:
        (event,) = [e for e in self.events if e["event"] == "run.started"]
        return str(event["run_id"])


def _containers(run_id: str) -> list[str]:
    proc = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.split()


def _capabilities(cap_eff: str) -> set[str]:
    mask = int(cap_eff, 16)
    return {name for name, bit in CAPABILITIES.items() if mask & (1 << bit)}


def test_a_probe_step_shows_its_kernel_and_its_confinement(tmp_path: Path, level: str) -> None:
    files = "    files:\n      /etc/probe.txt: mounted from the spec\n"
    run = Run(tmp_path, _spec(tmp_path, "probe", _step(PROBE, files)), "--isolation", level)
    assert run.proc.returncode == 0, run.proc.stderr
    facts = run.facts()

    host_kernel = os.uname().release
    if level == "runc":
        assert facts["kernel"] == host_kernel
        assert "gVisor" not in facts["dmesg"]
        # gVisor's /proc has no such line; setpriv asks the kernel at both levels.
        assert facts["NoNewPrivs"] == "1"
    else:
        assert facts["kernel"] != host_kernel
        assert "gVisor" in facts["dmesg"]
    assert facts["no_new_privs"] == "1"
    capabilities = _capabilities(facts["CapEff"])
    assert not capabilities & set(DROPPED_CAPABILITIES)
    assert set(KEPT) <= capabilities
    assert facts["uid"] == "0"  # the image's own user: root here
    assert facts["mount"] == "refused"
    assert facts["mknod"] == "refused"
    assert facts["raw_socket"] == "refused"
    assert facts["script"] == "read-only"
    assert facts["files"] == "read-only"
    assert facts["workspace"] == "writable"

    assert run.finished()["status"] == "changed"
    assert run.events[0]["isolation"] == level
    assert run.summary()["isolation"] == level


def test_steps_run_as_the_user_given_and_still_change_the_workspace(
    tmp_path: Path, level: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can hand the workspace to another user")
    script = """
echo "uid=$(id -u) gid=$(id -g)"
echo made > sub/made.txt
echo changed >> README.md
"""
    repos = tmp_path / "repos"
    make_repo(repos, REPOSITORY, {"README.md": "# app\n", "sub/keep.txt": "keep\n"})
    spec = _spec(tmp_path, "as-user", _step(script))

    run = Run(tmp_path, spec, "--isolation", level, "--user", "4321:4322")

    assert run.proc.returncode == 0, run.proc.stderr
    assert "uid=4321 gid=4322" in run.lines()
    assert run.finished()["status"] == "changed"
    patch = (run.out / REPOSITORY / "_root" / "probe.patch").read_text()
    assert "+made" in patch and "+changed" in patch


@pytest.mark.docker
@pytest.mark.slow
def test_settings_choose_the_level_and_user_when_no_flag_does(
    tmp_path: Path, docker_client: object, gvisor: None
) -> None:
    spec = _spec(tmp_path, "settings", _step('echo "uid=$(id -u)"; echo "kernel=$(uname -r)"'))
    run = Run(tmp_path, spec, RUNNER_ISOLATION="gvisor", RUNNER_STEP_USER="4321")
    assert run.proc.returncode == 0, run.proc.stderr
    assert run.facts()["uid"] == "4321"
    assert run.facts()["kernel"] != os.uname().release
    assert run.summary()["isolation"] == "gvisor"


def test_an_unknown_isolation_setting_is_refused(tmp_path: Path) -> None:
    run = Run(tmp_path, _spec(tmp_path, "bad-level", _step("true")), RUNNER_ISOLATION="kvm")
    assert run.proc.returncode == 1
    assert "error: RUNNER_ISOLATION='kvm' is not an isolation level" in run.proc.stderr
    assert not run.out.exists()


def test_a_user_that_is_not_uid_gid_is_a_usage_error(tmp_path: Path) -> None:
    run = Run(tmp_path, _spec(tmp_path, "bad-user", _step("true")), "--user", "nobody")
    assert run.proc.returncode == 2
    assert "'nobody' is not UID[:GID]" in run.proc.stderr
    assert not run.out.exists()


# The bomb starts sleepers until a fork fails; without a limit it would start them all.
FORK_BOMB = """
i=0
while [ $i -lt 3000 ]; do
  sleep 600 &
  i=$((i + 1))
  [ $((i % 10)) = 0 ] && echo "started=$i"
done
echo "unlimited=$i"
"""


@pytest.mark.parametrize("limit", [None, 300], ids=["default-limit", "limit-300"])
def test_a_fork_bomb_is_stopped_by_the_pids_limit_and_leaves_nothing(
    tmp_path: Path, level: str, limit: int | None
) -> None:
    spec = _spec(tmp_path, "bomb", _step(FORK_BOMB))
    flags = ["--pids-limit", str(limit)] if limit else []

    run = Run(tmp_path, spec, "--isolation", level, "--timeout", "240", *flags)

    assert run.proc.returncode == 3, run.proc.stderr
    finished = run.finished()
    assert finished["status"] == "failed"
    assert "timed out" not in finished["error"]
    assert not any(line.startswith("unlimited=") for line in run.lines())
    started = [int(v) for k, _, v in (ln.partition("=") for ln in run.lines()) if k == "started"]
    assert started and max(started) < (limit or 1024)  # 1024: the default --pids-limit
    if level == "runc":
        assert "can't fork" in finished["error"]
    # Under gVisor the sandbox's own threads count too: it dies sooner, as a whole.
    assert run.summary()["counts"]["failed"] == 1
    assert _containers(run.run_id()) == []
    assert list(run.tmp.iterdir()) == []


# Corpus specs under both levels ---------------------------------------------------------------

CORPUS_REPOSITORY = "github.com/sourcegraph/automation-testing"
# A representative few of the corpus specs that need nothing but a shell: `files`,
# workspaces, templates in files, find | xargs sed. Each with what its diff adds.
CORPUS_RUNS = {
    "utils/branch-addressing.yaml": ["+We are in project1", "+We are in project2"],
    "ci-and-tooling-config/global-gitignore.batch.yaml": ["+*.swp"],
    "utils/add-backstage-minimal.batch.yaml": ["+  name: sourcegraph"],
    "misc/update-language.sedspec.yaml": ["+Add it to the allowlist."],
}


@pytest.mark.parametrize("name", sorted(CORPUS_RUNS))
def test_corpus_specs_run_at_both_levels_under_the_hardened_defaults(
    tmp_path: Path, level: str, name: str
) -> None:
    text = (CORPUS / name).read_text()
    # The local image stands in for alpine:3, as no registry is reachable.
    assert "container: alpine:3" in text
    spec = tmp_path / "spec" / Path(name).name
    spec.parent.mkdir()
    spec.write_text(text.replace("container: alpine:3", f"container: {TEST_IMAGE}"))
    repos = tmp_path / "repos"
    make_repo(
        repos,
        CORPUS_REPOSITORY,
        {
            "project1/package.json": "{}\n",
            "project2/package.json": "{}\n",
            ".gitignore": "node_modules\n",
            "docs/README.md": "Add it to the whitelist.\n",
        },
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))

    proc = run_runner(
        ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--isolation", level],
        env,
        timeout=300,
    )

    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["isolation"] == level
    patches = "".join(p.read_text() for p in sorted(out.rglob("*.patch")))
    for added in CORPUS_RUNS[name]:
        assert added in patches


# An engine without gVisor, and scripts/ensure-runsc.sh ------------------------------------------

ENSURE_RUNSC = str(Path(__file__).resolve().parents[1] / "scripts" / "ensure-runsc.sh")
RUNSC_ENTRY = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}


def _ensure_runsc(docker_host: str, dockerd_pid: int) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DOCKER_HOST": docker_host,
        "RUNNER_DOCKERD_PID": str(dockerd_pid),
    }
    return subprocess.run(
        [ENSURE_RUNSC], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.docker
@pytest.mark.slow
def test_an_engine_without_runsc_is_refused_until_ensure_runsc_registers_it(
    tmp_path: Path, docker_client: object
) -> None:
    from tests.attack_support import Dockerd

    engine = Dockerd()
    config = engine.root / "daemon.json"
    # Settings of the operator's own, which the script must keep.
    other = {"other": {"path": "/usr/bin/runc"}}
    mine: dict[str, Any] = {"labels": ["runner-test=private"], "runtimes": other}
    config.write_text(json.dumps(mine) + "\n")
    try:
        engine.start()
        engine.load_image()
        sleeper = engine.docker("run", "-d", "--network", "none", TEST_IMAGE, "sleep", "600")
        sleeper = sleeper.strip()
        started_at = engine.docker("inspect", "-f", "{{.State.StartedAt}}", sleeper)

        # runner refuses gvisor on this engine before any container starts.
        make_repo(tmp_path / "repos", REPOSITORY, {"README.md": "# app\n"})
        spec = _spec(tmp_path, "refused", _step("echo never"))
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        env = runner_env(tmp_path / "home", TMPDIR=str(tmp), DOCKER_HOST=engine.host)
        args = ["run", str(spec), "--repos-root", str(tmp_path / "repos"), "--isolation", "gvisor"]
        proc = run_runner([*args, "--out", str(tmp_path / "out")], env)
        assert proc.returncode == 1
        assert (
            "error: the Docker engine has no runsc runtime, which --isolation gvisor needs"
            in proc.stderr
        )
        assert "run scripts/ensure-runsc.sh as root" in proc.stderr
        assert engine.docker("ps", "-aq").split() == [sleeper[:12]]
        # An executor told to use gVisor does not start there either.
        token = tmp_path / "token"
        token.write_text("runner-test-token\n")
        executor = ["executor", "--url", "http://127.0.0.1:9", "--token-file", str(token)]
        proc = run_runner([*executor, "--isolation", "gvisor"], env, timeout=60)
        assert proc.returncode == 1
        assert "no runsc runtime, which --isolation gvisor needs" in proc.stderr

        # Where the script cannot reload the engine, it changes nothing and says what to add.
        before = config.read_bytes()
        proc = _ensure_runsc(engine.host, os.getpid())
        assert proc.returncode == 1
        assert f"process {os.getpid()} is not a running dockerd" in proc.stderr
        assert '"runtimes": {"runsc": {"path": "/usr/bin/runsc"' in proc.stderr
        assert config.read_bytes() == before

        # Where it can: merged into the engine's own config file, reloaded, not restarted.
        pid = int((engine.root / "dockerd.pid").read_text())
        proc = _ensure_runsc(engine.host, pid)
        assert proc.returncode == 0, proc.stderr
        assert f"registered runsc in {config}" in proc.stderr
        merged = json.loads(config.read_text())
        assert merged["labels"] == mine["labels"]
        assert merged["runtimes"] == {**other, "runsc": RUNSC_ENTRY}
        runtimes = json.loads(engine.docker("info", "--format", "{{json .Runtimes}}"))
        assert runtimes["runsc"]["path"] == "/usr/bin/runsc"
        state = engine.docker("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", sleeper)
        assert state == f"true {started_at}"

        # Run again: it finds runsc there and changes nothing.
        after = (config.read_bytes(), config.stat().st_mtime_ns)
        proc = _ensure_runsc(engine.host, pid)
        assert (proc.returncode, proc.stderr) == (0, "")
        assert (config.read_bytes(), config.stat().st_mtime_ns) == after
    finally:
        engine.close()


# What a coordinator shows -------------------------------------------------------------------------


def _isolation_shown(page: str) -> str:
    found = re.search(r'<dd id="job-isolation">(.*?)</dd>', page, re.S)
    assert found is not None, "no isolation on the job page"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def test_a_job_page_says_which_isolation_level_ran_the_job(tmp_path: Path) -> None:
    from tests.web_support import WebWorld, changeset_result, event

    world = WebWorld(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    try:
        alice = world.signed_in("alice")
        completed = world.submit("alice", "user:alice")
        assert _isolation_shown(alice.get(f"/jobs/{completed}").text) == "—"  # not started

        claimed = world.claim()
        started = {"isolation": "gvisor", "network": "open"}
        world.append(claimed, 0, [event("run.started", sandbox=started)])
        page = alice.get(f"/jobs/{completed}").text
        assert _isolation_shown(page) == "gvisor (a kernel of its own: gVisor)"
        world.complete(claimed, {**changeset_result(), "sandbox": started})
        page = alice.get(f"/jobs/{completed}").text
        assert "state-completed" in page
        assert _isolation_shown(page) == "gvisor (a kernel of its own: gVisor)"

        # A failed job has no result: its log's start says what ran it.
        failed = world.submit("alice", "user:alice")
        claimed = world.claim()
        world.append(claimed, 0, [event("run.started", sandbox={"isolation": "runc"})])
        world.coordinator.fail(
            world.principal("exec"), failed, lease=claimed.lease.token, state="failed", error="x"
        )
        page = alice.get(f"/jobs/{failed}").text
        assert "state-failed" in page
        assert _isolation_shown(page) == "runc (the host's kernel)"
    finally:
        world.close()


# An executor's level, and a namespace that requires gVisor ---------------------------------------


def _one_job(
    tmp_path: Path, own: Isolation, engine: tuple[Isolation, ...], required: Isolation | None
) -> tuple[Any, FakeRuntime, list[dict[str, Any]]]:
    """One job of user:alice through an in-process coordinator and an executor at ``own``."""
    from runner.sandbox import SandboxPolicy
    from runner.sandbox.tighten import NamespacePolicy
    from tests.test_namespace_policy import IMAGES, log_events, run_executor, submit
    from tests.test_queue_support import ManualClock, World, make_repos

    world = World(
        f"sqlite:///{tmp_path / 'state.db'}", make_repos(tmp_path / "repos"), ManualClock()
    )
    try:
        if required is not None:
            world.client("carol").namespace_policy_set(
                "user:alice", NamespacePolicy(isolation=required)
            )
        (job_id,) = submit(world, tmp_path, "user:alice")
        runtime = FakeRuntime(images=IMAGES, isolations=engine)
        run_executor(world, runtime, SandboxPolicy(isolation=own), tmp_path / "tmp")
        return world.jobs.get(job_id), runtime, log_events(world, job_id)
    finally:
        world.close()


def test_an_executor_runs_its_jobs_at_its_level_and_the_job_records_it(tmp_path: Path) -> None:
    record, runtime, events = _one_job(tmp_path, "gvisor", ("runc", "gvisor"), None)
    assert record.state == "completed"
    assert [step.sandbox.isolation for step in runtime.steps] == ["gvisor"]
    assert runtime.steps[0].sandbox.hardening.cap_drop == DROPPED_CAPABILITIES
    assert record.result["sandbox"]["isolation"] == "gvisor"
    assert events[0]["event"] == "run.started"
    assert events[0]["sandbox"]["isolation"] == "gvisor"


def test_a_namespace_requiring_gvisor_on_an_engine_without_it_hands_the_job_back(
    tmp_path: Path,
) -> None:
    record, runtime, events = _one_job(tmp_path, "runc", ("runc",), "gvisor")
    # Errored at each attempt, so that an executor whose engine has runsc may take it
    # (here only this one claims it, until the coordinator gives up on it).
    assert record.state == "failed" and record.attempts > 1
    assert "no runsc runtime, which --isolation gvisor needs" in record.error
    assert runtime.steps == []
    assert events[0]["sandbox"]["isolation"] == "gvisor"
