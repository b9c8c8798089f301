"""What only the fake runtime does, and the step description every runtime receives.

What the fake shares with Docker is in tests/test_runtime_contract.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from runner.errors import ContainerRuntimeError, ExecutionError, ImageNotFoundError
from runner.execute.runtime import ContainerRuntime, Mount, StepContainer, StepExit
from runner.secrets.value import Secret
from runner.testing import FakeClock, FakeRuntime, FakeStepRun


def _step(workspace: Path, **changes: object) -> StepContainer:
    (workspace / "cfg").mkdir(exist_ok=True)  # every mount source exists, as runtimes require
    base: dict[str, object] = {
        "image": "sha256:abc",
        "script": "echo hi",
        "workdir": "/work/sub",
        "mounts": [
            Mount(source=workspace, target="/work", read_only=False),
            Mount(source=workspace / "cfg", target="/work/sub/cfg"),
        ],
        "env": {"PLAIN": "1"},
        "secret_env": {"TOKEN": Secret("s3cr3t-value")},
        "labels": {"runner.run": "r1"},
    }
    base.update(changes)
    return StepContainer(**base)  # type: ignore[arg-type]


class _Collector:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []

    def __call__(self, stream: str, data: bytes) -> None:
        self.chunks.append((stream, data))


def test_fake_plays_the_handler_and_records_steps(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        run.stdout("out\n")
        run.stderr(b"err\n")
        run.host_path("result.txt").write_text(run.step.secret_env["TOKEN"].reveal())
        run.host_path("/work/top.txt").write_text("top")
        return 3

    (tmp_path / "sub").mkdir()
    runtime = FakeRuntime(handler=handler)
    out = _Collector()
    step = _step(tmp_path)
    result = runtime.run_step(step, on_output=out, cancel=threading.Event())

    assert result == StepExit(exit_code=3)
    assert not result.succeeded
    assert out.chunks == [("stdout", b"out\n"), ("stderr", b"err\n")]
    assert (tmp_path / "sub" / "result.txt").read_text() == "s3cr3t-value"
    assert (tmp_path / "top.txt").read_text() == "top"
    assert runtime.steps == [step]


def test_fake_host_path_prefers_the_deepest_mount(tmp_path: Path) -> None:
    seen: list[Path] = []

    def handler(run: FakeStepRun) -> int:
        seen.append(run.host_path("cfg/a.yml"))
        with pytest.raises(ValueError, match="not under any mount"):
            run.host_path("/etc/passwd")
        return 0

    FakeRuntime(handler=handler).run_step(
        _step(tmp_path), on_output=_Collector(), cancel=threading.Event()
    )
    assert seen == [tmp_path / "cfg" / "a.yml"]


def test_fake_reports_cancel_set_during_the_step(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        run.cancel.set()
        return 0

    result = FakeRuntime(handler=handler).run_step(
        _step(tmp_path), on_output=_Collector(), cancel=threading.Event()
    )
    assert result.canceled


def test_fake_scripts_timeouts_and_engine_failures(tmp_path: Path) -> None:
    timed_out = FakeRuntime(handler=lambda run: StepExit(exit_code=137, timed_out=True))
    result = timed_out.run_step(_step(tmp_path), on_output=_Collector(), cancel=threading.Event())
    assert result.timed_out

    def broken(run: FakeStepRun) -> int:
        raise ContainerRuntimeError("engine gone", hint="retry")

    with pytest.raises(ContainerRuntimeError):
        FakeRuntime(handler=broken).run_step(
            _step(tmp_path), on_output=_Collector(), cancel=threading.Event()
        )


def test_fake_image_lookup() -> None:
    runtime = FakeRuntime(images={"alpine:3": "sha256:111"})
    assert runtime.image_id("alpine:3") == "sha256:111"
    assert runtime.image_id("sha256:111") == "sha256:111"
    with pytest.raises(ImageNotFoundError, match=r"missing/image:1"):
        runtime.image_id("missing/image:1")
    assert runtime.image_lookups == ["alpine:3", "sha256:111", "missing/image:1"]


def test_fake_sweep_removes_matching_leftovers() -> None:
    runtime = FakeRuntime(
        leftovers=[{"runner.run": "a"}, {"runner.run": "b"}, {"other": "x"}, {"runner.run": "a"}]
    )
    assert runtime.sweep("runner.run", "a") == 2
    assert runtime.sweep("runner.run", "a") == 0
    assert runtime.sweep("runner.run") == 1
    assert runtime.leftovers == [{"other": "x"}]


def test_fake_satisfies_the_protocol() -> None:
    runtime: ContainerRuntime = FakeRuntime()
    assert runtime.sweep("k") == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workdir": "work"}, "not an absolute path"),
        ({"mounts": [Mount(source=Path("rel"), target="/x")]}, "absolute paths"),
        ({"mounts": [Mount(source=Path("/abs"), target="x")]}, "absolute paths"),
        ({"env": {"A=B": "1"}}, "'A=B' is not valid"),
        ({"env": {"": "1"}}, "'' is not valid"),
        ({"secret_env": {"MY-TOKEN": Secret("12345678")}}, "'MY-TOKEN' is not valid"),
        ({"secret_env": {"1TOKEN": Secret("12345678")}}, "'1TOKEN' is not valid"),
        ({"timeout_s": 0}, "timeout must be positive"),
        ({"memory_bytes": 0}, "memory limit"),
        ({"cpus": -1.0}, "CPU limit"),
    ],
)
def test_step_container_refuses_what_no_runtime_can_run(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ExecutionError, match=message):
        _step(tmp_path, **changes)


def test_step_container_refuses_nul_in_a_secret_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(ExecutionError) as info:
        _step(tmp_path, secret_env={"TOKEN": Secret("before\0after-secret")})
    assert "TOKEN" in str(info.value)
    assert "before" not in str(info.value)
    assert "after-secret" not in str(info.value)
    # The repr of the step never shows a value either.
    step = _step(tmp_path)
    assert "s3cr3t-value" not in repr(step)


def test_fake_sleep_passes_time_on_its_clock_and_honours_the_timeout(tmp_path: Path) -> None:
    clock = FakeClock()

    def handler(run: FakeStepRun) -> int:
        run.sleep(5)
        run.sleep(20)
        return 0

    runtime = FakeRuntime(handler=handler, clock=clock)
    ok = runtime.run_step(
        _step(tmp_path, timeout_s=60), on_output=_Collector(), cancel=threading.Event()
    )
    assert ok == StepExit(exit_code=0)
    assert clock.monotonic() == 25
    late = runtime.run_step(
        _step(tmp_path, timeout_s=10), on_output=_Collector(), cancel=threading.Event()
    )
    assert late.timed_out and late.exit_code == 137
    assert clock.monotonic() == 35  # killed at its deadline, not after the whole sleep


def test_fake_writes_refuse_read_only_mounts_and_getenv_sees_secrets(tmp_path: Path) -> None:
    seen: list[object] = []

    def handler(run: FakeStepRun) -> int:
        seen.append(run.write("cfg/a.yml", "x"))
        seen.append(run.write("b.txt", "y"))
        seen.extend([run.getenv("PLAIN"), run.getenv("TOKEN"), run.getenv("NONE"), run.stdin])
        return 0

    (tmp_path / "sub").mkdir()
    FakeRuntime(handler=handler).run_step(
        _step(tmp_path), on_output=_Collector(), cancel=threading.Event()
    )
    assert seen == [False, True, "1", "s3cr3t-value", None, b""]
    assert not (tmp_path / "cfg" / "a.yml").exists()
    assert (tmp_path / "sub" / "b.txt").read_text() == "y"
