"""Helpers shared by the integration tests: git repositories and leak scans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runner.redact.encodings import forms_of

ROOT = Path(__file__).resolve().parents[1]
RUNNER = str(Path(sys.executable).with_name("runner"))
TEST_IMAGE = "runner-test/busybox:latest"

GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path, name: str, files: Mapping[str, str], *, branch: str = "main") -> Path:
    """A git repository at root/name with one commit holding ``files``."""
    repo = root / name
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", branch)
    for rel, content in files.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def runner_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment for a `runner` subprocess with its own state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update({"RUNNER_HOME": str(home), "RUNNER_USER": "alice", "PYTHONUNBUFFERED": "1"})
    env["RUNNER_READY_NETWORKS"] = "0"  # its home is thrown away (see conftest.py)
    env.update(extra)
    return env


def run_runner(
    args: list[str], env: Mapping[str, str], *, input: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNNER, *args],
        env=dict(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def set_secret(env: Mapping[str, str], name: str, value: str, *flags: str) -> None:
    proc = run_runner(["secret", "set", name, *flags], env, input=value)
    assert proc.returncode == 0, proc.stderr


def leak_forms(values: Iterable[str]) -> dict[bytes, str]:
    """Every registered form of each value → the value's label, for scanning."""
    found: dict[bytes, str] = {}
    for value in values:
        for form in forms_of(value):
            found[form] = value[:4] + "…"
        found[value.encode()] = value[:4] + "…"
    return found


def scan_bytes(data: bytes, forms: Mapping[bytes, str]) -> list[str]:
    return [label for form, label in forms.items() if form in data]


def scan_tree(paths: Iterable[Path], values: Iterable[str]) -> list[str]:
    """Paths under ``paths`` whose content holds a value or one of its encodings."""
    forms = leak_forms(values)
    hits: list[str] = []
    for base in paths:
        if not base.exists():
            continue
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        for file in files:
            try:
                data = file.read_bytes()
            except OSError:
                continue
            for label in scan_bytes(data, forms):
                hits.append(f"{file}: {label}")
    return hits


def proc_cmdlines() -> bytes:
    out = bytearray()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out += (entry / "cmdline").read_bytes() + b"\n"
            except OSError:
                continue
    return bytes(out)


def wait_for_file(folder: Path, pattern: str, *, timeout_s: float = 60) -> Path:
    """The first file under ``folder`` matching ``pattern`` (a step's signal that it is there)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} under {folder} within {timeout_s:g} s")


def container_leaks(docker_client: Any, run_id: str, values: Iterable[str]) -> list[str]:
    """Where a run's containers show a value: `docker inspect`, their folder, their layer.

    Fails if the run has no container (the check would prove nothing).
    """
    chosen = list(values)
    forms = leak_forms(chosen)
    label = f"org.runner.run-id={run_id}"
    containers = docker_client.containers.list(all=True, filters={"label": label})
    assert containers, f"run {run_id} has no container to look at"
    root = Path(docker_client.info()["DockerRootDir"])
    hits: list[str] = []
    for container in containers:
        inspect = json.dumps(docker_client.api.inspect_container(container.id)).encode()
        hits += [f"docker inspect {container.id[:12]}: {x}" for x in scan_bytes(inspect, forms)]
        hits += scan_tree([root / "containers" / container.id], chosen)
        upper = container.attrs["GraphDriver"]["Data"].get("UpperDir")
        if upper:
            hits += scan_tree([Path(upper)], chosen)
    return hits
