"""The execution cache in the state database (SQLite or PostgreSQL).

``SqlStepCache`` keeps one row per step-prefix key in ``step_cache`` (with its
namespace, size and last-used time, for listing and LRU eviction, and the
key's named inputs with their workspace scope and step, for ``runner cache
why``) and one row per secret the key used in ``step_cache_secrets``, so that
a rotated or removed secret finds the entries to drop without reading any
blob. The entries a secret change drops leave their named inputs behind in
``step_cache_tombstones`` (no blob, no value), so the miss they cause can be
explained; the newest ``TOMBSTONES_KEPT`` are kept.

Concurrency: every write takes one advisory lock on PostgreSQL (SQLite
serialises writers already), so two processes evicting at once cannot
deadlock, and a ``put`` racing a secret change either lands before the
invalidation (and is deleted by it) or sees the new version and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from runner.cache.entry import CacheEntry, EntryInfo, parse_ref
from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import MIB
from runner.db import Database, Transaction, db_time, parse_db_time
from runner.errors import CacheError, StoreError
from runner.log import get_logger
from runner.migrations import Migration, register
from runner.secrets.store import secret_event

if TYPE_CHECKING:
    from runner.cache.why import Candidate
    from runner.config import Settings
    from runner.secrets.models import SecretMeta
    from runner.secrets.store import SqlSecretStore

_log = get_logger("runner.cache")
_WRITE_LOCK = "runner:step-cache"
TOMBSTONES_KEPT = 10_000

_TABLES = """
CREATE TABLE step_cache (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    entry {{BLOB}} NOT NULL,
    size BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    secret_refs TEXT NOT NULL
);
CREATE INDEX step_cache_last_used ON step_cache (last_used_at, key);
CREATE INDEX step_cache_namespace ON step_cache (namespace);
CREATE TABLE step_cache_secrets (
    key TEXT NOT NULL REFERENCES step_cache (key) ON DELETE CASCADE,
    secret_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (key, secret_id, version)
);
CREATE INDEX step_cache_secrets_by_secret ON step_cache_secrets (secret_id, version);
"""

_WHY = """
ALTER TABLE step_cache ADD COLUMN scope TEXT;
ALTER TABLE step_cache ADD COLUMN step INTEGER;
ALTER TABLE step_cache ADD COLUMN inputs TEXT;
CREATE INDEX step_cache_scope ON step_cache (scope, step);
CREATE TABLE step_cache_tombstones (
    key TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    step INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    reason TEXT NOT NULL,
    dropped_at TEXT NOT NULL
);
CREATE INDEX step_cache_tombstones_scope ON step_cache_tombstones (scope, step);
CREATE INDEX step_cache_tombstones_dropped ON step_cache_tombstones (dropped_at);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(200, "cache: step entries and the secrets their keys used", _TABLES),
    Migration(201, "cache: named inputs per entry, tombstones of dropped ones", _WHY),
)

register(*MIGRATIONS)


def _info(row: dict[str, Any]) -> EntryInfo:
    return EntryInfo(
        key=str(row["key"]),
        namespace=str(row["namespace"]),
        size=int(row["size"]),
        created_at=parse_db_time(row["created_at"]),
        last_used_at=parse_db_time(row["last_used_at"]),
        secret_refs=tuple(json.loads(row["secret_refs"])),
    )


class SqlStepCache:
    """The ``StepCache`` on a ``runner.db.Database``; LRU-evicts past ``max_bytes``.

    ``check_secrets``: refuse to store an entry whose key used a secret version
    that is no longer current (needs the secret store's tables in the same
    database; ``open_cache`` turns it on).
    """

    def __init__(
        self,
        db: Database,
        *,
        max_bytes: int,
        check_secrets: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._db = db
        self.max_bytes = max_bytes
        self._check_secrets = check_secrets
        self._clock = clock
        db.migrate(MIGRATIONS)

    def _now(self) -> str:
        return db_time(self._clock.now())

    # StepCache -------------------------------------------------------------------------

    def get(self, key: str) -> CacheEntry | None:
        """The entry of ``key``, marking it used; ``None`` when absent or unreadable."""

        # A lookup walks back over every step's key and most miss: a miss stays a
        # read, and only a hit takes the write lock to mark the entry used.
        def fetch(tx: Transaction) -> bytes | None:
            row = tx.one("SELECT entry FROM step_cache WHERE key = ?", [key])
            return None if row is None else bytes(row["entry"])

        def touch(tx: Transaction) -> None:
            tx.execute("UPDATE step_cache SET last_used_at = ? WHERE key = ?", [self._now(), key])

        try:
            data = self._db.run(fetch, write=False)
            if data is None:
                return None
            self._db.run(touch)
        except StoreError as exc:
            _log.warning("cache unreadable; running the steps", key=key[:12], error=exc.message)
            return None
        try:
            return CacheEntry.from_bytes(data)
        except CacheError as exc:
            _log.warning(
                "cache entry unreadable; dropped it and running the step",
                key=key[:12],
                error=exc.message,
            )
            self._drop_if_unchanged(key, data)
            return None

    def _drop_if_unchanged(self, key: str, data: bytes) -> None:
        # Another process may have replaced the bad entry with a good one meanwhile.
        def drop(tx: Transaction) -> None:
            tx.lock(_WRITE_LOCK)
            tx.execute("DELETE FROM step_cache WHERE key = ? AND entry = ?", [key, data])

        try:
            self._db.run(drop)
        except StoreError as exc:
            _log.warning("could not drop an unreadable cache entry", error=exc.message)

    def put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None:
        """Store (or replace) ``key``'s entry, then evict least-recently-used entries."""
        data = entry.to_bytes()
        if len(data) > self.max_bytes:
            # It would push out every other entry and then be the next one to go.
            _log.info(
                "not caching an entry larger than the whole cache",
                size=len(data),
                max_bytes=self.max_bytes,
            )
            return
        refs = sorted({parse_ref(r) for r in secret_refs})
        refs_json = json.dumps([f"{sid}:{ver}" for sid, ver in refs])
        now = self._now()
        named = entry.inputs or {}
        scope, step = named.get("scope"), named.get("step")
        inputs_json = json.dumps(named, sort_keys=True) if named else None

        def write(tx: Transaction) -> bool:
            tx.lock(_WRITE_LOCK)
            if self._check_secrets and not self._refs_current(tx, refs):
                return False
            tx.execute(
                "INSERT INTO step_cache (key, namespace, entry, size, created_at,"
                " last_used_at, secret_refs, scope, step, inputs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET namespace = excluded.namespace,"
                " entry = excluded.entry, size = excluded.size,"
                " created_at = excluded.created_at, last_used_at = excluded.last_used_at,"
                " secret_refs = excluded.secret_refs, scope = excluded.scope,"
                " step = excluded.step, inputs = excluded.inputs",
                [key, namespace, data, len(data), now, now, refs_json, scope, step, inputs_json],
            )
            tx.execute("DELETE FROM step_cache_secrets WHERE key = ?", [key])
            for secret_id, version in refs:
                tx.execute(
                    "INSERT INTO step_cache_secrets (key, secret_id, version) VALUES (?, ?, ?)",
                    [key, secret_id, version],
                )
            self._evict(tx, keep=key)
            return True

        try:
            stored = self._db.run(write)
        except StoreError as exc:
            raise CacheError(
                f"could not store the cache entry {key[:12]}: {exc.message}", hint=exc.hint
            ) from exc
        if not stored:
            _log.info("not caching a step whose secrets changed during the run", key=key[:12])

    @staticmethod
    def _refs_current(tx: Transaction, refs: Sequence[tuple[str, int]]) -> bool:
        for secret_id, version in refs:
            current = tx.scalar(
                "SELECT current_version FROM secrets WHERE id = ? AND deleted_at IS NULL",
                [secret_id],
            )
            if current is None or int(current) != version:
                return False
        return True

    def _evict(self, tx: Transaction, *, keep: str) -> int:
        total = int(tx.scalar("SELECT COALESCE(SUM(size), 0) AS total FROM step_cache") or 0)
        if total <= self.max_bytes:
            return 0
        doomed: list[str] = []
        rows = tx.all(
            "SELECT key, size FROM step_cache WHERE key <> ? ORDER BY last_used_at, key", [keep]
        )
        for row in rows:
            if total <= self.max_bytes:
                break
            doomed.append(str(row["key"]))
            total -= int(row["size"])
        for key in doomed:
            tx.execute("DELETE FROM step_cache WHERE key = ?", [key])
        if doomed:
            _log.debug("evicted least-recently-used cache entries", count=len(doomed))
        return len(doomed)

    # Why a step missed (runner.cache.why) --------------------------------------------------

    def contains(self, key: str) -> bool:
        """Whether ``key`` has an entry; unlike ``get``, marks nothing used."""
        with self._db.transaction(write=False) as tx:
            return tx.one("SELECT 1 AS found FROM step_cache WHERE key = ?", [key]) is not None

    def candidates(self, scope: str, step: int) -> list[Candidate]:
        """The entries and tombstones of one workspace's step ``step``, to compare a key with."""
        with self._db.transaction(write=False) as tx:
            live = tx.all(
                "SELECT inputs, created_at AS at, NULL AS reason FROM step_cache"
                " WHERE scope = ? AND step = ? AND inputs IS NOT NULL",
                [scope, step],
            )
            gone = tx.all(
                "SELECT inputs, dropped_at AS at, reason FROM step_cache_tombstones"
                " WHERE scope = ? AND step = ?",
                [scope, step],
            )
        from runner.cache.why import Candidate  # `runner cache why` only

        return [
            Candidate(
                inputs=json.loads(row["inputs"]),
                at=parse_db_time(row["at"]),
                invalidated_by=row["reason"],
            )
            for row in [*live, *gone]
        ]

    # Listing and removal ------------------------------------------------------------------

    def entries(self, namespace: str | None = None) -> list[EntryInfo]:
        """Every entry (or one namespace's), most recently used first."""
        where, params = ("WHERE namespace = ?", [namespace]) if namespace is not None else ("", [])
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT key, namespace, size, created_at, last_used_at, secret_refs"  # noqa: S608
                f" FROM step_cache {where} ORDER BY last_used_at DESC, key",
                params,
            )
        return [_info(r) for r in rows]

    def total_bytes(self) -> int:
        with self._db.transaction(write=False) as tx:
            return int(tx.scalar("SELECT COALESCE(SUM(size), 0) AS total FROM step_cache") or 0)

    def clear(self, namespace: str | None = None) -> int:
        """Remove every entry (or one namespace's); returns how many."""

        def work(tx: Transaction) -> int:
            tx.lock(_WRITE_LOCK)
            if namespace is None:
                return tx.execute("DELETE FROM step_cache")
            return tx.execute("DELETE FROM step_cache WHERE namespace = ?", [namespace])

        removed: int = self._db.run(work)
        return removed

    def invalidate_secret(
        self, secret_id: str, version: int | None = None, *, reason: str | None = None
    ) -> int:
        """Remove the entries whose keys used ``secret_id`` (at ``version``, or any).

        ``reason`` (``"secret set"``, ``"secret rm"``): leave a tombstone of each.
        """
        condition = "" if version is None else " AND version = ?"
        return self._invalidate(secret_id, condition, version, reason)

    def invalidate_secret_except(
        self, secret_id: str, current: int, *, reason: str | None = None
    ) -> int:
        """Remove the entries whose keys used any version of ``secret_id`` but ``current``."""
        return self._invalidate(secret_id, " AND version <> ?", current, reason)

    def _invalidate(
        self, secret_id: str, condition: str, version: int | None, reason: str | None
    ) -> int:
        params: list[Any] = [secret_id] if version is None else [secret_id, version]
        doomed = f"SELECT key FROM step_cache_secrets WHERE secret_id = ?{condition}"  # noqa: S608

        def work(tx: Transaction) -> int:
            tx.lock(_WRITE_LOCK)
            if reason is not None:
                self._bury(tx, doomed, params, reason)
            return tx.execute(
                f"DELETE FROM step_cache WHERE key IN ({doomed})",  # noqa: S608
                params,
            )

        removed: int = self._db.run(work)
        return removed

    def _bury(self, tx: Transaction, doomed: str, params: list[Any], reason: str) -> None:
        """A tombstone per entry about to go: its named inputs, why, and when."""
        tx.execute(
            "INSERT INTO step_cache_tombstones (key, scope, step, inputs, reason, dropped_at)"  # noqa: S608
            " SELECT key, scope, step, inputs, ?, ? FROM step_cache"
            f" WHERE inputs IS NOT NULL AND key IN ({doomed})"
            " ON CONFLICT (key) DO UPDATE SET scope = excluded.scope, step = excluded.step,"
            " inputs = excluded.inputs, reason = excluded.reason,"
            " dropped_at = excluded.dropped_at",
            [reason, self._now(), *params],
        )
        # Bounded: the oldest go first.
        tx.execute(
            "DELETE FROM step_cache_tombstones WHERE dropped_at <"
            " (SELECT dropped_at FROM step_cache_tombstones"
            "  ORDER BY dropped_at DESC LIMIT 1 OFFSET ?)",
            [TOMBSTONES_KEPT],
        )


def open_cache(settings: Settings, store: SqlSecretStore) -> SqlStepCache:
    """The execution cache of these settings, in the secret store's database."""
    return SqlStepCache(store.db, max_bytes=settings.cache_max_mb * MIB, check_secrets=True)


def invalidate_after_secret_change(
    store: SqlSecretStore,
    meta_before: SecretMeta | None,
    actor: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Drop the entries that used the secret as it was before a set or rm; audit the count.

    ``meta_before`` is what ``store.get(name, namespace, scope=scope)`` returned
    before the change (``None`` when the set created the secret: nothing to drop).
    A removed secret loses the entries of every version; an updated one keeps
    only those of its current version.
    """
    if meta_before is None:
        return 0
    cache = SqlStepCache(store.db, max_bytes=1)  # never puts, so never evicts
    now = store.get(meta_before.name, meta_before.namespace, scope=meta_before.scope)
    if now is None or now.id != meta_before.id:
        count = cache.invalidate_secret(meta_before.id, reason="secret rm")
        detail = "secret removed"
    else:
        count = cache.invalidate_secret_except(meta_before.id, now.version, reason="secret set")
        detail = f"secret updated to v{now.version}"
    if count == 0:
        return 0  # nothing was cached with it: no event, so the log stays readable
    event = secret_event("cache_invalidated", meta_before, actor=actor, at=clock.now())
    store.record(replace(event, count=count, detail=detail))
    return count
