"""Namespace sandbox policies: set by admins, carried by claims, applied by executors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.cli import run_cli
from runner.errors import PermissionDeniedError, UsageError
from runner.execute.steps import RunLimits
from runner.queue.bundle import Bundle
from runner.queue.executor import Executor, ExecutorSettings
from runner.sandbox import HostPort, SandboxPolicy
from runner.sandbox.tighten import NamespacePolicy
from runner.testing import FakeRuntime, FakeStepRun
from runner.testing.queue import InProcessExecutorApi
from tests.attack_support import Cluster
from tests.helpers import TEST_IMAGE, make_repo
from tests.test_queue_support import (
    SPEC_PLAIN,
    ManualClock,
    World,
    make_repos,
    world,
    write_spec,
)

__all__ = ["world"]  # a fixture, used by name

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

IMAGES = {TEST_IMAGE: "sha256:" + "c" * 64}
STRICT = NamespacePolicy(
    isolation="gvisor",
    network="allow",
    allow_hosts=(HostPort("pkg.example.com", 443), HostPort("git.example.com", None)),
    job_timeout_s=60,
    disk_cap_bytes=1 << 30,
)


def submit(world: World, tmp_path: Path, namespace: str, text: str = SPEC_PLAIN) -> list[str]:
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", text))
    return [j["id"] for j in world.client("alice").submit(bundle, namespace)["jobs"]]


# Over the API -----------------------------------------------------------------------------------


def test_only_admins_set_a_policy_and_members_see_it(world: World) -> None:
    carol, alice, bob = world.client("carol"), world.client("alice"), world.client("bob")
    assert alice.namespace_policy("org:acme")["network"] is None  # nothing set yet
    with pytest.raises(PermissionDeniedError, match="only admins"):
        alice.namespace_policy_set("org:acme", NamespacePolicy(network="none"))
    with pytest.raises(PermissionDeniedError, match="only admins"):
        alice.namespace_policy_set("user:alice", NamespacePolicy(network="open"))
    set_answer = carol.namespace_policy_set("org:acme", STRICT)
    assert set_answer["updated_by"] == "carol"
    shown = alice.namespace_policy("org:acme")
    assert NamespacePolicy.from_json(shown) == STRICT
    assert shown["allow_hosts"] == ["pkg.example.com:443", "git.example.com"]
    assert shown["updated_by"] == "carol" and shown["updated_at"]
    with pytest.raises(PermissionDeniedError, match="may not see the policy"):
        bob.namespace_policy("org:acme")
    with pytest.raises(PermissionDeniedError, match="only admins"):
        alice.namespace_policy_clear("org:acme")
    # Setting again replaces the whole policy.
    carol.namespace_policy_set("org:acme", NamespacePolicy(job_timeout_s=5))
    assert NamespacePolicy.from_json(alice.namespace_policy("org:acme")) == NamespacePolicy(
        job_timeout_s=5
    )
    assert carol.namespace_policy_clear("org:acme")["cleared"] is True
    assert carol.namespace_policy_clear("org:acme")["cleared"] is False
    assert NamespacePolicy.from_json(alice.namespace_policy("org:acme")).empty


def test_global_and_nonsense_are_refused(world: World) -> None:
    carol = world.client("carol")
    with pytest.raises(UsageError, match="jobs never run in global"):
        carol.namespace_policy_set("global", NamespacePolicy(network="none"))
    answer = world.http.put(
        "/api/namespaces/org:acme/policy",
        json={"allow_hosts": ["a.com"]},
        headers={"Authorization": f"Bearer {world.token['carol']}"},
    )
    assert answer.status_code == 400 and "--allow-host needs --network" in answer.text
    for body in ({"network": "closed"}, {"job_timeout_s": 0}, {"disk_cap_bytes": -1}):
        answer = world.http.put(
            "/api/namespaces/org:acme/policy",
            json=body,
            headers={"Authorization": f"Bearer {world.token['carol']}"},
        )
        assert answer.status_code == 422, body
    with pytest.raises(PermissionDeniedError, match="executor tokens"):
        world.client("exec").namespace_policy("org:acme")


def test_a_claim_carries_its_namespace_s_policy_as_it_stands(world: World, tmp_path: Path) -> None:
    ids = submit(world, tmp_path, "org:acme") + submit(world, tmp_path / "b", "user:alice")
    # Set after submitting: the claim carries the policy of the moment it is claimed.
    world.client("carol").namespace_policy_set("org:acme", STRICT)
    executor = world.client("exec")
    claims = {c.job_id: c for c in (executor.claim("ex1"), executor.claim("ex1")) if c}
    assert set(claims) == set(ids)
    assert claims[ids[0]].policy == STRICT
    assert claims[ids[1]].policy.empty


# Applied by an executor -----------------------------------------------------------------------


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    w = World(f"sqlite:///{tmp_path / 'state.db'}", make_repos(tmp_path / "repos"), ManualClock())
    yield w
    w.close()


def run_executor(world: World, runtime: FakeRuntime, own: SandboxPolicy, tmp: Path) -> Executor:
    """An executor with policy ``own`` on a thread, until every queued job has ended."""
    executor = Executor(
        api=InProcessExecutorApi(world.coordinator, world.token["exec"]),
        runtime=runtime,
        settings=ExecutorSettings(
            name="ex1",
            limits=RunLimits(timeout_s=600, capture_limit=1 << 20),
            max_jobs=1,
            poll_interval_s=0.05,
            heartbeat_interval_s=0.1,
            log_flush_interval_s=0.05,
            report_timeout_s=5,
            temp_root=tmp,
            sandbox=own,
        ),
    )
    thread = threading.Thread(target=executor.run, daemon=True)
    thread.start()
    try:
        while any(not j.terminal for j in world.jobs.list()):
            thread.join(0.05)
            assert thread.is_alive()
    finally:
        executor.stop_claiming()
        thread.join(10)
    return executor


def log_events(world: World, job_id: str) -> list[dict[str, Any]]:
    text = "".join(c.text for c in world.jobs.logs(job_id, limit=1000))
    return [json.loads(line) for line in text.splitlines() if line]


def test_an_executor_runs_each_job_under_the_stricter_policy(
    sqlite_world: World, tmp_path: Path
) -> None:
    world = sqlite_world
    required = NamespacePolicy(
        isolation="gvisor", network="none", job_timeout_s=60, disk_cap_bytes=1 << 30
    )
    world.client("carol").namespace_policy_set("org:acme", required)
    strict_job = submit(world, tmp_path, "org:acme")[0]
    loose_job = submit(world, tmp_path / "b", "user:alice")[0]
    own = SandboxPolicy(network="open", job_timeout_s=600)
    seen: dict[str, FakeStepRun] = {}

    def handler(run: FakeStepRun) -> int:
        seen[run.step.labels["org.runner.run-id"]] = run
        return 0

    runtime = FakeRuntime(handler=handler, images=IMAGES)
    run_executor(world, runtime, own, tmp_path / "tmp")

    strict = world.jobs.get(strict_job)
    loose = world.jobs.get(loose_job)
    assert strict is not None and loose is not None
    assert (strict.state, loose.state) == ("completed", "completed")
    assert strict.result is not None and loose.result is not None
    # gVisor, the stricter network, the smaller timeout and the namespace's cap win
    # (tests/test_tighten.py holds the rule's every case, allow-lists included).
    expected = {
        "isolation": "gvisor",
        "network": "none",
        "allow_hosts": [],
        "job_timeout_s": 60.0,
        "disk_cap_bytes": 1 << 30,
    }
    assert strict.result["sandbox"] == expected
    (started,) = [e for e in log_events(world, strict_job) if e["event"] == "run.started"]
    assert started["sandbox"] == expected
    assert seen[strict_job].step.sandbox.isolation == "gvisor"
    assert seen[strict_job].step.timeout_s <= 60
    # A namespace without a policy runs under the executor's own.
    assert loose.result["sandbox"] == {
        "isolation": "runc",
        "network": "open",
        "allow_hosts": [],
        "job_timeout_s": 600.0,
        "disk_cap_bytes": None,
    }
    assert seen[loose_job].step.sandbox.isolation == "runc"
    assert 60 < seen[loose_job].step.timeout_s <= 600


def test_a_namespace_s_limits_fail_its_jobs_with_their_messages(
    sqlite_world: World, tmp_path: Path
) -> None:
    world = sqlite_world
    carol = world.client("carol")
    carol.namespace_policy_set("org:acme", NamespacePolicy(job_timeout_s=30))
    carol.namespace_policy_set("user:alice", NamespacePolicy(disk_cap_bytes=1 << 20))
    slow_job = submit(world, tmp_path, "org:acme")[0]
    big_job = submit(world, tmp_path / "b", "user:alice")[0]

    def handler(run: FakeStepRun) -> int:
        if run.step.labels["org.runner.run-id"] == slow_job:
            run.sleep(45)  # on the fake clock: past the namespace's 30 s
            return 0
        run.written = 4 << 20  # outside the workspace, in the container's own layer
        run.cancel.wait(30)  # until the disk watcher stops it
        return 0

    runtime = FakeRuntime(handler=handler, images=IMAGES)
    run_executor(world, runtime, SandboxPolicy(job_timeout_s=3600), tmp_path / "tmp")
    slow, big = world.jobs.get(slow_job), world.jobs.get(big_job)
    assert slow is not None and big is not None
    assert slow.state == "failed" and slow.error is not None
    assert "step 1 was stopped: the workspace went over its job timeout (30 s)" in slow.error
    assert big.state == "failed" and big.error is not None
    assert "step 1 was stopped: the workspace went over its disk cap (1 MiB)" in big.error


# The command line ---------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import os

    for key in [k for k in os.environ if k.startswith("RUNNER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNNER_USER", "operator")
    return tmp_path / "home"


def test_the_operator_sets_shows_and_clears_a_policy_locally(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["namespace", "set", "org:acme", "--network", "allow", "--allow-host", "a.com:443"]
    args += ["--isolation", "gvisor", "--job-timeout", "600", "--disk-cap", "2g"]
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    assert out.strip() == (
        "set the sandbox policy of org:acme: isolation gvisor, network allow (a.com:443), "
        "job timeout 600 s, disk cap 2 GiB"
    )
    assert run_cli(["namespace", "show", "org:acme", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["network"] == "allow" and shown["disk_cap_bytes"] == 2 << 30
    assert shown["updated_by"] == "operator"
    assert run_cli(["namespace", "show", "org:acme"]) == 0
    assert "set by operator" in capsys.readouterr().out
    assert run_cli(["namespace", "clear", "org:acme"]) == 0
    assert "cleared the sandbox policy of org:acme" in capsys.readouterr().out
    assert run_cli(["namespace", "show", "org:acme"]) == 0
    assert capsys.readouterr().out.strip() == "org:acme: no requirements"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["global", "--network", "none"], "jobs never run in global"),
        (["org:acme", "--allow-host", "a.com"], "--allow-host needs --network"),
        (["org:acme", "--network", "allow", "--allow-host", "a b"], "is not HOST[:PORT]"),
        (["org:acme", "--disk-cap", "lots"], "is not a size"),
        (["org:acme", "--network", "closed"], "'closed' is not one of"),
    ],
)
def test_nonsense_is_a_usage_error(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run_cli(["namespace", "set", *args]) == 2
    assert message in capsys.readouterr().err


# End to end: a coordinator, an executor and Docker ----------------------------------------------

SLEEPY = """\
name: sleepy
on:
  - repository: github.com/acme/app
steps:
  - run: sleep 2
    container: runner-test/busybox:latest
  - run: sleep 2
    container: runner-test/busybox:latest
  - run: sleep 2 && echo late > late.txt
    container: runner-test/busybox:latest
changesetTemplate: {title: t, body: b, branch: sleepy, commit: {message: m}}
"""
QUICK = (
    SLEEPY.replace("sleepy", "quick")
    .replace("sleep 2 && ", "")
    .replace("  - run: sleep 2\n    container: runner-test/busybox:latest\n", "")
)


@pytest.mark.docker
def test_a_coordinator_s_policy_reaches_real_jobs(tmp_path: Path, docker_client: Any) -> None:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    c = Cluster(tmp_path, repos)
    try:
        c.cli("user", "add", "carol", "--admin")
        c.cli("user", "add", "alice")
        for who in ("carol", "alice"):
            c.token("user", who)
        c.token("executor", "fleet", "exec.tok")
        c.start_server()
        refused = c.remote("namespace", "set", "user:alice", "--job-timeout", "1")
        assert refused.returncode == 1 and "only admins" in refused.stderr
        done = c.remote("namespace", "set", "user:alice", "--job-timeout", "5", who="carol")
        assert done.returncode == 0, done.stderr
        shown = c.remote("namespace", "show", "user:alice")
        assert shown.returncode == 0 and "job timeout 5 s" in shown.stdout, shown.stderr
        c.start_executor("exec-a", "--disk-cap", "1g", "--job-timeout", "600")
        ids = {}
        for name, text in (("sleepy", SLEEPY), ("quick", QUICK)):
            spec = tmp_path / f"{name}.yaml"
            spec.write_text(text)
            proc = c.remote("submit", str(spec), "--namespace", "user:alice")
            assert proc.returncode == 0, proc.stderr
            ids[name] = proc.stdout.split()[0]
        jobs = c.wait_jobs(ids.values(), states=("completed", "failed"), timeout=120)
        assert jobs[ids["quick"]]["state"] == "completed"
        assert jobs[ids["sleepy"]]["state"] == "failed"
        quick = c.remote("jobs", "show", ids["quick"])
        assert "sandbox     isolation runc, network open, job timeout 5 s, disk cap 1 GiB" in (
            quick.stdout
        ), quick.stdout
        sleepy = c.remote("jobs", "show", ids["sleepy"])
        assert "went over its job timeout (5 s)" in sleepy.stdout, sleepy.stdout
    finally:
        c.close()
