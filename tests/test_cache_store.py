"""The execution cache's SQL store with a real secret store, and `runner cache`.

What every cache does (round trips, eviction, namespaces, invalidation, corrupt
entries) is in tests/test_cache_contract.py; here is what needs the secret
store's tables or the command line. Every PostgreSQL test gets a database of
its own (``tests.test_secrets_support``).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runner.cache import StepKeyInput, prefix_secret_refs, step_keys
from runner.cache.sql import SqlStepCache, invalidate_after_secret_change, open_cache
from runner.config import MIB, Settings
from runner.env import PlannedVar, Provenance
from runner.secrets.models import SecretMeta
from runner.secrets.store import SqlSecretStore
from runner.secrets.value import Secret
from tests import test_secrets_support as support
from tests.helpers import leak_forms, run_runner, runner_env, scan_bytes
from tests.test_cache_contract import TickingClock, entry
from tests.test_cache_contract import workspace_key as _workspace
from tests.test_secrets_support import Backend

backend = support.backend
keyring = support.keyring
sql_store = support.sql_store

VALUE = "cache-test-secret-value-42"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
CLI_START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# Keys ------------------------------------------------------------------------------


def _step(n: int, env: tuple[PlannedVar, ...] = ()) -> StepKeyInput:
    return StepKeyInput(
        definition={"run": f"echo {n}", "container": "busybox", "env": [v.name for v in env]},
        image_id="sha256:" + "ab" * 32,
        file_hashes={},
        mount_hashes={},
        env=env,
    )


def _secret_var(step: int, meta: SecretMeta) -> PlannedVar:
    prov = Provenance("secret", namespace=meta.namespace, secret_id=meta.id, version=meta.version)
    return PlannedVar(step, meta.name, prov, secret=meta)


# Secrets -----------------------------------------------------------------------------------


def _put_with_refs(cache: SqlStepCache, key: str, *metas: SecretMeta) -> None:
    cache.put(
        key,
        entry(key),
        namespace="user:alice",
        secret_refs=[f"{m.id}:{m.version}" for m in metas],
    )


def test_a_secret_update_drops_the_old_versions_entries_and_audits_the_count(
    sql_store: SqlSecretStore,
) -> None:
    cache = open_cache(Settings(home=Path("/nonexistent")), sql_store)
    v1, _ = sql_store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    other, _ = sql_store.set("OTHER", "global", Secret(VALUE + "-other"), actor="admin")
    _put_with_refs(cache, "step1", v1)
    _put_with_refs(cache, "step2", v1, other)
    _put_with_refs(cache, "unrelated", other)
    before = sql_store.get("TOKEN", "user:alice")
    sql_store.set("TOKEN", "user:alice", Secret(VALUE + "-rotated"), actor="alice")
    assert invalidate_after_secret_change(sql_store, before, "alice") == 2
    assert [i.key for i in cache.entries()] == ["unrelated"]
    [event] = [e for e in sql_store.log("TOKEN") if e.event == "cache_invalidated"]
    assert (event.count, event.version, event.actor, event.namespace) == (
        2,
        1,
        "alice",
        "user:alice",
    )
    assert event.secret_id == v1.id


def test_removing_or_recreating_a_secret_never_leaves_entries_to_hit(
    sql_store: SqlSecretStore,
) -> None:
    cache = open_cache(Settings(home=Path("/nonexistent")), sql_store)
    first, _ = sql_store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    _put_with_refs(cache, "old", first)
    removed = sql_store.remove("TOKEN", "user:alice", actor="alice")
    assert invalidate_after_secret_change(sql_store, removed, "alice") == 1
    assert cache.entries() == []
    # Re-created with the same value: a new id, so keys of the old one cannot match.
    again, created = sql_store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    assert created and again.id != first.id and again.version == 1
    ws = _workspace("user:alice")
    assert step_keys(ws, [_step(1, (_secret_var(1, first),))]) != step_keys(
        ws, [_step(1, (_secret_var(1, again),))]
    )
    events = [e for e in sql_store.log("TOKEN") if e.event == "cache_invalidated"]
    assert [(e.count, e.detail) for e in events] == [(1, "secret removed")]
    assert invalidate_after_secret_change(sql_store, None, "alice") == 0


def test_an_entry_keyed_on_a_superseded_version_is_not_stored(
    sql_store: SqlSecretStore,
) -> None:
    # A run that resolved v1 finishes its step after the rotation: its entry would linger.
    cache = open_cache(Settings(home=Path("/nonexistent")), sql_store)
    v1, _ = sql_store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    _put_with_refs(cache, "before", v1)
    v2, _ = sql_store.set("TOKEN", "user:alice", Secret(VALUE + "-2"), actor="alice")
    _put_with_refs(cache, "late", v1)
    _put_with_refs(cache, "current", v2)
    sql_store.remove("TOKEN", "user:alice", actor="alice")
    _put_with_refs(cache, "after-removal", v2)
    assert sorted(i.key for i in cache.entries()) == ["before", "current"]


def test_open_cache_takes_its_limit_from_the_settings(sql_store: SqlSecretStore) -> None:
    settings = Settings(home=Path("/nonexistent"), cache_max_mb=3)
    assert open_cache(settings, sql_store).max_bytes == 3 * MIB


def test_the_cache_storage_holds_no_secret_value(
    backend: Backend, sql_store: SqlSecretStore
) -> None:
    meta, _ = sql_store.set("TOKEN", "user:alice", Secret(VALUE), actor="alice")
    cache = open_cache(backend.settings(), sql_store)
    steps = [_step(1), _step(2, (_secret_var(2, meta),)), _step(3)]
    keys = step_keys(_workspace("user:alice"), steps)
    for i, key in enumerate(keys):
        cache.put(
            key,
            entry(f"step {i}", stdout="token is [REDACTED:TOKEN]"),
            namespace="user:alice",
            secret_refs=prefix_secret_refs(steps, i + 1),
        )
    assert [
        len(i.secret_refs) for i in sorted(cache.entries(), key=lambda i: keys.index(i.key))
    ] == [
        0,
        1,
        1,
    ]
    for key in keys:
        assert cache.get(key) is not None
    forms = leak_forms([VALUE])
    forms[hashlib.sha256(VALUE.encode()).hexdigest().encode()] = "sha256"
    with sql_store.db.transaction(write=False) as tx:
        rows = tx.all("SELECT * FROM step_cache") + tx.all("SELECT * FROM step_cache_secrets")
    dumped = b"\n".join(
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
        for row in rows
        for v in row.values()
    )
    assert scan_bytes(dumped, forms) == []
    if backend.kind == "sqlite":
        sql_store.db.close()
        files = sorted(backend.home.glob("runner.db*"))
        assert files
        assert all(scan_bytes(f.read_bytes(), forms) == [] for f in files)


# Concurrency ----------------------------------------------------------------------------------


def test_concurrent_writers_and_readers_keep_the_limit(backend: Backend) -> None:
    limit = 20_000
    errors: list[BaseException] = []
    setup = backend.connect()
    SqlStepCache(setup, max_bytes=limit)  # tables exist before the race
    setup.close()

    def worker(n: int) -> None:
        db = backend.connect()
        try:
            cache = SqlStepCache(db, max_bytes=limit)
            for i in range(25):
                key = f"w{n}-{i}"
                cache.put(key, entry(key, size=1000), namespace="user:alice", secret_refs=[])
                cache.get(f"w{(n + 1) % 4}-{i}")
                cache.get(key)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    check = backend.connect()
    try:
        cache = SqlStepCache(check, max_bytes=limit)
        assert 0 < cache.total_bytes() <= limit
        assert len(cache.entries()) == cache.total_bytes() // 1000
    finally:
        check.close()


# The command line -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return runner_env(tmp_path / "home")


def _seed(home: Path, clock: TickingClock, *items: tuple[str, str, int]) -> None:
    from runner.db import connect

    db = connect(f"sqlite:///{home / 'runner.db'}")
    try:
        cache = SqlStepCache(db, max_bytes=MIB, clock=clock)
        for key, ns, size in items:
            cache.put(key, entry(key, size=size), namespace=ns, secret_refs=[])
    finally:
        db.close()


def test_cache_list_prints_entries_as_a_table_and_as_json(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    home = tmp_path / "home"
    _seed(
        home, TickingClock(CLI_START), ("a" * 64, "user:alice", 700), ("b" * 64, "org:acme", 3000)
    )
    proc = run_runner(["cache", "list", "--json"], cli_env)
    assert proc.returncode == 0, proc.stderr
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    assert [d["key"] for d in data] == ["b" * 64, "a" * 64]  # most recently used first
    first = data[0]
    assert set(first) == {
        "key",
        "key_prefix",
        "namespace",
        "size",
        "created_at",
        "last_used_at",
        "secrets",
    }
    assert (first["namespace"], first["size"], first["key_prefix"]) == ("org:acme", 3000, "b" * 12)
    assert RFC3339.match(first["created_at"]) and RFC3339.match(first["last_used_at"])
    assert first["created_at"].startswith("2024-05-01T12:00:")

    table = run_runner(["cache", "list"], cli_env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["KEY", "NAMESPACE", "SIZE", "CREATED", "LAST", "USED"]
    assert lines[1].split()[:4] == ["b" * 12, "org:acme", "2.9", "KiB"]
    assert lines[2].split()[:4] == ["a" * 12, "user:alice", "700", "B"]
    assert "a" * 13 not in table.stdout

    only = run_runner(["cache", "list", "--json", "--namespace", "user:alice"], cli_env)
    assert [d["namespace"] for d in json.loads(only.stdout)] == ["user:alice"]


def test_cache_clear_says_how_many_entries_it_removed(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    home = tmp_path / "home"
    _seed(
        home,
        TickingClock(CLI_START),
        ("a", "user:alice", 700),
        ("b", "org:acme", 700),
        ("c", "org:acme", 700),
    )
    proc = run_runner(["cache", "clear", "--namespace", "org:acme"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "removed 2 cache entries of org:acme"
    proc = run_runner(["cache", "clear"], cli_env)
    assert proc.stdout.strip() == "removed 1 cache entry"
    empty = run_runner(["cache", "list", "--json"], cli_env)
    assert json.loads(empty.stdout) == []
    with sqlite3.connect(home / "runner.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM step_cache").fetchone() == (0,)


def test_cache_commands_refuse_a_bad_namespace(cli_env: dict[str, str]) -> None:
    proc = run_runner(["cache", "list", "--namespace", "alice"], cli_env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: invalid namespace 'alice'")


def test_cache_commands_do_not_create_a_master_key(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = run_runner(["cache", "list"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "empty" in proc.stderr
    assert not (tmp_path / "home" / "master.key").exists()
