"""The engine asked without the docker SDK until a container or network is needed."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ContainerRuntimeError, ImageNotFoundError
from runner.execute.engine_probe import EngineProbe
from runner.execute.lazy_runtime import LazyRuntime
from runner.sandbox import Isolation
from runner.secrets.value import Secret
from runner.testing.runtime import FakeRuntime
from tests.helpers import TEST_IMAGE

IMAGE_ID = "sha256:" + "ab" * 32
RUNC_ONLY: tuple[Isolation, ...] = ("runc",)


class _Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """An engine's socket answering canned JSON, and recording each request line."""

    daemon_threads = True

    def __init__(self, path: str, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers
        self.requests: list[str] = []
        self.path = path
        super().__init__(path, _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: _Engine

    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        while self.rfile.readline().strip():
            pass  # the headers
        self.server.requests.append(line)
        status, body = self.server.answers.get(line.split(" ")[1], (404, {"message": "no"}))
        data = json.dumps(body).encode()
        self.wfile.write(
            f"HTTP/1.0 {status} X\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
        )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[_Engine]:
    server = _Engine(
        str(tmp_path / "docker.sock"),
        {
            "/images/acme/tool:1/json": (200, {"Id": IMAGE_ID}),
            "/info": (200, {"Runtimes": {"runc": {}}}),
        },
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _made(real: FakeRuntime, made: list[int]) -> Any:
    def make() -> FakeRuntime:
        made.append(1)
        return real

    return make


def test_a_fully_cached_run_is_answered_without_building_the_runtime(engine: _Engine) -> None:
    made: list[int] = []
    lazy = LazyRuntime(_made(FakeRuntime(), made), EngineProbe(engine.path))
    assert lazy.image_id("acme/tool:1") == IMAGE_ID
    lazy.check_isolation("runc")  # the default runtime: nothing to ask
    assert lazy.sweep_own("org.runner.run", "r1") == 0
    lazy.settle()
    assert lazy.writable_bytes("org.runner.run", "r1") is None
    assert (made, lazy.built) == ([], False)
    assert engine.requests == ["GET /images/acme/tool:1/json HTTP/1.0"]
    # gVisor is not among the engine's runtimes: refused with the install hint, still unbuilt.
    with pytest.raises(ContainerRuntimeError, match="runsc"):
        lazy.check_isolation("gvisor")
    assert made == []


def test_anything_else_builds_the_real_runtime_once(engine: _Engine) -> None:
    made: list[int] = []
    real = FakeRuntime(images={"acme/other:2": "sha256:" + "cd" * 32})
    lazy = LazyRuntime(_made(real, made), EngineProbe(engine.server_address))  # type: ignore[arg-type]
    # Not on the engine's socket: the real runtime answers (and would pull).
    assert lazy.image_id("acme/other:2") == "sha256:" + "cd" * 32
    with pytest.raises(ImageNotFoundError):
        lazy.image_id("acme/none:3")
    info = lazy.create_network("job-1", internal=False)
    assert info.name in real.networks
    # Built, it may have made something: the run's own sweep asks the engine.
    assert lazy.sweep_own("org.runner.run", "job-1") == 1 and not real.networks
    assert made == [1] and lazy.built


def test_credentials_for_the_registry_always_go_to_the_real_runtime(engine: _Engine) -> None:
    made: list[int] = []
    real = FakeRuntime(images={"acme/tool:1": IMAGE_ID})
    lazy = LazyRuntime(_made(real, made), EngineProbe(engine.server_address))  # type: ignore[arg-type]
    auth = Secret(json.dumps({"auths": {"docker.io": {"auth": "dXNlcjpwYXNzd29yZA=="}}}))
    assert lazy.image_id("acme/tool:1", auth) == IMAGE_ID
    assert made == [1] and engine.requests == [], "the registry checks the credentials each run"


def test_an_engine_that_does_not_answer_leaves_the_question_to_the_sdk(tmp_path: Path) -> None:
    probe = EngineProbe(str(tmp_path / "nothing.sock"))
    assert probe.image_id("acme/tool:1") is None and probe.runtimes() is None
    assert EngineProbe.from_environ({"DOCKER_HOST": "tcp://127.0.0.1:2375"}) is None
    assert EngineProbe.from_environ({"DOCKER_TLS_VERIFY": "1"}) is None
    made: list[int] = []
    lazy = LazyRuntime(_made(FakeRuntime(isolations=RUNC_ONLY), made), probe)
    with pytest.raises(ContainerRuntimeError, match="runsc"):
        lazy.check_isolation("gvisor")
    assert made == [1]


@pytest.mark.docker
def test_the_probe_agrees_with_the_engine(docker_client: Any) -> None:
    probe = EngineProbe.from_environ({})
    assert probe is not None
    assert probe.image_id(TEST_IMAGE) == docker_client.images.get(TEST_IMAGE).id
    assert probe.image_id("runner-test/not-here:0") is None
    runtimes = probe.runtimes()
    assert runtimes is not None and "runc" in runtimes
