"""Registry credentials (issue 19): the secret ``DOCKER_AUTH_CONFIG`` pulls private step images.

How a config is read (units); that the coordinator's claim carries the
job's own (a user's over a wrong global one), audited, and the executor
pulls with it (fakes); and against a real private registry (Debian's
docker-registry with htpasswd authentication, on loopback) that `runner
run` pulls with a user's secret, is refused without it naming the registry,
prefers it over a wrong global one, and leaves the credentials nowhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ImageNotFoundError, SecretValidationError
from runner.execute.job import register_values, resolve_images
from runner.execute.registry import (
    credentials_for,
    parse_auth_config,
    registry_of,
    secret_parts,
)
from runner.execute.steps import RunLimits
from runner.queue.bundle import Bundle
from runner.queue.client import Claim
from runner.queue.executor import Executor, ExecutorSettings
from runner.redact.active import ActiveRedactor
from runner.secrets.value import Secret
from runner.spec import load_spec_text
from runner.testing import FakeRuntime
from runner.testing.queue import InProcessExecutorApi
from tests.conftest import REQUIRE_SERVICES, TEST_IMAGE
from tests.helpers import (
    leak_forms,
    make_repo,
    run_runner,
    runner_env,
    scan_bytes,
    scan_tree,
    set_secret,
)
from tests.test_queue_support import ManualClock, World, free_port, make_repos, write_spec

USER, PASSWORD = "puller", "pw-" + uuid.uuid4().hex[:16]
WRONG = "wrong-" + uuid.uuid4().hex[:16]


def auth_config(registry: str, user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": token}}})


# Reading a config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("alpine", "docker.io"),
        ("library/alpine:3", "docker.io"),
        ("acme/tool@sha256:" + "a" * 64, "docker.io"),
        ("ghcr.io/acme/tool:1", "ghcr.io"),
        ("127.0.0.1:5000/team/tool", "127.0.0.1:5000"),
        ("localhost/tool", "localhost"),
        ("Registry.Example.com/x", "registry.example.com"),
    ],
)
def test_an_images_registry_is_docker_s(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_each_form_of_config_json_gives_credentials_for_its_registry() -> None:
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:hub-pass-1").decode()},
            "http://127.0.0.1:5000/v2/": {"username": "u", "password": "p:with:colons"},
            "ghcr.io": {"identitytoken": "id-token-12345"},
        },
        "credsStore": "desktop",  # a helper program of the host's: not followed
    }
    found = parse_auth_config(Secret(json.dumps(config)))
    assert set(found) == {"docker.io", "127.0.0.1:5000", "ghcr.io"}
    assert found["docker.io"].engine_auth() == {
        "serveraddress": "docker.io",
        "username": "hub",
        "password": "hub-pass-1",
    }
    assert found["127.0.0.1:5000"].password.reveal() == "p:with:colons"
    assert found["ghcr.io"].engine_auth()["identitytoken"] == "id-token-12345"
    creds = credentials_for(Secret(json.dumps(config)), "alpine:3")
    assert creds is not None and creds.username == "hub"
    assert credentials_for(Secret(json.dumps(config)), "quay.io/x") is None
    assert "hub-pass-1" not in repr(found)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("not json " + PASSWORD, "not JSON"),
        (json.dumps(["x", PASSWORD]), "not a JSON object"),
        (json.dumps({"auths": {"r.io": {"auth": "!!" + PASSWORD}}}), "not base64"),
        (json.dumps({"auths": {"r.io": {"note": PASSWORD}}}), 'no "auth"'),
    ],
    # Ids without the random password, so every pytest-xdist worker collects the same tests.
    ids=["not-json", "not-object", "not-base64", "no-auth"],
)
def test_a_malformed_config_is_refused_by_where_never_by_what(value: str, said: str) -> None:
    with pytest.raises(SecretValidationError, match=said) as caught:
        parse_auth_config(Secret(value))
    assert PASSWORD not in str(caught.value) and PASSWORD not in (caught.value.hint or "")


def test_every_piece_of_the_credentials_is_redacted_alone() -> None:
    value = auth_config("127.0.0.1:5000", USER, PASSWORD)
    redactor = ActiveRedactor()
    register_values(redactor, registry_auth=Secret(value))
    user_pass = f"{USER}:{PASSWORD}"
    pieces = [PASSWORD, user_pass, base64.b64encode(user_pass.encode()).decode(), value]
    text = redactor.redact(" | ".join(pieces))
    assert PASSWORD not in text and "cHVsbGVy" not in text
    assert text.count("[REDACTED:DOCKER_AUTH_CONFIG]") == 4
    assert next(p.reveal() for p in secret_parts(Secret(value))) == PASSWORD


# The coordinator's claim and the executor (fakes) -----------------------------------------------

PRIVATE = "registry.example.test:5000/team/tool:1"
PRIVATE_ID = "sha256:" + "9" * 64
SPEC_PRIVATE = f"""\
name: private
on:
  - repository: github.com/acme/one
steps:
  - run: echo hi > file.txt
    container: {PRIVATE}
changesetTemplate:
  title: t
  body: b
  branch: private
  commit:
    message: m
"""

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(f"sqlite:///{tmp_path / 'state.db'}", make_repos(tmp_path / "repos"), ManualClock())
    w.coordinator.settings = type(w.coordinator.settings)(repos_root=w.repos_root)
    yield w
    w.close()


def test_the_claim_carries_the_jobs_own_credentials_audited_and_the_executor_pulls_with_them(
    world: World, tmp_path: Path
) -> None:
    registry = "registry.example.test:5000"
    world.client("carol").secret_set(
        "DOCKER_AUTH_CONFIG", "global", Secret(auth_config(registry, USER, WRONG))
    )
    alice = world.client("alice")
    alice.secret_set(
        "DOCKER_AUTH_CONFIG", "user:alice", Secret(auth_config(registry, USER, PASSWORD))
    )
    bundle = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_PRIVATE))
    (job_id,) = [j["id"] for j in alice.submit(bundle, "user:alice")["jobs"]]

    runtime = FakeRuntime(
        images={PRIVATE: PRIVATE_ID}, registry_logins={registry: (USER, PASSWORD)}
    )
    api = InProcessExecutorApi(world.coordinator, world.token["exec"])
    executor = Executor(
        api=api,
        runtime=runtime,
        settings=ExecutorSettings(
            name="ex-reg",
            limits=RunLimits(timeout_s=30, capture_limit=1 << 20),
            max_jobs=1,
            poll_interval_s=0.05,
            heartbeat_interval_s=0.1,
            log_flush_interval_s=0.05,
            report_timeout_s=5,
            temp_root=tmp_path / "tmp",
        ),
    )
    (tmp_path / "tmp").mkdir()
    thread = threading.Thread(target=executor.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and world.jobs.get(job_id).state != "completed":  # type: ignore[union-attr]
            time.sleep(0.05)
    finally:
        executor.stop_claiming()
        thread.join(10)
    record = world.jobs.get(job_id)
    assert record is not None and record.state == "completed", record
    # alice's credentials, not the wrong global ones, pulled the image; no step saw them.
    assert runtime.pulls == [(PRIVATE, USER)]
    (step,) = runtime.steps
    assert "DOCKER_AUTH_CONFIG" not in {*step.env, *step.secret_env, *step.secret_files}
    # One audited access, to alice's secret, by the executor, for the job.
    accessed = [e for e in world.secrets.log("DOCKER_AUTH_CONFIG") if e.event == "accessed"]
    assert [(e.namespace, e.actor, e.job) for e in accessed] == [
        ("user:alice", "executor:ex-reg", job_id)
    ]
    logs = "".join(c.text for c in world.jobs.logs(job_id, limit=1000)).encode()
    assert scan_bytes(logs, leak_forms([PASSWORD, WRONG])) == []


def test_the_claim_answer_round_trips_the_credentials_and_masks_them() -> None:
    data = {
        "job": {"id": "j1"},
        "lease": "l",
        "attempt": 1,
        "namespace": "user:alice",
        "bundle": Bundle(spec_name="s.yaml", spec_text=SPEC_PRIVATE).to_json(),
        "workspace": {},
        "clone_url": "file:///x",
        "env": {"namespace": "user:alice", "steps": {}},
        "secrets": {},
        "registry_auth": auth_config("r.io", USER, PASSWORD),
    }
    claim = Claim.from_json(data)
    assert claim.registry_auth == Secret(auth_config("r.io", USER, PASSWORD))
    assert PASSWORD not in repr(claim)
    assert Claim.from_json({**data, "registry_auth": None}).registry_auth is None


def test_images_resolve_with_the_credentials_and_a_refusal_names_the_registry() -> None:
    spec = load_spec_text(SPEC_PRIVATE, "spec.yaml")
    runtime = FakeRuntime(
        images={PRIVATE: PRIVATE_ID},
        registry_logins={"registry.example.test:5000": (USER, PASSWORD)},
    )
    good = Secret(auth_config("registry.example.test:5000", USER, PASSWORD))
    assert resolve_images(spec, runtime, good) == {PRIVATE: PRIVATE_ID}
    with pytest.raises(ImageNotFoundError, match=r"from registry\.example\.test:5000") as none:
        resolve_images(spec, runtime)
    assert "DOCKER_AUTH_CONFIG" in (none.value.hint or "")
    bad = Secret(auth_config("registry.example.test:5000", USER, WRONG))
    with pytest.raises(ImageNotFoundError, match="unauthorized") as refused:
        resolve_images(spec, runtime, bad)
    assert "credentials for registry.example.test:5000" in (refused.value.hint or "")
    assert WRONG not in str(refused.value)


# A real private registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT
    image: str  # the test image pushed there
    log: Path


def _unavailable(why: str) -> None:
    message = f"a private registry cannot start ({why}); `make services` installs it"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def registry(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry on loopback with htpasswd auth, holding the test image."""
    binary, htpasswd = shutil.which("docker-registry"), shutil.which("htpasswd")
    if binary is None or htpasswd is None:
        _unavailable("docker-registry or htpasswd is missing: run scripts/ensure-registry.sh")
        raise AssertionError("unreachable")
    root = tmp_path_factory.mktemp("registry")
    # The password goes to htpasswd on stdin, never its argv.
    subprocess.run(
        [htpasswd, "-iBc", str(root / "htpasswd"), USER],
        input=PASSWORD,
        check=True,
        text=True,
        capture_output=True,
    )
    port = free_port()
    host = f"127.0.0.1:{port}"
    (root / "config.yml").write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {host}\n"
        f"auth:\n  htpasswd:\n    realm: runner-test\n    path: {root / 'htpasswd'}\n"
    )
    log = root / "registry.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                _unavailable(f"it did not listen: {log.read_text()[-500:]}")
            time.sleep(0.1)
        image = f"{host}/runner-test/private"
        # Pushed through the engine's API with the credentials in the request: no config file.
        docker_client.api.tag(TEST_IMAGE, image, "1")
        docker_client.api.push(image, "1", auth_config={"username": USER, "password": PASSWORD})
        docker_client.api.remove_image(f"{image}:1")
        yield Registry(host=host, image=f"{image}:1", log=log)
    finally:
        server.terminate()
        server.wait(10)
        with contextlib.suppress(Exception):
            docker_client.api.remove_image(f"{host}/runner-test/private:1")


@pytest.mark.docker
@pytest.mark.slow
def test_runner_run_pulls_a_private_image_with_the_users_credentials(
    registry: Registry, tmp_path: Path, docker_client: Any
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: private\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: echo pulled > pulled.txt\n    container: {registry.image}\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: private\n  commit:\n    message: m\n"
    )
    out = tmp_path / "out"
    seen: list[str] = []

    def run() -> subprocess.CompletedProcess[str]:
        args = ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json"]
        proc = run_runner(args, env)
        seen.extend([proc.stdout, proc.stderr])
        return proc

    # 1. No credentials: refused, naming the registry and what to do.
    refused = run()
    assert refused.returncode == 1
    assert f"could not be pulled from {registry.host}" in refused.stderr
    assert "DOCKER_AUTH_CONFIG" in refused.stderr
    # 2. A wrong global config: refused, and the hint points at the credentials.
    set_secret(env, "DOCKER_AUTH_CONFIG", auth_config(registry.host, USER, WRONG), "--global")
    wrong = run()
    assert wrong.returncode == 1 and f"credentials for {registry.host}" in wrong.stderr
    # 3. alice's own overrides it: pulled, and the step ran.
    set_secret(
        env, "DOCKER_AUTH_CONFIG", auth_config(registry.host, USER, PASSWORD), "--user", "alice"
    )
    ok = run()
    assert ok.returncode == 0, ok.stderr
    patch = next(out.rglob("*.patch")).read_text()
    assert "+pulled" in patch
    events = [json.loads(line) for line in ok.stdout.splitlines()]
    run_id = events[0]["run_id"]
    # 4. The image is local now, yet without alice's secret the registry is asked again.
    assert (
        run_runner(["secret", "rm", "DOCKER_AUTH_CONFIG", "--user", "alice"], env).returncode == 0
    )
    again = run()
    assert again.returncode == 1 and registry.host in again.stderr
    # Every use is audited; the successful run's names alice's secret and its run.
    log = json.loads(run_runner(["secret", "log", "DOCKER_AUTH_CONFIG", "--json"], env).stdout)
    accessed = [(e["namespace"], e["job"]) for e in log if e["event"] == "accessed"]
    assert ("user:alice", run_id) in accessed and len(accessed) == 3
    # The credentials are in no output, event, file of runner's or log of Docker's.
    values = [PASSWORD, WRONG, f"{USER}:{PASSWORD}"]
    assert scan_bytes("".join(seen).encode(), leak_forms(values)) == []
    docker_log = Path("/var/log/runner-dockerd.log")
    places = [out, Path(env["RUNNER_HOME"]), tmp, registry.log, docker_log]
    assert scan_tree(places, values) == []
