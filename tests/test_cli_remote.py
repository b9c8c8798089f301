"""`runner secret …` and `runner env explain …` against a real coordinator (--url)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import RUNNER, leak_forms, run_runner, runner_env, scan_bytes

VALUE = "remote-secret-value-31415"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, Path, Path]]:
    server_env = runner_env(tmp_path / "server-home")
    tokens = {}
    for user in ("alice", "bob"):
        made = run_runner(["token", "create", "--user", user], server_env)
        assert made.returncode == 0, made.stderr
        path = tmp_path / f"{user}.token"
        path.write_text(made.stdout.strip() + "\n")
        path.chmod(0o600)
        tokens[user] = path
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [RUNNER, "server", "--listen", f"127.0.0.1:{port}"],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.2)
    # The client side has no state of its own: no database, no key.
    client_env = runner_env(tmp_path / "client-home")
    try:
        yield client_env, url, tokens["alice"], tokens["bob"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()


def test_secret_commands_work_against_a_coordinator(
    coordinator: tuple[dict[str, str], str, Path, Path], tmp_path: Path
) -> None:
    env, url, alice, bob = coordinator
    remote = ["--url", url, "--token-file", str(alice)]
    made = run_runner(["secret", "set", "GH_TOKEN", "--user", "alice", *remote], env, input=VALUE)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "created GH_TOKEN v1 in user:alice"
    again = run_runner(
        ["secret", "set", "GH_TOKEN", "--user", "alice", *remote], env, input=VALUE + "2"
    )
    assert again.stdout.strip() == "updated GH_TOKEN v2 in user:alice"
    listed = run_runner(["secret", "list", "--user", "alice", "--json", *remote], env)
    assert [(m["name"], m["version"]) for m in json.loads(listed.stdout)] == [("GH_TOKEN", 2)]

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: remote\nsteps:\n  - run: x\n    container: c\n    env: [GH_TOKEN]\n"
        "changesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n"
    )
    explained = run_runner(["env", "explain", str(spec), "--namespace", "user:alice", *remote], env)
    assert explained.returncode == 0, explained.stderr
    assert "secret GH_TOKEN from user:alice v2" in explained.stdout

    # bob may not touch alice's namespace, through any command
    bob_remote = ["--url", url, "--token-file", str(bob)]
    refused = run_runner(
        ["secret", "set", "GH_TOKEN", "--user", "alice", *bob_remote], env, input=VALUE
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ")
    refused = run_runner(
        ["env", "explain", str(spec), "--namespace", "user:alice", *bob_remote], env
    )
    assert refused.returncode == 1

    removed = run_runner(["secret", "rm", "GH_TOKEN", "--user", "alice", *remote], env)
    assert removed.returncode == 0, removed.stderr
    log = run_runner(["secret", "log", "GH_TOKEN", "--user", "alice", "--json", *remote], env)
    events = [e["event"] for e in json.loads(log.stdout)]
    assert [e for e in events if e != "denied"] == ["created", "updated", "deleted"]
    assert "denied" in events  # bob's refused attempt is on record

    # nothing of the value or the token reached any output, or the client's state
    forms = leak_forms([VALUE, VALUE + "2", alice.read_text().strip()])
    for proc in (made, again, listed, explained, removed, log):
        assert scan_bytes((proc.stdout + proc.stderr).encode(), forms) == []
    assert not (Path(env["RUNNER_HOME"]) / "master.key").exists()


def test_url_without_token_file_is_a_usage_error(
    coordinator: tuple[dict[str, str], str, Path, Path],
) -> None:
    env, url, _, _ = coordinator
    proc = run_runner(["secret", "list", "--url", url], env)
    assert proc.returncode == 2
    assert "--token-file" in proc.stderr
