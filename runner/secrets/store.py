"""The secret store: layered by namespace, encrypted, versioned, audited.

``SecretStore`` is the seam; ``SqlSecretStore`` keeps everything in SQLite or
PostgreSQL through ``runner.db``, and ``runner.testing.FakeSecretStore``
keeps it in memory with the same behaviour.

Rules every implementation keeps:

* A write makes a new version (1, 2, …); only the current version resolves,
  and a superseded or removed version's ciphertext is destroyed at once while
  its metadata stays.
* A secret's id is never reused: removing and setting a name again makes a
  new secret. Caches key on ``(id, version)``.
* ``resolve`` looks up metadata only (namespaced first, then global);
  ``reveal`` decrypts and writes one ``accessed`` audit event.
* The audit log is append-only and never holds a value.
"""

from __future__ import annotations

import builtins
import secrets as _random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from runner.clock import SYSTEM_CLOCK, Clock
from runner.db import Database, Transaction, db_time
from runner.errors import (
    BusyError,
    DecryptionError,
    IntegrityError,
    MasterKeyError,
    SecretError,
    SecretNotFoundError,
    StaleSecretError,
)
from runner.namespaces import GLOBAL, Namespace, parse_namespace, visible_namespaces
from runner.records import Frozen
from runner.secrets import schema
from runner.secrets.crypto import (
    Binding,
    KeyNotLoaded,
    Keyring,
    MasterKey,
    Sealed,
    Undecryptable,
    key_check,
    key_matches,
    rewrap,
    seal,
    unseal,
)
from runner.secrets.delivery import DEFAULT_DELIVERY, BrokeredUse, Delivery
from runner.secrets.models import AUDIT_EVENTS, AuditEvent, SecretMeta
from runner.secrets.names import (
    DEFAULT_SCOPE,
    check_name,
    check_scope,
    check_value,
    normalize_name,
)
from runner.secrets.value import Secret

T = TypeVar("T")


# Shared by every implementation -----------------------------------------------


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class SecretKey(Frozen):
    """A validated (name, namespace, scope)."""

    name: str
    namespace: str
    scope: str

    def __init__(self, name: str, namespace: str, scope: str) -> None:
        self._fill(name, namespace, scope)

    def describe(self) -> str:
        scope = "" if self.scope == DEFAULT_SCOPE else f" (scope {self.scope})"
        return f"{self.name} in {self.namespace}{scope}"


def secret_key(name: str, namespace: str | Namespace, scope: str) -> SecretKey:
    return SecretKey(check_name(name), str(parse_namespace(namespace)), check_scope(scope))


@dataclass(init=False, repr=False, eq=False)
class Access(Frozen):
    """One ``reveal``: which version, who asks, and for which job and step."""

    secret_id: str
    version: int
    actor: str
    job: str | None = None
    step: int | None = None

    def __init__(
        self,
        *,
        secret_id: str,
        version: int,
        actor: str,
        job: str | None = None,
        step: int | None = None,
    ) -> None:
        self._fill(secret_id, version, actor, job, step)


@dataclass(init=False, repr=False, eq=False)
class Listing(Frozen):
    """What ``list`` was asked for, checked: the owners and scope to keep, whose view."""

    owners: tuple[str, ...] | None
    scope: str | None
    viewer: Namespace | None

    def __init__(
        self, owners: tuple[str, ...] | None, scope: str | None, viewer: Namespace | None
    ) -> None:
        self._fill(owners, scope, viewer)

    def pick(self, rows: Sequence[SecretMeta]) -> builtins.list[SecretMeta]:
        """Of the matching rows, sorted by name, namespace and scope, those to answer."""
        if self.viewer is None:
            return builtins.list(rows)
        # A job sees its own namespace's secret where one hides a global of the same name.
        own = {(m.name, m.scope) for m in rows if m.namespace == str(self.viewer)}
        picked = [
            m
            for m in rows
            if m.namespace == str(self.viewer)
            or (m.namespace == str(GLOBAL) and (m.name, m.scope) not in own)
        ]
        return sorted(picked, key=lambda m: (m.name, m.scope))


def listing(
    namespace: str | Namespace | None, scope: str | None, visible_from: str | Namespace | None
) -> Listing:
    if namespace is not None and visible_from is not None:
        raise ValueError("give namespace or visible_from, not both")
    chosen = check_scope(scope) if scope is not None else None
    viewer = parse_namespace(visible_from) if visible_from is not None else None
    owners: tuple[str, ...] | None = None
    if namespace is not None:
        owners = (str(parse_namespace(namespace)),)
    elif viewer is not None:
        owners = tuple(str(ns) for ns in visible_namespaces(viewer))
    return Listing(owners, chosen, viewer)


def new_secret_id() -> str:
    return f"sec_{_random.token_hex(12)}"


def not_found(key: SecretKey) -> SecretNotFoundError:
    return SecretNotFoundError(
        f"no secret {key.describe()}",
        hint=f"see `runner secret list --namespace {key.namespace}`",
    )


def unknown_id(secret_id: str) -> SecretNotFoundError:
    return SecretNotFoundError(
        f"no secret with id {secret_id}",
        hint="resolve the secret by name again; it may have been removed",
    )


def stale(meta: SecretMeta, *, asked: int, removed: bool) -> StaleSecretError:
    if removed:
        return StaleSecretError(
            f"secret {meta.describe()} was removed after it was resolved",
            hint="set it again or drop it from the step's env, then re-run",
        )
    return StaleSecretError(
        f"secret {meta.describe()} changed after it was resolved "
        f"(v{asked} asked for, v{meta.version} is current)",
        hint="re-run to use the current value",
    )


def undecryptable(meta: SecretMeta | SecretKey, version: int) -> DecryptionError:
    return DecryptionError(
        f"cannot decrypt secret {meta.describe()} v{version}: the master key does not match "
        "or the stored row was altered",
        hint="load the master key this store was encrypted with, or set the secret again",
    )


def key_not_loaded(key_id: str, source: object) -> MasterKeyError:
    where = f" in {source}" if source else ""
    return MasterKeyError(
        f"the secret store holds values encrypted under master key {key_id}, "
        f"which is not loaded{where}",
        hint="add that key to the key file (restore it from your backup) and try again",
    )


def accessed(meta: SecretMeta, access: Access, at: datetime) -> AuditEvent:
    # A brokered secret's access says so: its job used it through the proxy, for those hosts.
    broker = meta.delivery.broker
    return secret_event(
        "accessed",
        meta,
        actor=access.actor,
        at=at,
        job=access.job,
        step=access.step,
        detail=broker.describe() if broker is not None else None,
    )


def secret_event(
    event: str,
    meta: SecretMeta,
    *,
    actor: str,
    at: datetime,
    job: str | None = None,
    step: int | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """An audit event about one version of one secret."""
    return AuditEvent(
        event=event,
        at=at,
        actor=actor,
        secret_id=meta.id,
        name=meta.name,
        namespace=meta.namespace,
        scope=meta.scope,
        version=meta.version,
        job=job,
        step=step,
        detail=detail,
    )


def kept_delivery(asked: Delivery | None, before: SecretMeta | None) -> Delivery:
    """The delivery a write stores: the one asked for, else the current one, else env."""
    if asked is not None:
        return asked
    return before.delivery if before is not None else DEFAULT_DELIVERY


def written(meta: SecretMeta, before: SecretMeta | None, *, actor: str, at: datetime) -> AuditEvent:
    """The ``created``/``updated`` event of a write; its detail says a changed delivery."""
    event = "created" if before is None else "updated"
    detail = meta.delivery.change(before.delivery if before else None)
    return secret_event(event, meta, actor=actor, at=at, detail=detail)


# The seam ---------------------------------------------------------------------


class SecretStore(ABC):
    """What the CLI, the env resolver and the coordinator need from a secret store.

    The public methods check their arguments here, once, for every
    implementation; an implementation keeps and finds rows through the
    underscored methods, which take checked values.
    """

    def set(
        self,
        name: str,
        namespace: str | Namespace,
        value: Secret,
        *,
        scope: str = DEFAULT_SCOPE,
        actor: str,
        delivery: Delivery | None = None,
    ) -> tuple[SecretMeta, bool]:
        """Create or update; returns the new version's metadata and whether it was created.

        ``delivery`` is the new version's (env, file, brokered); None keeps the
        current one (env for a new secret), so a new value never changes it by
        accident. Changing only it is a new version too, and its audit event
        says what it became.
        """
        key = secret_key(name, namespace, scope)
        check_value(value)
        return self._put(key, value, actor, delivery)

    def remove(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE, actor: str
    ) -> SecretMeta:
        return self._delete(secret_key(name, namespace, scope), actor)

    def get(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE
    ) -> SecretMeta | None:
        """The secret owned by exactly ``namespace``, if any."""
        return self._find(secret_key(name, namespace, scope))

    def list(
        self,
        *,
        namespace: str | Namespace | None = None,
        scope: str | None = None,
        visible_from: str | Namespace | None = None,
    ) -> builtins.list[SecretMeta]:
        """Every live secret; or one namespace's; or what a job in ``visible_from`` resolves."""
        asked = listing(namespace, scope, visible_from)
        return asked.pick(self._select(asked))

    def resolve(
        self, name: str, from_namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE
    ) -> SecretMeta | None:
        """Metadata of what ``name`` resolves to for a job in ``from_namespace``. No audit.

        ``name`` is a step's env name: ``github_token`` finds the secret GITHUB_TOKEN.
        """
        name = normalize_name(name)
        keys = [secret_key(name, owner, scope) for owner in visible_namespaces(from_namespace)]
        return self._find_first(keys)

    def _find_first(self, keys: Sequence[SecretKey]) -> SecretMeta | None:
        """The first live one of ``keys`` (one name and scope, owners by precedence)."""
        for key in keys:
            found = self._find(key)
            if found is not None:
                return found
        return None

    def reveal(
        self,
        secret: SecretMeta | str,
        *,
        version: int,
        actor: str,
        run_id: str | None = None,
        step: int | None = None,
    ) -> Secret:
        """Decrypt ``version`` (which must be current) and record one ``accessed`` event."""
        secret_id = secret.id if isinstance(secret, SecretMeta) else secret
        return self._open(
            Access(secret_id=secret_id, version=version, actor=actor, job=run_id, step=step)
        )

    def log(
        self, name: str | None = None, *, namespace: str | Namespace | None = None
    ) -> builtins.list[AuditEvent]:
        """The audit log, oldest first: all of it, or one name's, or one namespace's."""
        return self._events(
            check_name(name) if name is not None else None,
            str(parse_namespace(namespace)) if namespace is not None else None,
        )

    def record(self, event: AuditEvent) -> None:
        """Append an event written by another component (``cache_invalidated``, ``denied``)."""
        check_event(event)
        self._append(event)

    def record_brokered(
        self,
        uses: Sequence[BrokeredUse],
        *,
        visible_from: str | Namespace,
        actor: str,
        job: str,
    ) -> builtins.list[AuditEvent]:
        """One ``brokered`` event per secret a job's proxy used, written at the job's end.

        Only a secret a job in ``visible_from`` resolves is recorded (an
        executor reports these; it cannot write into another namespace's log),
        at the version the job used when that is still on record. Returns the
        events written.
        """
        if not uses:
            return []
        metas = {meta.id: meta for meta in self.list(visible_from=visible_from)}
        events: builtins.list[AuditEvent] = []
        for use in uses:
            meta = metas.get(use.secret_id)
            if meta is None:
                continue  # removed since, or never the job's to use
            version = use.version if 0 < use.version <= meta.version else meta.version
            event = secret_event(
                "brokered",
                replace(meta, version=version),
                actor=actor,
                at=datetime.now(UTC),
                job=job,
                detail=use.describe(),
            )
            events.append(replace(event, count=use.count))
        for event in events:
            self._append(event)
        return events

    @abstractmethod
    def _put(
        self, key: SecretKey, value: Secret, actor: str, delivery: Delivery | None
    ) -> tuple[SecretMeta, bool]:
        """Write a new version (version 1 of a new secret when none is live)."""

    @abstractmethod
    def _delete(self, key: SecretKey, actor: str) -> SecretMeta:
        """Remove the live secret, destroying its values; ``not_found`` when there is none."""

    @abstractmethod
    def _find(self, key: SecretKey) -> SecretMeta | None: ...

    @abstractmethod
    def _select(self, asked: Listing) -> builtins.list[SecretMeta]:
        """Live secrets of ``asked.owners`` and ``asked.scope``, by name, namespace, scope."""

    @abstractmethod
    def _open(self, access: Access) -> Secret:
        """The value of a current version, with its ``accessed`` event written."""

    @abstractmethod
    def _events(self, name: str | None, namespace: str | None) -> builtins.list[AuditEvent]:
        """Audit events, oldest first; None matches every name or namespace."""

    @abstractmethod
    def _append(self, event: AuditEvent) -> None:
        """Append a checked event."""


def check_event(event: AuditEvent) -> None:
    if event.event not in AUDIT_EVENTS:
        raise ValueError(f"unknown audit event {event.event!r}")


@dataclass(init=False, repr=False, eq=False)
class RotationReport(Frozen):
    """What a master key rotation did."""

    new_key_id: str
    retired_key_ids: tuple[str, ...]
    rewrapped: int

    def __init__(self, new_key_id: str, retired_key_ids: tuple[str, ...], rewrapped: int) -> None:
        self._fill(new_key_id, retired_key_ids, rewrapped)


# The SQL implementation ---------------------------------------------------------

_KEYS_LOCK = "runner:master-keys"

_META_COLUMNS = """
    s.id, s.name, s.namespace, s.scope, s.current_version AS version, s.created_at, s.created_by,
    s.updated_at, s.updated_by, s.deleted_at, s.delivery,
    CASE WHEN s.namespace <> 'global' AND EXISTS (
        SELECT 1 FROM secrets g
        WHERE g.namespace = 'global' AND g.name = s.name AND g.scope = s.scope
          AND g.deleted_at IS NULL
    ) THEN 1 ELSE 0 END AS overrides_global
"""


# The audit log's columns under the names of ``AuditEvent.to_json``.
_EVENT_COLUMNS = """
    at, event, actor, secret_id, name, namespace, scope, version, job, step,
    item_count AS count, detail
"""


def _secret_lock(key: SecretKey) -> str:
    return f"runner:secret:{key.namespace}:{key.scope}:{key.name}"


class SqlSecretStore(SecretStore):
    """The secret store on a ``runner.db.Database``; safe for concurrent processes.

    Opening it applies the schema and refuses a store whose rows name a master
    key the keyring lacks.
    """

    def __init__(self, db: Database, keyring: Keyring, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self.keyring = keyring
        self._clock = clock
        db.migrate(schema.MIGRATIONS)
        self.check_keys()

    @property
    def db(self) -> Database:
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqlSecretStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> str:
        return db_time(self._clock.now())

    def _run(self, work: Callable[[Transaction], T]) -> T:
        return self._db.run(work, retry_on=(BusyError, IntegrityError))

    # Keys -----------------------------------------------------------------------

    def key_ids_in_use(self) -> builtins.set[str]:
        with self._db.transaction(write=False) as tx:
            rows = tx.all("SELECT DISTINCT key_id FROM secret_versions WHERE key_id IS NOT NULL")
        return {str(r["key_id"]) for r in rows}

    def check_keys(self) -> None:
        """Refuse to work with a key the store does not know as it was.

        A stored value naming a master key that is not loaded, or a loaded key
        whose id the store knows but whose bytes differ (a wrong or corrupt key
        file), stops the store before anything is written under it.
        """
        missing = sorted(self.key_ids_in_use() - set(self.keyring.ids))
        if missing:
            raise key_not_loaded(", ".join(missing), self.keyring.source)

        def work(tx: Transaction) -> None:
            for master in self.keyring:
                row = tx.one(
                    "SELECT check_value FROM master_keys WHERE key_id = ?", [master.key_id]
                )
                if row is None:
                    continue
                check = row["check_value"]
                if check is None:
                    tx.execute(
                        "UPDATE master_keys SET check_value = ? WHERE key_id = ?"
                        " AND check_value IS NULL",
                        [key_check(master), master.key_id],
                    )
                elif not key_matches(master, bytes(check)):
                    raise self._wrong_key(tx, master)

        self._run(work)

    def _wrong_key(self, tx: Transaction, master: MasterKey) -> SecretError:
        """The error for a key file whose key has the right id but other bytes."""
        row = tx.one(
            "SELECT s.id, s.name, s.namespace, s.scope, v.version FROM secret_versions v"
            " JOIN secrets s ON s.id = v.secret_id WHERE v.key_id = ?"
            " ORDER BY s.name, s.namespace LIMIT 1",
            [master.key_id],
        )
        where = self.keyring.source or "the key file"
        if row is None:
            return MasterKeyError(
                f"master key {master.key_id} in {where} is not the key this store knows",
                hint="restore the key file from your backup; nothing was changed",
            )
        key = SecretKey(str(row["name"]), str(row["namespace"]), str(row["scope"]))
        return DecryptionError(
            f"cannot decrypt secret {key.describe()} v{row['version']}: master key "
            f"{master.key_id} in {where} is not the key the store was encrypted with",
            hint="restore the key file from your backup; nothing was changed",
        )

    def _wrapping_key(self, tx: Transaction) -> MasterKey:
        primary = self.keyring.primary
        tx.lock(_KEYS_LOCK, shared=True)
        row = tx.one("SELECT retired_at FROM master_keys WHERE key_id = ?", [primary.key_id])
        if row is None:
            tx.execute(
                "INSERT INTO master_keys (key_id, added_at, check_value) VALUES (?, ?, ?)"
                " ON CONFLICT (key_id) DO NOTHING",
                [primary.key_id, self._now(), key_check(primary)],
            )
        elif row["retired_at"] is not None:
            raise MasterKeyError(
                f"master key {primary.key_id} was retired by `runner keys rotate`",
                hint="reload the current key file (restart this process) and try again",
            )
        return primary

    def rotate_keys(self, keyring: Keyring, *, actor: str) -> RotationReport:
        """Re-wrap every live data key under ``keyring.primary`` and retire the other keys.

        ``keyring`` must hold the new primary and every key in use. Values are
        not re-encrypted. Afterwards this store uses ``keyring``.
        """
        new = keyring.primary

        def work(tx: Transaction) -> RotationReport:
            tx.lock(_KEYS_LOCK)
            rows = tx.all(
                "SELECT v.secret_id, v.version, v.key_id, v.wrapped_key, v.nonce, v.ciphertext,"
                " s.name, s.namespace, s.scope"
                " FROM secret_versions v JOIN secrets s ON s.id = v.secret_id"
                " WHERE v.key_id IS NOT NULL AND v.key_id <> ?",
                [new.key_id],
            )
            for row in rows:
                binding = Binding(
                    row["secret_id"], row["namespace"], row["scope"], row["name"], row["version"]
                )
                sealed = Sealed(row["key_id"], row["wrapped_key"], row["nonce"], row["ciphertext"])
                try:
                    fresh = rewrap(keyring, sealed, binding, new)
                except KeyNotLoaded as exc:
                    raise key_not_loaded(exc.key_id, keyring.source) from None
                except Undecryptable:
                    where = SecretKey(row["name"], row["namespace"], row["scope"])
                    raise undecryptable(where, row["version"]) from None
                tx.execute(
                    "UPDATE secret_versions SET key_id = ?, wrapped_key = ?"
                    " WHERE secret_id = ? AND version = ?",
                    [fresh.key_id, fresh.wrapped_key, row["secret_id"], row["version"]],
                )
            now = self._now()
            for key in keyring:
                tx.execute(
                    "INSERT INTO master_keys (key_id, added_at, check_value) VALUES (?, ?, ?)"
                    " ON CONFLICT (key_id) DO NOTHING",
                    [key.key_id, now, key_check(key)],
                )
            retiring = [
                str(r["key_id"])
                for r in tx.all(
                    "SELECT key_id FROM master_keys WHERE key_id <> ? AND retired_at IS NULL",
                    [new.key_id],
                )
            ]
            tx.execute(
                "UPDATE master_keys SET retired_at = ? WHERE key_id <> ? AND retired_at IS NULL",
                [now, new.key_id],
            )
            left = tx.scalar(
                "SELECT COUNT(*) AS n FROM secret_versions"
                " WHERE key_id IS NOT NULL AND key_id <> ?",
                [new.key_id],
            )
            if left:
                raise MasterKeyError(
                    f"{left} values still use an old master key after re-wrapping",
                    hint="run `runner keys rotate` again",
                )
            old_ids = sorted({*retiring, *(k.key_id for k in keyring if k is not new)})
            detail = f"new primary key {new.key_id}"
            if old_ids:
                detail += f"; retired {', '.join(old_ids)}"
            self._audit(
                tx,
                AuditEvent(
                    event="key_rotated",
                    actor=actor,
                    at=self._clock.now(),
                    count=len(rows),
                    detail=detail,
                ),
            )
            return RotationReport(new.key_id, tuple(old_ids), len(rows))

        report = self._run(work)
        self.keyring = keyring
        return report

    # Secrets ----------------------------------------------------------------------

    def _live_row(self, tx: Transaction, key: SecretKey) -> dict[str, Any] | None:
        return tx.one(
            f"SELECT {_META_COLUMNS} FROM secrets s"  # noqa: S608
            " WHERE s.name = ? AND s.namespace = ? AND s.scope = ? AND s.deleted_at IS NULL",
            [key.name, key.namespace, key.scope],
        )

    def _audit(self, tx: Transaction, event: AuditEvent) -> None:
        tx.execute(
            "INSERT INTO secret_audit (at, event, actor, secret_id, name, namespace, scope,"
            " version, job, step, item_count, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                db_time(event.at),
                event.event,
                event.actor,
                event.secret_id,
                event.name,
                event.namespace,
                event.scope,
                event.version,
                event.job,
                event.step,
                event.count,
                event.detail,
            ],
        )

    def _destroy_versions(self, tx: Transaction, secret_id: str, below: int, now: str) -> None:
        tx.execute(
            "UPDATE secret_versions SET key_id = NULL, wrapped_key = NULL, nonce = NULL,"
            " ciphertext = NULL, destroyed_at = ?"
            " WHERE secret_id = ? AND version < ? AND destroyed_at IS NULL",
            [now, secret_id, below],
        )

    def _put(
        self, key: SecretKey, value: Secret, actor: str, delivery: Delivery | None
    ) -> tuple[SecretMeta, bool]:
        def work(tx: Transaction) -> tuple[SecretMeta, bool]:
            master = self._wrapping_key(tx)
            tx.lock(_secret_lock(key))
            moment = self._clock.now()
            now = db_time(moment)
            row = self._live_row(tx, key)
            before = None if row is None else SecretMeta.from_json(row)
            stored = kept_delivery(delivery, before).stored()
            if row is None:
                secret_id = new_secret_id()
                version = 1
                tx.execute(
                    "INSERT INTO secrets (id, name, namespace, scope, current_version,"
                    " created_at, created_by, updated_at, updated_by, delivery)"
                    " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                    [secret_id, key.name, key.namespace, key.scope, now, actor, now, actor, stored],
                )
            else:
                secret_id = row["id"]
                version = int(row["version"]) + 1
                tx.execute(
                    "UPDATE secrets SET current_version = ?, updated_at = ?, updated_by = ?,"
                    " delivery = ? WHERE id = ?",
                    [version, now, actor, stored, secret_id],
                )
                self._destroy_versions(tx, secret_id, version, now)
            binding = Binding(secret_id, key.namespace, key.scope, key.name, version)
            sealed = seal(self.keyring, value, binding, master=master)
            tx.execute(
                "INSERT INTO secret_versions (secret_id, version, created_at, created_by,"
                " key_id, wrapped_key, nonce, ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    secret_id,
                    version,
                    now,
                    actor,
                    sealed.key_id,
                    sealed.wrapped_key,
                    sealed.nonce,
                    sealed.ciphertext,
                ],
            )
            fresh = self._live_row(tx, key)
            assert fresh is not None
            meta = SecretMeta.from_json(fresh)
            self._audit(tx, written(meta, before, actor=actor, at=moment))
            return meta, before is None

        return self._run(work)

    def _delete(self, key: SecretKey, actor: str) -> SecretMeta:
        def work(tx: Transaction) -> SecretMeta:
            tx.lock(_secret_lock(key))
            row = self._live_row(tx, key)
            if row is None:
                raise not_found(key)
            moment = self._clock.now()
            now = db_time(moment)
            meta = SecretMeta.from_json(row)
            tx.execute(
                "UPDATE secrets SET deleted_at = ?, deleted_by = ? WHERE id = ?",
                [now, actor, meta.id],
            )
            self._destroy_versions(tx, meta.id, meta.version + 1, now)
            self._audit(tx, secret_event("deleted", meta, actor=actor, at=moment))
            return meta

        return self._run(work)

    def _find(self, key: SecretKey) -> SecretMeta | None:
        with self._db.transaction(write=False) as tx:
            row = self._live_row(tx, key)
        return None if row is None else SecretMeta.from_json(row)

    def _find_first(self, keys: Sequence[SecretKey]) -> SecretMeta | None:
        # The whole chain in one query: a claim resolves each of its job's secrets again,
        # and one round trip per namespace tried was a sixth of a claim (issue 21).
        if not keys:
            return None
        owners = [key.namespace for key in keys]
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT {_META_COLUMNS} FROM secrets s"  # noqa: S608
                " WHERE s.name = ? AND s.scope = ? AND s.deleted_at IS NULL"
                f" AND s.namespace IN ({', '.join('?' for _ in owners)})",
                [keys[0].name, keys[0].scope, *owners],
            )
        found = {row["namespace"]: row for row in rows}
        row = next((found[owner] for owner in owners if owner in found), None)
        return None if row is None else SecretMeta.from_json(row)

    def _select(self, asked: Listing) -> builtins.list[SecretMeta]:
        where = ["s.deleted_at IS NULL"]
        params: builtins.list[Any] = []
        if asked.scope is not None:
            where.append("s.scope = ?")
            params.append(asked.scope)
        if asked.owners is not None:
            where.append(f"s.namespace IN ({', '.join('?' for _ in asked.owners)})")
            params.extend(asked.owners)
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT {_META_COLUMNS} FROM secrets s WHERE {' AND '.join(where)}"  # noqa: S608
                " ORDER BY s.name, s.namespace, s.scope",
                params,
            )
        return [SecretMeta.from_json(r) for r in rows]

    def _open(self, access: Access) -> Secret:
        version = access.version

        def work(tx: Transaction) -> Secret:
            row = tx.one(
                f"SELECT {_META_COLUMNS} FROM secrets s WHERE s.id = ?",  # noqa: S608
                [access.secret_id],
            )
            if row is None:
                raise unknown_id(access.secret_id)
            meta = SecretMeta.from_json(row)
            key = SecretKey(meta.name, meta.namespace, meta.scope)
            tx.lock(_secret_lock(key), shared=True)
            if row["deleted_at"] is not None or meta.version != version:
                raise stale(meta, asked=version, removed=row["deleted_at"] is not None)
            stored = tx.one(
                "SELECT key_id, wrapped_key, nonce, ciphertext FROM secret_versions"
                " WHERE secret_id = ? AND version = ? AND destroyed_at IS NULL",
                [meta.id, version],
            )
            if stored is None:
                raise undecryptable(meta, version)
            sealed = Sealed(
                stored["key_id"], stored["wrapped_key"], stored["nonce"], stored["ciphertext"]
            )
            binding = Binding(meta.id, meta.namespace, meta.scope, meta.name, version)
            try:
                value = unseal(self.keyring, sealed, binding)
            except KeyNotLoaded as exc:
                raise key_not_loaded(exc.key_id, self.keyring.source) from None
            except Undecryptable:
                raise undecryptable(meta, version) from None
            self._audit(tx, accessed(meta, access, self._clock.now()))
            return value

        return self._run(work)

    def _events(self, name: str | None, namespace: str | None) -> builtins.list[AuditEvent]:
        where: builtins.list[str] = []
        params: builtins.list[str] = []
        for column, value in (("name", name), ("namespace", namespace)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT {_EVENT_COLUMNS} FROM secret_audit{clause} ORDER BY id",  # noqa: S608
                params,
            )
        return [AuditEvent.from_json(r) for r in rows]

    def _append(self, event: AuditEvent) -> None:
        self._run(lambda tx: self._audit(tx, event))
