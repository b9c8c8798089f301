"""Helpers shared by the queue, coordinator and executor tests (no tests of its own)."""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from runner.testing.clock import FakeClock

# A clock tests move by hand, so stall limits need no sleeping.
ManualClock = FakeClock


@contextmanager
def fresh_postgres_database(base_url: str) -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    import psycopg

    name = f"runner_q_{secrets.token_hex(6)}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(base_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


GIT_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def make_repo(root: Path, name: str, files: dict[str, str] | None = None) -> Path:
    """A git repository at ``root/name`` with one commit on ``main``."""
    path = root / name
    path.mkdir(parents=True)
    for rel, text in (files or {"README.md": f"# {name}\n"}).items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "initial"]):
        subprocess.run(["git", *args], cwd=path, env=GIT_ENV, check=True, capture_output=True)
    return path


SPEC_WITH_SECRET = """\
name: hello
description: say hello
on:
  - repository: github.com/acme/one
  - repository: github.com/acme/two
steps:
  - run: echo hi > file.txt
    container: runner-test/busybox:latest
    env:
      - TOKEN
      - GREETING: hello
changesetTemplate:
  title: Hello
  body: Says hello
  branch: hello
  commit:
    message: hello
"""

SPEC_PLAIN = """\
name: plain
description: no secrets
on:
  - repository: github.com/acme/one
steps:
  - run: echo hi > file.txt
    container: runner-test/busybox:latest
changesetTemplate:
  title: Plain
  body: Plain
  branch: plain
  commit:
    message: plain
"""


def leaks(value: str, data: bytes) -> list[bytes]:
    """Every registered form of ``value`` found in ``data``."""
    from runner.redact import forms_of

    return sorted(form for form in forms_of(value) if form in data)


TOKEN_VALUE = "tok-alice-0123456789-secret"
ORG_VALUE = "org-acme-9876543210-secret"


class World:
    """A coordinator over real SQL stores, served in-process through FastAPI's TestClient.

    Users: alice (member of org acme), bob, carol (admin); one executor token.
    Repositories github.com/acme/one and /two under ``repos_root``.
    """

    def __init__(self, db_url: str, repos_root: Path, clock: ManualClock) -> None:
        from fastapi.testclient import TestClient

        from runner.db import connect
        from runner.queue.policies import SqlPolicyStore
        from runner.queue.server import create_app
        from runner.queue.service import Coordinator, CoordinatorSettings
        from runner.queue.store import SqlJobStore
        from runner.queue.tokens import SqlTokenStore
        from runner.secrets.crypto import Keyring, new_master_key
        from runner.secrets.store import SqlSecretStore
        from runner.users.sql import SqlUserDirectory

        self.clock = clock
        self.repos_root = repos_root
        self.db = connect(db_url)
        self.secrets = SqlSecretStore(self.db, Keyring([new_master_key()]))
        self.jobs = SqlJobStore(self.db, clock=clock)
        self.tokens = SqlTokenStore(self.db, clock=clock)
        self.users = SqlUserDirectory(self.db)
        self.users.add_user("alice")
        self.users.add_user("bob")
        self.users.add_user("carol", admin=True)
        self.users.add_member("acme", "alice")
        self.users.add_org("other")
        self.token = {
            "alice": self.tokens.create("user", "alice")[1],
            "bob": self.tokens.create("user", "bob")[1],
            "carol": self.tokens.create("user", "carol")[1],
            "exec": self.tokens.create("executor", "ex1")[1],
        }
        self.coordinator = Coordinator(
            jobs=self.jobs,
            tokens=self.tokens,
            secrets=self.secrets,
            users=self.users,
            settings=CoordinatorSettings(repos_root=repos_root, stall_limit_s=30, max_resets=3),
            cache=None,
            clock=clock,
            policies=SqlPolicyStore(self.db, clock=clock),
        )
        self.app = create_app(self.coordinator)
        self.http = TestClient(self.app, base_url="http://testserver")

    def client(self, who: str) -> Any:
        from runner.queue.client import CoordinatorClient

        return CoordinatorClient(url="http://testserver", token=self.token[who], http=self.http)

    def close(self) -> None:
        self.http.close()
        self.db.close()


@contextmanager
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    """A coordinator on SQLite under ``tmp_path`` with a hand-moved clock, closed after."""
    w = World(f"sqlite:///{tmp_path / 'state.db'}", make_repos(tmp_path / "repos"), ManualClock())
    try:
        yield w
    finally:
        w.close()


def make_repos(root: Path) -> Path:
    make_repo(root, "github.com/acme/one")
    make_repo(root, "github.com/acme/two")
    return root


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# The SQL backends every coordinator test runs on; PostgreSQL under its marker.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A ``World`` on each backend (import it by name into a test module to use it)."""
    repos = make_repos(tmp_path / "repos")
    if request.param == "sqlite":
        w = World(f"sqlite:///{tmp_path / 'state.db'}", repos, ManualClock())
        yield w
        w.close()
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        w = World(url, repos, ManualClock())
        yield w
        w.close()
