"""Fixtures shared by the secret-store and database tests (no tests of its own).

``store`` runs a contract test against the in-memory fake, SQLite and
PostgreSQL, and ``users`` is the user directory beside that store (same
database); ``directory`` runs one against a user directory alone;
``backend``/``sql_store`` against the two real databases only. Every
PostgreSQL test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from runner.config import Settings
from runner.db import Database, connect
from runner.secrets.crypto import Keyring, new_master_key
from runner.secrets.store import SecretStore, SqlSecretStore
from runner.testing import FakeSecretStore, FakeUserDirectory
from runner.users.directory import UserDirectory
from runner.users.sql import SqlUserDirectory

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
STORES = ["fake", *BACKENDS]


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


@contextmanager
def fresh_postgres_database(base_url: str) -> Iterator[str]:
    """A new, empty database on the test server; its URL."""
    name = f"runner_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_dbname(base_url, name)
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Backend:
    """One real database for a test: where it lives and how to open it."""

    kind: str
    url: str
    home: Path

    def connect(self) -> Database:
        return connect(self.url)

    def open(self, keyring: Keyring) -> SqlSecretStore:
        return SqlSecretStore(self.connect(), keyring)

    def settings(self, **changes: object) -> Settings:
        """Settings as the CLI would build them: SQLite in RUNNER_HOME, or this database."""
        base = Settings(home=self.home, database_url=None if self.kind == "sqlite" else self.url)
        return base.with_changes(**changes) if changes else base


@contextmanager
def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    home = tmp_path / "home"
    if kind == "sqlite":
        yield Backend("sqlite", f"sqlite:///{home / 'runner.db'}", home)
        return
    base_url = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(base_url) as url:
        yield Backend("postgres", url, home)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with make_backend(request.param, request, tmp_path) as made:
        yield made


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([new_master_key()])


@pytest.fixture
def sql_store(backend: Backend, keyring: Keyring) -> Iterator[SqlSecretStore]:
    store = backend.open(keyring)
    yield store
    store.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecretStore]:
    if request.param == "fake":
        yield FakeSecretStore()
        return
    with make_backend(request.param, request, tmp_path) as made:
        opened = made.open(Keyring([new_master_key()]))
        yield opened
        opened.close()


@pytest.fixture
def users(store: SecretStore) -> UserDirectory:
    """The user directory beside ``store``: on its database, or in memory with the fake."""
    if isinstance(store, SqlSecretStore):
        return SqlUserDirectory(store.db)
    return FakeUserDirectory()


@pytest.fixture(params=STORES)
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UserDirectory]:
    """A user directory alone: no secret store, no master key."""
    if request.param == "fake":
        yield FakeUserDirectory()
        return
    with make_backend(request.param, request, tmp_path) as made:
        db = made.connect()
        yield SqlUserDirectory(db)
        db.close()
