"""One contract for every ``ContainerRuntime``: the fake and Docker run the same cases.

A case writes its step once as a ``Program``: Docker runs it as a shell
script in ``runner-test/busybox``, the fake plays it through ``FakeStepRun``.
Both must give the same exit, the same output and the same errors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pytest

from runner.config import DEFAULT_NETWORK_POOL
from runner.errors import ContainerRuntimeError, ExecutionError, ImageNotFoundError
from runner.execute.docker_runtime import shell_quote
from runner.execute.runtime import (
    KILLED_EXIT_CODE,
    ContainerRuntime,
    Mount,
    OutputStream,
    StepContainer,
    StepExit,
    secret_file_path,
)
from runner.sandbox import Isolation, StepSandbox
from runner.secrets.value import Secret
from runner.testing import FakeRuntime, FakeStepRun
from tests.conftest import TEST_IMAGE

LABEL = "runner.test-contract"
FAKE_IMAGE_ID = "sha256:" + "f" * 64

Act = Callable[[FakeStepRun], int | None]
ONLY_RUNC: tuple[Isolation, ...] = ("runc",)


class Program:
    """A step written once: ``script`` for a shell, ``play`` for the fake."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._acts: list[Act] = []

    def _add(self, line: str, act: Act) -> Program:
        self._lines.append(line)
        self._acts.append(act)
        return self

    @property
    def script(self) -> str:
        return "\n".join(self._lines) + "\n"

    def play(self, run: FakeStepRun) -> int:
        for act in self._acts:
            code = act(run)
            if code is not None:
                return code
        return 0

    def out(self, text: str) -> Program:
        return self._add(f"printf %s {shell_quote(text)}", lambda run: run.stdout(text))

    def err(self, text: str) -> Program:
        return self._add(f"printf %s {shell_quote(text)} >&2", lambda run: run.stderr(text))

    def env(self, name: str) -> Program:
        return self._add(
            f'printf "%s\\n" "${{{name}-}}"',
            lambda run: run.stdout((run.getenv(name) or "") + "\n"),
        )

    def stdin(self) -> Program:
        return self._add("cat", lambda run: run.stdout(run.stdin))

    def pwd(self) -> Program:
        return self._add("pwd", lambda run: run.stdout(run.step.workdir + "\n"))

    def read(self, path: str) -> Program:
        return self._add(f"cat {path}", lambda run: run.stdout(run.read(path)))

    def read_file_of(self, name: str) -> Program:
        """Print the file whose path the variable ``name`` holds."""
        return self._add(f'cat "${name}"', lambda run: run.stdout(run.read(run.getenv(name) or "")))

    def write(self, path: str, text: str) -> Program:
        def act(run: FakeStepRun) -> None:
            if not run.write(path, text):
                run.stderr(f"refused {path}\n")

        line = f"{{ printf %s {shell_quote(text)} > {path}; }} 2>/dev/null || echo 'refused {path}' >&2"
        return self._add(line, act)

    def sleep(self, seconds: int) -> Program:
        return self._add(f"sleep {seconds}", lambda run: run.sleep(seconds))

    def fill(self, kib: int) -> Program:
        """Write ``kib`` KiB outside every mount: into the container's own layer."""

        def act(run: FakeStepRun) -> None:
            run.written += kib * 1024

        return self._add(f"dd if=/dev/zero of=/fill.bin bs=1024 count={kib} 2>/dev/null", act)

    def exit(self, code: int) -> Program:
        return self._add(f"exit {code}", lambda run: code)


class Output:
    """What a step printed, per stream; ``on_chunk`` may react to it (say, cancel)."""

    def __init__(self, on_chunk: Callable[[OutputStream, bytes], None] | None = None) -> None:
        self.chunks: list[tuple[OutputStream, bytes]] = []
        self._on_chunk = on_chunk

    def __call__(self, stream: OutputStream, data: bytes) -> None:
        self.chunks.append((stream, data))
        if self._on_chunk is not None:
            self._on_chunk(stream, data)

    def text(self, stream: OutputStream) -> str:
        return b"".join(d for s, d in self.chunks if s == stream).decode()


@dataclass
class Engine:
    """One runtime under contract, with what a case needs to drive it."""

    kind: str
    runtime: ContainerRuntime
    image: str  # the ID of TEST_IMAGE on this runtime
    # Make a container an earlier run left behind (running, or created only).
    leftover: Callable[[dict[str, str], bool], None]
    # The same runtime's kind on an engine without gVisor's runtime.
    without_gvisor: Callable[[], ContainerRuntime]
    labels: dict[str, str] = field(default_factory=lambda: {LABEL: uuid.uuid4().hex})
    programs: dict[str, Program] = field(default_factory=dict)
    # What every case's step gets unless it says otherwise (the gVisor run of the contract).
    sandbox: StepSandbox = field(default_factory=StepSandbox)
    # How many containers carrying the case's labels exist now (run, waiting or stopped).
    alive: Callable[[], int] = lambda: 0

    def step(self, program: Program, **fields: Any) -> StepContainer:
        self.programs[program.script] = program
        fields.setdefault("workdir", "/work")
        fields.setdefault("sandbox", self.sandbox)
        return StepContainer(image=self.image, script=program.script, labels=self.labels, **fields)

    def run(
        self,
        program: Program,
        out: Output | None = None,
        cancel: threading.Event | None = None,
        **fields: Any,
    ) -> tuple[StepExit, Output]:
        out = out or Output()
        result = self.runtime.run_step(
            self.step(program, **fields), on_output=out, cancel=cancel or threading.Event()
        )
        return result, out


def _fake_engine() -> Engine:
    programs: dict[str, Program] = {}
    runtime = FakeRuntime(
        handler=lambda run: programs[run.step.script].play(run),
        images={TEST_IMAGE: FAKE_IMAGE_ID},
    )
    return Engine(
        kind="fake",
        runtime=runtime,
        image=FAKE_IMAGE_ID,
        leftover=lambda labels, running: runtime.leftovers.append(labels),
        without_gvisor=lambda: FakeRuntime(isolations=ONLY_RUNC),
        programs=programs,
        alive=lambda: runtime.containers,
    )


@contextlib.contextmanager
def _docker_engine(
    request: pytest.FixtureRequest, tmp_path: Path, sandbox: StepSandbox
) -> Iterator[Engine]:
    import docker

    from runner.execute.docker_runtime import DockerRuntime

    client = cast(docker.DockerClient, request.getfixturevalue("docker_client"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made: list[str] = []

    def leftover(labels: dict[str, str], running: bool) -> None:
        created = client.api.create_container(image, command=["sleep", "60"], labels=labels)
        made.append(created["Id"])
        if running:
            client.api.start(created["Id"])

    image = str(client.images.get(TEST_IMAGE).id)
    # An engine without gVisor: the same one, asked for a runtime it does not have.
    no_runsc: dict[Isolation, str | None] = {
        "runc": None,
        "gvisor": f"runsc-missing-{uuid.uuid4().hex[:6]}",
    }
    engine = Engine(
        kind="docker",
        runtime=DockerRuntime(client.api, scratch_dir=scratch),
        image=image,
        leftover=leftover,
        without_gvisor=lambda: DockerRuntime(client.api, scratch_dir=scratch, runtimes=no_runsc),
        sandbox=sandbox,
    )
    engine.alive = lambda: len(
        client.api.containers(all=True, filters={"label": f"{LABEL}={engine.labels[LABEL]}"})
    )
    try:
        yield engine
    finally:
        engine.runtime.settle()  # containers removed in the background count too
        for container_id in made:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container_id, force=True)
        # Every case leaves no step container behind, whatever happened in it.
        label = f"{LABEL}={engine.labels[LABEL]}"
        left = client.api.containers(all=True, filters={"label": label})
        for container in left:
            client.api.remove_container(container["Id"], force=True)
        assert left == []


@pytest.fixture(
    params=[
        "fake",
        pytest.param("docker", marks=pytest.mark.docker),
        # The whole contract again with every step under gVisor.
        pytest.param("docker-gvisor", marks=[pytest.mark.docker, pytest.mark.slow]),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "fake":
        yield _fake_engine()
        return
    sandbox = StepSandbox()
    if request.param == "docker-gvisor":
        request.getfixturevalue("gvisor")
        sandbox = StepSandbox(isolation="gvisor")
    with _docker_engine(request, tmp_path, sandbox) as docker_engine:
        yield docker_engine


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def _ws(workspace: Path) -> list[Mount]:
    return [Mount(source=workspace, target="/work", read_only=False)]


# Images ------------------------------------------------------------------------------------


def test_image_id_of_a_present_image(engine: Engine) -> None:
    assert engine.image.startswith("sha256:")
    assert engine.runtime.image_id(TEST_IMAGE) == engine.image
    assert engine.runtime.image_id(engine.image) == engine.image


def test_a_missing_image_is_named_and_fails_fast(engine: Engine) -> None:
    name = f"runner-test/missing-{uuid.uuid4().hex[:8]}:latest"
    started = time.monotonic()
    with pytest.raises(ImageNotFoundError, match=name):
        engine.runtime.image_id(name)
    assert time.monotonic() - started < 30
    with pytest.raises(ImageNotFoundError, match="sha256:0000"):
        engine.runtime.image_id("sha256:" + "0" * 64)


# Exit codes and output ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42])
def test_the_exit_code_is_the_steps(engine: Engine, code: int) -> None:
    result, _ = engine.run(Program().out("ran\n").exit(code))
    assert result == StepExit(exit_code=code)
    assert result.succeeded == (code == 0)


def test_stdout_and_stderr_arrive_apart(engine: Engine) -> None:
    program = Program().out("first\n").err("warn\n").out("second\n").err("done\n")
    result, out = engine.run(program)
    assert result == StepExit(exit_code=0)
    assert out.text("stdout") == "first\nsecond\n"
    assert out.text("stderr") == "warn\ndone\n"


def test_env_and_workdir_reach_the_step(engine: Engine, workspace: Path) -> None:
    (workspace / "sub" / "dir").mkdir(parents=True)
    program = Program().env("PLAIN").env("SPACED").env("UNSET").pwd()
    result, out = engine.run(
        program,
        workdir="/work/sub/dir",
        mounts=_ws(workspace),
        env={"PLAIN": "value", "SPACED": "a b  c"},
    )
    assert result.succeeded
    assert out.text("stdout") == "value\na b  c\n\n/work/sub/dir\n"


def test_secrets_arrive_as_env_and_the_steps_stdin_is_empty(engine: Engine) -> None:
    # The payload that carries the secrets is read before the script starts:
    # the script itself reads nothing from stdin, and does not hang on it.
    secrets = {"TOKEN": "tok-" + uuid.uuid4().hex, "QUOTED": 'it\'s "quoted" $HOME'}
    program = Program().env("TOKEN").env("QUOTED").stdin().out("end\n")
    result, out = engine.run(
        program, secret_env={name: Secret(value) for name, value in secrets.items()}
    )
    assert result.succeeded
    assert out.text("stdout") == f"{secrets['TOKEN']}\n{secrets['QUOTED']}\nend\n"


def test_file_secrets_arrive_as_paths_to_their_exact_content(engine: Engine) -> None:
    # Quotes, a $ and trailing blank lines survive the shell payload byte for byte.
    kube = "apiVersion: v1\ntoken: 'it''s' \"$HOME\" tok-" + uuid.uuid4().hex + "\n\n"
    program = Program().env("KUBECONFIG").read_file_of("KUBECONFIG").env("TOKEN")
    result, out = engine.run(
        program,
        secret_files={"KUBECONFIG": Secret(kube)},
        secret_env={"TOKEN": Secret("tok-" + "e" * 12)},
    )
    assert result.succeeded
    assert out.text("stdout") == f"{secret_file_path('KUBECONFIG')}\n{kube}tok-{'e' * 12}\n"


# Mounts -----------------------------------------------------------------------------------------


def test_mounts_are_read_only_unless_said(engine: Engine, workspace: Path, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.yml").write_text("key: 1\n")
    program = (
        Program()
        .read("/etc/runner/config.yml")
        .write("/etc/runner/config.yml", "changed")
        .write("/work/ok.txt", "made")
    )
    mounts = [*_ws(workspace), Mount(source=files / "config.yml", target="/etc/runner/config.yml")]
    result, out = engine.run(program, mounts=mounts)
    assert result.succeeded
    assert out.text("stdout") == "key: 1\n"
    assert out.text("stderr") == "refused /etc/runner/config.yml\n"
    assert (files / "config.yml").read_text() == "key: 1\n"
    assert (workspace / "ok.txt").read_text() == "made"


def test_a_missing_mount_source_is_refused_by_name(engine: Engine, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ExecutionError, match="nope") as info:
        engine.run(Program().out("never\n"), mounts=[Mount(source=missing, target="/x")])
    assert type(info.value) is ExecutionError
    assert info.value.hint


# Timeout and cancel ------------------------------------------------------------------------------


def test_a_step_over_its_timeout_is_killed(engine: Engine) -> None:
    started = time.monotonic()
    result, out = engine.run(Program().out("start\n").sleep(60).out("never\n"), timeout_s=1)
    assert result.timed_out
    assert not result.succeeded
    assert result.exit_code == KILLED_EXIT_CODE
    assert out.text("stdout") == "start\n"
    assert time.monotonic() - started < 10


def test_cancel_kills_a_running_step(engine: Engine) -> None:
    cancel = threading.Event()
    out = Output(on_chunk=lambda stream, data: cancel.set())
    started = time.monotonic()
    result, _ = engine.run(Program().out("ready\n").sleep(60).out("never\n"), out, cancel)
    assert result.canceled
    assert not result.succeeded
    assert out.text("stdout") == "ready\n"
    assert time.monotonic() - started < 10


def test_a_step_canceled_before_it_starts_does_not_run(engine: Engine) -> None:
    cancel = threading.Event()
    cancel.set()
    result, out = engine.run(Program().out("ran\n"), cancel=cancel)
    assert result.canceled
    assert not result.succeeded
    assert out.chunks == []


# Prepared containers ------------------------------------------------------------------------------


def test_a_prepared_step_runs_with_the_env_and_script_of_its_turn(
    engine: Engine, workspace: Path
) -> None:
    # Made with nothing rendered yet; given at its turn what the previous step decided.
    early = engine.step(Program().exit(3), mounts=_ws(workspace), env={"LATE": "made early"})
    prepared = engine.runtime.prepare(early)
    assert engine.alive() == 1  # made and waiting before its turn
    token = "tok-" + uuid.uuid4().hex
    program = Program().env("LATE").env("TOKEN").stdin().pwd().write("/work/made.txt", "yes")
    late = engine.step(
        program,
        mounts=_ws(workspace),
        env={"LATE": "rendered late: it's $HOME"},
        secret_env={"TOKEN": Secret(token)},
    )
    result = prepared.run(late, on_output=(out := Output()), cancel=threading.Event())
    assert result == StepExit(exit_code=0)
    assert out.text("stdout") == f"rendered late: it's $HOME\n{token}\n/work\n"
    assert (workspace / "made.txt").read_text() == "yes"
    prepared.discard()  # after run: nothing more to do
    prepared.wait_removed()
    assert engine.alive() == 0


def test_a_discarded_prepared_step_runs_nothing_and_is_gone(
    engine: Engine, workspace: Path
) -> None:
    prepared = engine.runtime.prepare(
        engine.step(Program().write("/work/ran.txt", "ran"), mounts=_ws(workspace))
    )
    prepared.discard()
    prepared.discard()
    engine.runtime.settle()
    assert engine.alive() == 0
    assert not (workspace / "ran.txt").exists()
    with pytest.raises(ExecutionError, match="one step only"):
        prepared.run(engine.step(Program().out("x")), on_output=Output(), cancel=threading.Event())


def test_a_prepared_step_canceled_while_it_waits_never_runs(
    engine: Engine, workspace: Path
) -> None:
    step = engine.step(Program().write("/work/ran.txt", "ran"), mounts=_ws(workspace))
    prepared = engine.runtime.prepare(step)
    cancel = threading.Event()
    cancel.set()
    result = prepared.run(step, on_output=(out := Output()), cancel=cancel)
    assert result.canceled and not result.succeeded
    assert out.chunks == []
    prepared.wait_removed()
    assert engine.alive() == 0
    assert not (workspace / "ran.txt").exists()


def test_a_step_whose_creation_changed_at_its_turn_runs_in_a_new_container(
    engine: Engine, workspace: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    config.write_text("key: 2\n")
    prepared = engine.runtime.prepare(engine.step(Program(), mounts=_ws(workspace)))
    mounts = [*_ws(workspace), Mount(source=config, target="/etc/config.yml")]
    out = Output()
    result = prepared.run(
        engine.step(Program().read("/etc/config.yml"), mounts=mounts),
        on_output=out,
        cancel=threading.Event(),
    )
    assert result.succeeded
    assert out.text("stdout") == "key: 2\n"
    engine.runtime.settle()
    assert engine.alive() == 0


def test_preparing_checks_what_running_checks(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ExecutionError, match="nope"):
        engine.runtime.prepare(
            engine.step(Program(), mounts=[Mount(source=tmp_path / "nope", target="/x")])
        )
    with pytest.raises(ContainerRuntimeError, match="runsc"):
        engine.without_gvisor().prepare(
            engine.step(Program(), sandbox=StepSandbox(isolation="gvisor"))
        )
    engine.runtime.settle()
    assert engine.alive() == 0


# Sweeping -----------------------------------------------------------------------------------------


def test_sweep_removes_exactly_the_leftovers_carrying_the_label(engine: Engine) -> None:
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    engine.leftover({LABEL: mine}, True)
    engine.leftover({LABEL: mine}, False)
    engine.leftover({LABEL: other}, False)
    assert engine.runtime.sweep(LABEL, mine) == 2
    assert engine.runtime.sweep(LABEL, mine) == 0
    # The other run's container is still there, for a sweep by the label's key alone.
    assert engine.runtime.sweep(LABEL) == 1
    assert engine.runtime.sweep(LABEL) == 0


# Isolation levels ---------------------------------------------------------------------------------


def test_both_levels_are_there_where_the_engine_runs_gvisor(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    if engine.kind != "fake":
        request.getfixturevalue("gvisor")
    engine.runtime.check_isolation("runc")
    engine.runtime.check_isolation("gvisor")


def test_a_level_the_engine_lacks_is_refused_with_what_to_do(engine: Engine) -> None:
    runtime = engine.without_gvisor()
    runtime.check_isolation("runc")
    with pytest.raises(ContainerRuntimeError, match="runsc") as info:
        runtime.check_isolation("gvisor")
    assert "--isolation gvisor" in info.value.message
    assert "ensure-runsc.sh" in (info.value.hint or "")
    # A step at that level fails as an engine failure, and leaves no container behind
    # (the Docker fixture checks that at the end).
    step = engine.step(Program().out("never\n"), sandbox=StepSandbox(isolation="gvisor"))
    out = Output()
    with pytest.raises(ContainerRuntimeError, match="runsc"):
        runtime.run_step(step, on_output=out, cancel=threading.Event())
    assert out.chunks == []


# Job networks -------------------------------------------------------------------------------------


def test_job_networks_get_their_own_subnets_from_the_pool_and_go_by_job(engine: Engine) -> None:
    job_a, job_b = f"contract-{uuid.uuid4().hex[:8]}", f"contract-{uuid.uuid4().hex[:8]}"
    made = []
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [
                pool.submit(engine.runtime.create_network, job, internal=internal)
                for job, internal in ((job_a, False), (job_a, True), (job_b, False))
            ]
            made = [f.result() for f in futures]
        subnets = [ipaddress.IPv4Network(n.subnet) for n in made]
        assert len(set(subnets)) == 3
        assert all(s.subnet_of(ipaddress.IPv4Network(DEFAULT_NETWORK_POOL)) for s in subnets)
        assert all(ipaddress.ip_address(n.gateway) in s for n, s in zip(made, subnets, strict=True))
        assert [n.internal for n in made] == [False, True, False]
        assert {job_a, job_b} <= engine.runtime.network_jobs()
        assert engine.runtime.sweep_networks(job_a) == 2
        assert engine.runtime.sweep_networks(job_a) == 0
        assert job_a not in engine.runtime.network_jobs()
        engine.runtime.remove_network(made[2].name)
        engine.runtime.remove_network(made[2].name)  # already gone: fine
        assert engine.runtime.sweep_networks(job_b) == 0
    finally:
        for job in (job_a, job_b):
            engine.runtime.sweep_networks(job)


def test_a_holder_keeps_a_namespace_for_steps_and_goes_with_its_network(engine: Engine) -> None:
    job = f"contract-{uuid.uuid4().hex[:8]}"
    try:
        net = engine.runtime.create_network(job, internal=False)
        holder = engine.runtime.hold_network(
            net, job_id=job, image=engine.image, extra_hosts={"git.internal": "10.0.0.5"}
        )
        assert engine.runtime.holder_alive(holder)
        joined = replace(net, holder=holder).joined
        assert joined == f"container:{holder}" and net.joined == net.name
        result, out = engine.run(
            Program().out("joined\n"), sandbox=replace(engine.sandbox, network=joined)
        )
        assert result.succeeded and out.text("stdout") == "joined\n"
        # The network goes with a holder left on it (one whose ID a killed run lost).
        engine.runtime.remove_network(net.name)
        assert not engine.runtime.holder_alive(holder)
        assert engine.runtime.sweep_networks(job) == 0
        with pytest.raises(ContainerRuntimeError):  # its namespace is gone
            engine.run(Program().out("never\n"), sandbox=replace(engine.sandbox, network=joined))
        # Sweeping a job's networks takes their holders first; releasing twice is fine.
        again = engine.runtime.create_network(job, internal=False)
        other = engine.runtime.hold_network(again, job_id=job, image=engine.image, extra_hosts={})
        assert engine.runtime.sweep_networks(job) == 1
        assert not engine.runtime.holder_alive(other)
        engine.runtime.release_holder(other)
    finally:
        engine.runtime.sweep_networks(job)


# Measuring ----------------------------------------------------------------------------------------


def test_writable_bytes_counts_what_a_running_step_wrote_outside_its_mounts(
    engine: Engine,
) -> None:
    seen: list[int | None] = []
    cancel = threading.Event()

    def measure(stream: OutputStream, data: bytes) -> None:
        seen.append(engine.runtime.writable_bytes(LABEL, engine.labels[LABEL]))
        cancel.set()

    program = Program().fill(2048).out("filled\n").sleep(60)
    result, _ = engine.run(program, Output(on_chunk=measure), cancel)
    assert result.canceled
    (measured,) = seen
    assert measured is not None and measured >= 2048 * 1024
    # Gone with its container; a label no container carries has nothing to measure.
    assert engine.runtime.writable_bytes(LABEL, engine.labels[LABEL]) is None
    assert engine.runtime.writable_bytes(LABEL, uuid.uuid4().hex) is None
