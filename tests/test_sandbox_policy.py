"""The sandbox policy as data: parsing, refusals, and the step loop handing it to the runtime."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.execute.job import Job, JobServices, run_job
from runner.execute.steps import RunLimits
from runner.redact.active import ActiveRedactor
from runner.report import RecordingReporter
from runner.sandbox import DROPPED_CAPABILITIES, Hardening, HostPort, SandboxPolicy
from runner.testing import FakeRuntime
from tests.test_job import IMAGE, IMAGE_ID, Recorder, _job, step


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.com", "example.com", None),
        ("Example.COM:443", "example.com", 443),
        ("10.0.0.1:8080", "10.0.0.1", 8080),
        ("[::1]:9000", "::1", 9000),
        ("[fe80::1]", "fe80::1", None),
    ],
)
def test_host_port_parses(text: str, host: str, port: int | None) -> None:
    parsed = HostPort.parse(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert HostPort.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["", ":80", "example.com:0", "example.com:65536", "a b:1", "user@host", "h/p", "[::1"]
)
def test_host_port_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        HostPort.parse(text)


def test_policy_refuses_unknown_values() -> None:
    with pytest.raises(UsageError, match="isolation"):
        SandboxPolicy(isolation="kata")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="network policy"):
        SandboxPolicy(network="closed")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="job timeout"):
        SandboxPolicy(job_timeout_s=0)
    with pytest.raises(UsageError, match="disk cap"):
        SandboxPolicy(disk_cap_bytes=-1)


def test_the_default_hardening_drops_at_least_the_issue_s_capabilities() -> None:
    hardening = Hardening()
    assert {"NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP"} <= set(hardening.cap_drop)
    assert hardening.cap_drop == DROPPED_CAPABILITIES
    assert hardening.no_new_privileges and hardening.init
    assert hardening.pids_limit == 1024 and hardening.user is None


def test_every_step_gets_the_job_s_isolation_and_hardening(tmp_path: Path) -> None:
    job: Job
    job, store = _job(tmp_path, step("one") + step("two"), ["github.com/acme/app"])
    runtime = FakeRuntime(handler=lambda run: 0, images={IMAGE: IMAGE_ID})
    hardening = Hardening(pids_limit=64, user="1000:1000")
    work = tmp_path / "work"
    work.mkdir()
    run_job(
        job,
        lambda ref, n: store.reveal(ref.id, version=ref.version, actor="alice"),
        JobServices(
            runtime=runtime,
            registry=ActiveRedactor(),
            redactor=ActiveRedactor(),
            reporter=RecordingReporter(),
            sink=Recorder(ActiveRedactor()),
            limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
            cancel=threading.Event(),
            temp_root=work,
            sandbox=SandboxPolicy(isolation="gvisor", hardening=hardening),
        ),
    )
    assert len(runtime.steps) == 2
    for container in runtime.steps:
        assert container.sandbox.isolation == "gvisor"
        assert container.sandbox.hardening == hardening
