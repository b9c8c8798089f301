"""The Docker runtime against the real engine, and its pure parts on their own.

What Docker shares with the fake runtime is in tests/test_runtime_contract.py; here
is what only a real engine can show.

The secret tests pause the step (it waits for a file in its workspace) and
look for the value, in several encodings, everywhere an observer on the host
could: ``docker inspect``, every process's command line, and the container's
files under Docker's data root. The step itself only ever prints hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import ContainerRuntimeError, ImageNotFoundError
from runner.execute.docker_exits import Exits
from runner.execute.docker_runtime import (
    SCRIPT_PATH,
    DockerRuntime,
    _Demux,
    env_payload,
    shell_quote,
)
from runner.execute.runtime import Mount, OutputStream, StepContainer, StepExit
from runner.secrets.value import Secret
from tests.conftest import TEST_IMAGE

LABEL = "runner.test-run"

NASTY_SECRETS = {
    "QUOTES": "it's a \"quoted\" 'value'",
    "NEWLINES": "first line\nsecond line\n\nend\n",
    "DOLLARS": "$HOME ${PATH} $(id) `id` $$ \\$x",
    "BACKSLASH": "back\\slash\\n\\\\two\\",
    "UNICODE": "pässwörd-🔑-密码-\u200b",
    "DASHES": "--help -e FOO=bar",
    "EXPORTLIKE": "x'; export EVIL=1; echo '",
}


# -- pure parts --------------------------------------------------------------


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=40)), max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=7), max_size=30),
)
def test_demux_splits_streams_however_the_bytes_arrive(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(_frame(kind, payload) for kind, payload in frames)
    demux = _Demux()
    got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    position = 0
    for size in [*cuts, len(wire)]:
        for stream, chunk in demux.feed(wire[position : position + size]):
            assert chunk
            got[stream] += chunk
        position += size
    assert got["stdout"] == b"".join(p for k, p in frames if k == 1)
    assert got["stderr"] == b"".join(p for k, p in frames if k == 2)


def test_demux_passes_on_a_partial_frame_at_once() -> None:
    demux = _Demux()
    wire = _frame(1, b"hello world")
    assert list(demux.feed(wire[:13])) == [("stdout", b"hello")]
    assert list(demux.feed(wire[13:])) == [("stdout", b" world")]


@settings(max_examples=40, deadline=None)
@given(value=st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"])))
def test_shell_quote_survives_a_real_shell(value: str) -> None:
    # The payload goes through stdin, as in the container, never argv.
    payload = env_payload({"V": Secret(value)})
    result = subprocess.run(
        ["/bin/sh", "-c", 'eval "$(cat)"; printf %s "$V"'],
        input=payload,
        capture_output=True,
        check=True,
    )
    assert result.stdout == value.encode()


def test_shell_quote_is_one_word() -> None:
    assert shell_quote("a'b") == "'a'\\''b'"


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def client(docker_client: object) -> docker.DockerClient:
    return cast(docker.DockerClient, docker_client)


@pytest.fixture
def runtime(client: docker.DockerClient, tmp_path: Path) -> DockerRuntime:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return DockerRuntime(client.api, scratch_dir=scratch)


@pytest.fixture
def image_id(client: docker.DockerClient) -> str:
    return str(client.images.get(TEST_IMAGE).id)


@pytest.fixture
def run_label(client: docker.DockerClient) -> Iterator[dict[str, str]]:
    labels = {LABEL: uuid.uuid4().hex}
    yield labels
    # Every test leaves no container behind, whatever happened in it.
    left = client.api.containers(all=True, filters={"label": f"{LABEL}={labels[LABEL]}"})
    for container in left:
        client.api.remove_container(container["Id"], force=True)
    assert left == []


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


class Output:
    """Collects what a step prints, and lets a test wait for a line."""

    def __init__(self) -> None:
        self.chunks: list[tuple[OutputStream, bytes, float]] = []
        self._seen = threading.Condition()

    def __call__(self, stream: OutputStream, data: bytes) -> None:
        with self._seen:
            self.chunks.append((stream, data, time.monotonic()))
            self._seen.notify_all()

    def text(self, stream: OutputStream) -> str:
        return b"".join(d for s, d, _ in self.chunks if s == stream).decode()

    def wait_for(self, needle: str, timeout: float = 15.0) -> None:
        with self._seen:
            ok = self._seen.wait_for(lambda: needle in self.text("stdout"), timeout)
        assert ok, f"step never printed {needle!r}; got {self.text('stdout')!r}"


def _step(image: str, script: str, labels: dict[str, str], **extra: Any) -> StepContainer:
    return StepContainer(image=image, script=script, workdir="/work", labels=labels, **extra)


def _ws_mount(workspace: Path) -> list[Mount]:
    return [Mount(source=workspace, target="/work", read_only=False)]


def _in_thread(
    runtime: DockerRuntime, step: StepContainer, out: Output, cancel: threading.Event
) -> tuple[threading.Thread, list[StepExit | BaseException]]:
    result: list[StepExit | BaseException] = []

    def work() -> None:
        try:
            result.append(runtime.run_step(step, on_output=out, cancel=cancel))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, result


def _container_of(client: docker.DockerClient, labels: dict[str, str]) -> dict[str, Any]:
    found = client.api.containers(filters={"label": f"{LABEL}={labels[LABEL]}"})
    assert len(found) == 1
    return cast(dict[str, Any], client.api.inspect_container(found[0]["Id"]))


# -- output, exit codes, env ---------------------------------------------------


@pytest.mark.docker
def test_output_streams_separately_and_before_the_step_ends(
    runtime: DockerRuntime, image_id: str, run_label: dict[str, str], workspace: Path
) -> None:
    # The step only finishes after the test saw its first line: if output
    # were held back until exit, this would time out.
    script = (
        "echo first; echo warn >&2\n"
        "while [ ! -e /work/go ]; do sleep 0.05; done\n"
        "echo second; echo done >&2\n"
    )
    out = Output()
    step = _step(image_id, script, run_label, mounts=_ws_mount(workspace), timeout_s=20)
    thread, result = _in_thread(runtime, step, out, threading.Event())
    out.wait_for("first")
    assert thread.is_alive()
    (workspace / "go").touch()
    thread.join(20)
    assert result == [StepExit(exit_code=0)]
    assert out.text("stdout") == "first\nsecond\n"
    assert out.text("stderr") == "warn\ndone\n"


@pytest.mark.docker
def test_env_workdir_and_stdin(
    runtime: DockerRuntime, image_id: str, run_label: dict[str, str], workspace: Path
) -> None:
    (workspace / "sub" / "dir").mkdir(parents=True)
    script = (
        'printf "%s|%s\\n" "$PLAIN" "$SPACED"\n'
        "pwd\n"
        "cat\n"  # stdin is /dev/null: this must not hang
        "env | grep -c __runner || true\n"
        "echo made > here.txt\n"
    )
    out = Output()
    step = StepContainer(
        image=image_id,
        script=script,
        workdir="/work/sub/dir",
        mounts=_ws_mount(workspace),
        env={"PLAIN": "value", "SPACED": "a b  c"},
        labels=run_label,
        timeout_s=20,
    )
    assert runtime.run_step(step, on_output=out, cancel=threading.Event()).succeeded
    assert out.text("stdout") == "value|a b  c\n/work/sub/dir\n0\n"
    assert (workspace / "sub" / "dir" / "here.txt").read_text() == "made\n"


@pytest.mark.docker
def test_read_only_mounts_are_read_only(
    runtime: DockerRuntime,
    image_id: str,
    run_label: dict[str, str],
    workspace: Path,
    tmp_path: Path,
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.yml").write_text("key: 1\n")
    script = (
        "cat /etc/runner/config.yml\n"
        "echo x > /etc/runner/config.yml && echo WROTE-RO\n"
        f"echo x > {SCRIPT_PATH} && echo WROTE-SCRIPT\n"
        "echo x > /work/ok.txt\n"
    )
    out = Output()
    mounts = [
        *_ws_mount(workspace),
        Mount(source=files / "config.yml", target="/etc/runner/config.yml"),
    ]
    result = runtime.run_step(
        _step(image_id, script, run_label, mounts=mounts), on_output=out, cancel=threading.Event()
    )
    assert result.succeeded
    assert out.text("stdout") == "key: 1\n"
    assert out.text("stderr").count("Read-only file system") == 2
    assert (files / "config.yml").read_text() == "key: 1\n"
    assert (workspace / "ok.txt").exists()


@pytest.mark.docker
def test_runs_as_the_images_user(
    client: docker.DockerClient, runtime: DockerRuntime, run_label: dict[str, str]
) -> None:
    tag = f"runner-test/user-{uuid.uuid4().hex[:8]}:latest"
    dockerfile = f"FROM {TEST_IMAGE}\nUSER 4321:4321\n".encode()
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    try:
        out = Output()
        step = StepContainer(image=str(image.id), script="id -u", workdir="/", labels=run_label)
        assert runtime.run_step(step, on_output=out, cancel=threading.Event()).succeeded
        assert out.text("stdout") == "4321\n"
    finally:
        client.images.remove(tag, force=True)


# -- secrets -------------------------------------------------------------------


def _forms(value: str) -> set[bytes]:
    """The value as raw bytes, JSON-escaped, hex, and base64 at every alignment."""
    raw = value.encode()
    forms = {raw, json.dumps(value)[1:-1].encode(), binascii.hexlify(raw)}
    forms.add(binascii.hexlify(raw).upper())
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + raw)
            # Keep only the characters that no neighbouring byte affects.
            start = -(-8 * shift // 6)
            inner = encoded.rstrip(b"=")[start:-1]
            if len(inner) >= 8:
                forms.add(inner)
    return {form for form in forms if len(form) >= 6}


def _files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def _leaks(values: dict[str, str], haystacks: Iterable[tuple[str, bytes]]) -> list[str]:
    forms = {name: _forms(value) for name, value in values.items()}
    found = []
    for where, data in haystacks:
        for name, variants in forms.items():
            if any(form in data for form in variants):
                found.append(f"{name} in {where}")
    return found


def _cmdlines() -> Iterator[tuple[str, bytes]]:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield f"{proc}/cmdline", (proc / "cmdline").read_bytes()
            except OSError:
                continue


def _docker_files(
    info: dict[str, Any], docker_root: Path, scratch: Path
) -> Iterator[tuple[str, bytes]]:
    driver = info["GraphDriver"]["Data"] or {}
    roots = [docker_root / "containers" / info["Id"], scratch]
    for key in ("UpperDir", "WorkDir"):
        if driver.get(key):
            roots.append(Path(driver[key]))
    # The container's own -init layer (hosts, resolv.conf, mount points).
    for lower in (driver.get("LowerDir") or "").split(":"):
        if lower.endswith("-init/diff"):
            roots.append(Path(lower))
    assert roots[0].is_dir(), "the test must see Docker's data root"
    for path in _files_under(*roots):
        try:
            yield str(path), path.read_bytes()
        except OSError:
            continue


@pytest.mark.docker
def test_secrets_reach_the_step_and_nowhere_else(
    client: docker.DockerClient,
    runtime: DockerRuntime,
    image_id: str,
    run_label: dict[str, str],
    workspace: Path,
    tmp_path: Path,
) -> None:
    secrets = {**NASTY_SECRETS, "TOKEN": "tok-" + uuid.uuid4().hex}
    script = "".join(f'printf %s "${name}" | sha256sum\n' for name in secrets) + (
        "echo ready\nwhile [ ! -e /work/go ]; do sleep 0.05; done\n"
    )
    out = Output()
    step = _step(
        image_id,
        script,
        run_label,
        mounts=_ws_mount(workspace),
        env={"VISIBLE": "not-a-secret"},
        secret_env={name: Secret(value) for name, value in secrets.items()},
        timeout_s=60,
    )
    thread, result = _in_thread(runtime, step, out, threading.Event())
    try:
        out.wait_for("ready")
        info = _container_of(client, run_label)
        docker_root = Path(client.info()["DockerRootDir"])

        # The value, while the step runs, is in none of these places.
        inspect_json = json.dumps(info).encode()
        haystacks = [
            ("docker inspect", inspect_json),
            *_cmdlines(),
            *_docker_files(info, docker_root, tmp_path / "scratch"),
        ]
        assert _leaks(secrets, haystacks) == []
        # The same search does find what is allowed to be seen: it is not blind.
        seen = _leaks({"VISIBLE": "not-a-secret"}, haystacks)
        assert "VISIBLE in docker inspect" in seen
        assert any(where.endswith("config.v2.json") for where in seen)
        assert "VISIBLE=not-a-secret" in info["Config"]["Env"]
        assert not any(name in inspect_json.decode() for name in secrets)
    finally:
        (workspace / "go").touch()
        thread.join(30)
    assert result == [StepExit(exit_code=0)]

    expected = "".join(f"{hashlib.sha256(v.encode()).hexdigest()}  -\n" for v in secrets.values())
    assert out.text("stdout") == expected + "ready\n"
    assert _leaks(secrets, [("output", out.text("stdout").encode())]) == []


# -- limits, labels, configuration ---------------------------------------------------


@pytest.mark.docker
def test_container_configuration_read_back(
    client: docker.DockerClient, runtime: DockerRuntime, image_id: str, run_label: dict[str, str]
) -> None:
    out = Output()
    step = _step(
        image_id,
        "echo ready; sleep 30",
        run_label,
        memory_bytes=64 * 1024 * 1024,
        cpus=0.5,
        timeout_s=30,
    )
    cancel = threading.Event()
    thread, result = _in_thread(runtime, step, out, cancel)
    try:
        out.wait_for("ready")
        info = _container_of(client, run_label)
    finally:
        cancel.set()
        thread.join(30)
    host = info["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["LogConfig"]["Type"] == "none"
    assert host["Init"] is True
    assert info["Config"]["Labels"][LABEL] == run_label[LABEL]
    assert info["Config"]["Image"] == image_id
    assert info["Config"]["User"] == ""
    assert info["Config"]["Tty"] is False
    assert len(result) == 1
    assert isinstance(result[0], StepExit)
    assert result[0].canceled


@pytest.mark.docker
def test_memory_limit_kills_a_greedy_step(
    runtime: DockerRuntime, image_id: str, run_label: dict[str, str]
) -> None:
    script = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"
    result = runtime.run_step(
        _step(image_id, script, run_label, memory_bytes=16 * 1024 * 1024, timeout_s=60),
        on_output=Output(),
        cancel=threading.Event(),
    )
    assert result.oom_killed
    assert not result.succeeded


@pytest.mark.docker
def test_timeout_applies_after_the_step_closes_its_output(
    runtime: DockerRuntime, image_id: str, run_label: dict[str, str]
) -> None:
    started = time.monotonic()
    result = runtime.run_step(
        _step(image_id, "exec >&- 2>&-; sleep 60", run_label, timeout_s=2),
        on_output=Output(),
        cancel=threading.Event(),
    )
    assert result.timed_out
    assert time.monotonic() - started < 12


@pytest.mark.docker
def test_cancel_kills_promptly(
    runtime: DockerRuntime, image_id: str, run_label: dict[str, str]
) -> None:
    out = Output()
    cancel = threading.Event()
    thread, result = _in_thread(
        runtime, _step(image_id, "echo ready; sleep 60", run_label, timeout_s=60), out, cancel
    )
    out.wait_for("ready")
    canceled_at = time.monotonic()
    cancel.set()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - canceled_at < 3
    assert len(result) == 1
    assert isinstance(result[0], StepExit)
    assert result[0].canceled


@pytest.mark.docker
def test_container_is_removed_when_the_output_handler_fails(
    runtime: DockerRuntime, image_id: str, run_label: dict[str, str]
) -> None:
    def explode(stream: OutputStream, data: bytes) -> None:
        raise RuntimeError("downstream broke")

    with pytest.raises(RuntimeError, match="downstream broke"):
        runtime.run_step(
            _step(image_id, "echo hi; sleep 60", run_label),
            on_output=explode,
            cancel=threading.Event(),
        )
    # run_label's teardown asserts that no container is left.


@pytest.mark.docker
def test_parallel_steps_share_one_client_without_leaking_connections(
    runtime: DockerRuntime, image_id: str, run_label: dict[str, str]
) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    # Warm the pool first so that its connections are not counted as leaks.
    runtime.run_step(
        _step(image_id, "true", run_label), on_output=Output(), cancel=threading.Event()
    )
    before = open_fds()
    outputs = [Output() for _ in range(6)]
    threads = [
        _in_thread(
            runtime, _step(image_id, f"echo step-{i}", run_label), outputs[i], threading.Event()
        )
        for i in range(6)
    ]
    for thread, _ in threads:
        thread.join(60)
    assert [result for _, result in threads] == [[StepExit(exit_code=0)]] * 6
    assert [out.text("stdout") for out in outputs] == [f"step-{i}\n" for i in range(6)]
    assert open_fds() <= before + 6  # pooled keep-alive connections at most


# -- images and engine errors ----------------------------------------------------


@pytest.mark.docker
def test_pull_that_never_answers_is_bounded(client: docker.DockerClient) -> None:
    # A registry that accepts the connection and never answers.
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        runtime = DockerRuntime(client.api, pull_timeout_s=1.5)
        started = time.monotonic()
        with pytest.raises(ImageNotFoundError, match=f"localhost:{port}/hang"):
            runtime.image_id(f"localhost:{port}/hang:latest")
        assert time.monotonic() - started < 10
    finally:
        server.close()


def test_unreachable_engine_is_a_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerRuntimeError, match="cannot reach the Docker engine"):
        DockerRuntime.from_environ({"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}, timeout_s=2)


@pytest.mark.docker
def test_engine_failure_during_a_step_is_a_runtime_error(
    runtime: DockerRuntime, run_label: dict[str, str]
) -> None:
    # An image ID that vanished between the check and the step.
    step = _step("sha256:" + "1" * 64, "true", run_label, secret_env={"T": Secret("a-secret-1")})
    with pytest.raises(ContainerRuntimeError) as info:
        runtime.run_step(step, on_output=Output(), cancel=threading.Event())
    assert "a-secret-1" not in str(info.value)
    assert info.value.hint


@pytest.mark.docker
def test_image_without_a_shell_is_the_images_fault(
    client: docker.DockerClient, runtime: DockerRuntime, run_label: dict[str, str]
) -> None:
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    tag = f"runner-test/noshell-{uuid.uuid4().hex[:8]}"
    client.api.import_image_from_data(rootfs.getvalue(), repository=tag, tag="latest")
    try:
        step = StepContainer(
            image=runtime.image_id(f"{tag}:latest"), script="true", workdir="/", labels=run_label
        )
        out = Output()
        result = runtime.run_step(step, on_output=out, cancel=threading.Event())
        # Not an engine failure to retry: the step fails, and says why.
        assert result.exit_code == 127
        assert "/bin/sh" in out.text("stderr")
        # Made ahead, it ends before its turn: what it printed waited on its connection.
        prepared = runtime.prepare(step)
        out = Output()
        result = prepared.run(step, on_output=out, cancel=threading.Event())
        prepared.wait_removed()
        assert result.exit_code == 127
        assert "/bin/sh" in out.text("stderr")
    finally:
        client.images.remove(f"{tag}:latest", force=True)


class _NoEvents:
    """The engine's client, with an event stream that cannot be opened."""

    def __init__(self, api: docker.APIClient) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def events(self, **kwargs: Any) -> Any:
        raise docker.errors.APIError("no events here")


@pytest.mark.docker
def test_exit_codes_come_from_the_engines_events_or_else_from_waiting(
    client: docker.DockerClient, runtime: DockerRuntime, image_id: str, run_label: dict[str, str]
) -> None:
    # A step that closes its output a second before it exits too: its die event comes later.
    steps = (("exit 3", 3), ("exec >&- 2>&-; sleep 1; exit 4", 4))
    for exits, follows in ((runtime._exits, True), (Exits(_NoEvents(client.api)), False)):
        runtime._exits = exits
        for script, code in steps:
            step = _step(image_id, script, run_label)
            result = runtime.prepare(step).run(step, on_output=Output(), cancel=threading.Event())
            assert result.exit_code == code
        assert exits.following is follows
    runtime.settle()


def test_cancel_before_start_runs_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    runtime = DockerRuntime(cast(docker.APIClient, None))
    step = StepContainer(image="sha256:" + "2" * 64, script="true", workdir="/")
    assert runtime.run_step(step, on_output=Output(), cancel=cancel).canceled
