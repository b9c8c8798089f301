"""One contract for every ``StepCache``: in memory, SQLite, PostgreSQL and through a coordinator.

Each case stores and reads through ``subject.cache`` (the cache under test)
and looks at or manages what is stored through ``subject.store`` (where the
entries live: the same object, except for the coordinator's cache, whose
entries live in the coordinator's SQL cache). The rule for failures is the
one in ``runner.cache.entry``: a read never fails (a miss instead), a write
that cannot be done raises ``CacheError`` and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runner.cache import (
    CacheEntry,
    ManagedStepCache,
    StepCache,
    StepKeyInput,
    WorkspaceKeyInput,
    step_keys,
)
from runner.cache.remote import CoordinatorStepCache
from runner.cache.sql import SqlStepCache
from runner.config import MIB
from runner.db import Database, connect
from runner.errors import CacheError
from runner.testing import FakeClock, MemoryStepCache

# Starlette's TestClient asks for a package we do not use; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "coordinator"]


class TickingClock(FakeClock):
    """Moves one second per reading, so least-recently-used order is never a tie."""

    def now(self) -> datetime:
        self.advance(1)
        return super().now()


@dataclass
class Subject:
    kind: str
    cache: StepCache
    store: ManagedStepCache
    corrupt: Callable[[str, bytes], None]  # replace the stored form of a key
    break_store: Callable[[], None]  # make the store fail from now on


Make = Callable[..., Subject]


def _sql_corrupt(db: Database) -> Callable[[str, bytes], None]:
    def corrupt(key: str, blob: bytes) -> None:
        with db.transaction() as tx:
            tx.execute("UPDATE step_cache SET entry = ? WHERE key = ?", [blob, key])

    return corrupt


@contextlib.contextmanager
def _database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if kind == "postgres":
        from tests.test_secrets_support import fresh_postgres_database

        with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
            yield url
        return
    yield f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    kind: str = request.param
    with contextlib.ExitStack() as stack:
        if kind == "memory":

            def make_memory(max_bytes: int = MIB) -> Subject:
                cache = MemoryStepCache(max_bytes, clock=TickingClock())

                def unavailable() -> None:
                    pytest.skip("an in-memory cache has no store to lose")

                return Subject(kind, cache, cache, cache.corrupt, unavailable)

            yield make_memory
            return
        if kind == "coordinator":
            from tests.test_queue_support import ManualClock, World, make_repos

            world = World(
                f"sqlite:///{tmp_path / 'state.db'}", make_repos(tmp_path / "repos"), ManualClock()
            )
            stack.callback(world.close)

            def make_remote(max_bytes: int = MIB) -> Subject:
                backing = SqlStepCache(world.db, max_bytes=max_bytes, clock=TickingClock())
                world.coordinator.cache = backing
                cache = CoordinatorStepCache(world.client("exec"))
                # The coordinator's database gone: it answers every call with an error.
                return Subject(kind, cache, backing, _sql_corrupt(world.db), world.db.close)

            yield make_remote
            return
        url = stack.enter_context(_database(kind, request, tmp_path))
        db = connect(url)
        stack.callback(db.close)

        def make_sql(max_bytes: int = MIB) -> Subject:
            cache = SqlStepCache(db, max_bytes=max_bytes, clock=TickingClock())
            return Subject(kind, cache, cache, _sql_corrupt(db), db.close)

        yield make_sql


def entry(payload: str = "", *, size: int | None = None, stdout: str = "out") -> CacheEntry:
    """An entry; with ``size``, one whose stored form is exactly ``size`` bytes."""
    base = CacheEntry(
        diff=payload.encode(),
        changes={"modified": [], "added": ["a.txt"], "deleted": [], "renamed": []},
        accumulated={"modified": [], "added": ["a.txt"], "deleted": [], "renamed": []},
        outputs={"answer": 42, "nested": {"list": [1, "two"]}},
        stdout=stdout,
        stderr="",
    )
    if size is None:
        return base
    pad = size - len(base.to_bytes())
    assert pad >= 0
    return CacheEntry(
        diff=payload.encode() + b"x" * pad,
        changes=base.changes,
        accumulated=base.accumulated,
        outputs=base.outputs,
        stdout=base.stdout,
        stderr=base.stderr,
    )


def put(cache: StepCache, key: str, value: CacheEntry, ns: str = "user:alice") -> None:
    cache.put(key, value, namespace=ns, secret_refs=[])


def keys_of(store: ManagedStepCache, namespace: str | None = None) -> list[str]:
    return sorted(i.key for i in store.entries(namespace))


# Storing and reading ----------------------------------------------------------------------


def test_an_entry_comes_back_as_stored_and_an_unknown_key_misses(make: Make) -> None:
    s = make()
    stored = entry("diff --git a/a.txt b/a.txt\n+\u00e9\x00\xff")
    put(s.cache, "k1", stored)
    assert s.cache.get("k1") == stored
    assert s.cache.get("k2") is None
    [info] = s.store.entries()
    assert (info.key, info.namespace, info.size) == ("k1", "user:alice", len(stored.to_bytes()))


def test_a_hit_marks_the_entry_used_and_a_put_replaces_it(make: Make) -> None:
    s = make()
    put(s.cache, "k1", entry("one"))
    [before] = s.store.entries()
    assert s.cache.get("k1") is not None
    [after] = s.store.entries()
    assert after.created_at == before.created_at
    assert after.last_used_at > before.last_used_at
    put(s.cache, "k1", entry("second version"))
    [replaced] = s.store.entries()
    got = s.cache.get("k1")
    assert got is not None and got.diff == b"second version"
    assert replaced.size == len(entry("second version").to_bytes())


def test_least_recently_used_entries_are_evicted_past_the_limit(make: Make) -> None:
    s = make(max_bytes=3000)
    for key in ("a", "b", "c"):
        put(s.cache, key, entry(key, size=1000))
    assert s.cache.get("a") is not None  # now b is the least recently used
    put(s.cache, "d", entry("d", size=1000))
    assert keys_of(s.store) == ["a", "c", "d"]
    assert s.cache.get("b") is None
    put(s.cache, "e", entry("e", size=1500))  # c alone frees too little: a goes too
    assert keys_of(s.store) == ["d", "e"]
    assert s.store.total_bytes() <= 3000


def test_an_entry_larger_than_the_whole_cache_is_not_stored_and_evicts_nothing(
    make: Make,
) -> None:
    s = make(max_bytes=2000)
    put(s.cache, "small", entry("s", size=1500))
    put(s.cache, "huge", entry("h", size=2001))
    assert keys_of(s.store) == ["small"]
    assert s.cache.get("huge") is None


# Namespaces and secrets -------------------------------------------------------------------------


def workspace_key(ns: str) -> WorkspaceKeyInput:
    return WorkspaceKeyInput(
        namespace=ns,
        repository="github.com/acme/app",
        base_tree="4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        path="",
        only_fetch_workspace=False,
        batch_change_name="hello",
        batch_change_description="",
    )


def _step(n: int) -> StepKeyInput:
    return StepKeyInput(
        definition={"run": f"echo {n}", "container": "busybox", "env": []},
        image_id="sha256:" + "ab" * 32,
        file_hashes={},
        mount_hashes={},
        env=(),
    )


def test_namespaces_are_kept_apart(make: Make) -> None:
    s = make()
    steps = [_step(1), _step(2)]
    alice = step_keys(workspace_key("user:alice"), steps)
    acme = step_keys(workspace_key("org:acme"), steps)
    assert not set(alice) & set(acme)
    for key in alice:
        put(s.cache, key, entry(key), ns="user:alice")
    assert all(s.cache.get(key) is None for key in acme)
    for key in acme:
        put(s.cache, key, entry(key), ns="org:acme")
    assert set(keys_of(s.store, "user:alice")) == set(alice)
    assert set(keys_of(s.store, "org:acme")) == set(acme)
    assert s.store.clear("org:acme") == 2
    assert set(keys_of(s.store)) == set(alice)
    assert all(s.cache.get(key) is None for key in acme)
    assert s.store.clear() == 2
    assert s.store.entries() == []


def test_invalidating_a_secret_removes_exactly_the_entries_that_used_it(make: Make) -> None:
    s = make()
    token, other, token2 = "sec_token:1", "sec_other:1", "sec_token:2"
    for key, refs in [
        ("plain", []),
        ("v1", [token]),
        ("v1+other", [token, other]),
        ("v2", [token2]),
        ("other", [other]),
    ]:
        s.cache.put(key, entry(key), namespace="user:alice", secret_refs=refs)
    assert s.store.invalidate_secret("sec_token", 1) == 2
    assert keys_of(s.store) == ["other", "plain", "v2"]
    assert s.cache.get("v1") is None
    assert s.store.invalidate_secret("sec_token") == 1
    assert s.store.invalidate_secret("sec_token") == 0
    assert keys_of(s.store) == ["other", "plain"]
    assert s.cache.get("other") is not None
    [info] = [i for i in s.store.entries() if i.key == "other"]
    assert info.secret_refs == (other,)


def test_a_malformed_secret_ref_is_a_cache_error(make: Make) -> None:
    s = make()
    for ref in ("sec_token", "sec_token:v1", ":1"):
        with pytest.raises(CacheError):
            s.cache.put("k", entry("x"), namespace="user:alice", secret_refs=[ref])
    assert s.store.entries() == []


# Failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [
        b"\x00\xff not json at all",
        b'{"v": 999, "diff": ""}',
        b'{"v": 1, "diff": "x"}',
        b"[1, 2, 3]",
        b"",
    ],
    ids=["garbage", "other-version", "missing-fields", "wrong-shape", "empty"],
)
def test_a_corrupt_entry_is_a_logged_miss_and_is_removed(make: Make, blob: bytes) -> None:
    s = make()
    put(s.cache, "bad", entry("x"))
    put(s.cache, "good", entry("y"))
    s.corrupt("bad", blob)
    with capture_logs() as logs:
        assert s.cache.get("bad") is None
    assert any(log["log_level"] == "warning" and "unreadable" in log["event"] for log in logs)
    assert keys_of(s.store) == ["good"]
    assert s.cache.get("good") == entry("y")


def test_an_entry_that_cannot_be_encoded_is_a_cache_error(make: Make) -> None:
    s = make()
    odd = CacheEntry(
        diff=b"", changes={}, accumulated={}, outputs={"x": {1, 2}}, stdout="", stderr=""
    )
    with pytest.raises(CacheError) as info:
        put(s.cache, "k", odd)
    assert type(info.value) is CacheError
    assert s.store.entries() == []


def test_a_cache_whose_store_is_gone_misses_on_read_and_raises_cache_error_on_write(
    make: Make,
) -> None:
    s = make()
    put(s.cache, "k", entry("x"))
    s.break_store()
    with capture_logs() as logs:
        assert s.cache.get("k") is None
    assert any(log["log_level"] == "warning" for log in logs)
    with pytest.raises(CacheError):
        put(s.cache, "k2", entry("y"))
