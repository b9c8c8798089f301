"""The secret store: layered by namespace, encrypted, versioned, audited.

``SecretStore`` is the seam; ``SqlSecretStore`` keeps everything in SQLite or
PostgreSQL through ``runner.db``, and ``runner.secrets.fake.FakeSecretStore``
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from runner.db import (
    BusyError,
    Database,
    IntegrityError,
    Transaction,
    db_time,
    parse_db_time,
    utcnow,
)
from runner.errors import DecryptionError, MasterKeyError, SecretError, SecretNotFoundError
from runner.namespaces import GLOBAL, Namespace, check_principal_name, parse_namespace
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
from runner.secrets.models import (
    AUDIT_EVENTS,
    AuditEvent,
    OrgRecord,
    SecretMeta,
    StaleSecretError,
    UserRecord,
)
from runner.secrets.names import DEFAULT_SCOPE, check_scope, check_value, normalize_name
from runner.secrets.value import Secret

Clock = Callable[[], datetime]


class SecretStore(Protocol):
    """What the CLI, the env resolver and the coordinator need from a secret store."""

    def set(
        self,
        name: str,
        namespace: str | Namespace,
        value: Secret,
        *,
        scope: str = DEFAULT_SCOPE,
        actor: str,
    ) -> tuple[SecretMeta, bool]:
        """Create or update; returns the new version's metadata and whether it was created."""
        ...

    def remove(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE, actor: str
    ) -> SecretMeta: ...

    def get(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE
    ) -> SecretMeta | None:
        """The secret owned by exactly ``namespace``, if any."""
        ...

    def list(
        self,
        *,
        namespace: str | Namespace | None = None,
        scope: str | None = None,
        visible_from: str | Namespace | None = None,
    ) -> builtins.list[SecretMeta]:
        """Every live secret; or one namespace's; or what a job in ``visible_from`` resolves."""
        ...

    def resolve(
        self, name: str, from_namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE
    ) -> SecretMeta | None:
        """Metadata of what ``name`` resolves to for a job in ``from_namespace``. No audit."""
        ...

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
        ...

    def log(
        self, name: str | None = None, *, namespace: str | Namespace | None = None
    ) -> builtins.list[AuditEvent]: ...

    def record(self, event: AuditEvent) -> None:
        """Append an event written by another component (``cache_invalidated``, ``denied``)."""
        ...

    def add_user(self, name: str, *, admin: bool = False) -> bool:
        """True when created; an existing user is kept (and made admin if asked)."""
        ...

    def add_org(self, name: str) -> bool: ...

    def add_member(self, org: str, user: str) -> bool:
        """True when added; creates a missing org or user record."""
        ...

    def remove_member(self, org: str, user: str) -> bool: ...

    def is_admin(self, user: str) -> bool: ...

    def get_user(self, name: str) -> UserRecord | None: ...

    def get_org(self, name: str) -> OrgRecord | None: ...

    def users(self) -> builtins.list[UserRecord]: ...

    def orgs(self) -> builtins.list[OrgRecord]: ...

    def org_members(self, org: str) -> builtins.list[str]: ...

    def orgs_of(self, user: str) -> builtins.list[str]: ...


# Shared by every implementation -----------------------------------------------


@dataclass(frozen=True)
class SecretKey:
    """A validated (name, namespace, scope)."""

    name: str
    namespace: str
    scope: str

    def describe(self) -> str:
        scope = "" if self.scope == DEFAULT_SCOPE else f" (scope {self.scope})"
        return f"{self.name} in {self.namespace}{scope}"


def secret_key(name: str, namespace: str | Namespace, scope: str) -> SecretKey:
    return SecretKey(normalize_name(name), str(parse_namespace(namespace)), check_scope(scope))


def new_secret_id() -> str:
    return f"sec_{_random.token_hex(12)}"


def not_found(key: SecretKey) -> SecretNotFoundError:
    return SecretNotFoundError(
        f"no secret {key.describe()}",
        hint=f"see `runner secret list --namespace {key.namespace}`",
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


def check_event(event: AuditEvent) -> None:
    if event.event not in AUDIT_EVENTS:
        raise ValueError(f"unknown audit event {event.event!r}")


def pick_visible(rows: Sequence[SecretMeta], visible_from: Namespace) -> builtins.list[SecretMeta]:
    """Of the rows owned by ``visible_from`` and global, those a job there resolves."""
    own = {(m.name, m.scope) for m in rows if m.namespace == str(visible_from)}
    picked = [
        m
        for m in rows
        if m.namespace == str(visible_from)
        or (m.namespace == str(GLOBAL) and (m.name, m.scope) not in own)
    ]
    return sorted(picked, key=lambda m: (m.name, m.scope))


@dataclass(frozen=True)
class RotationReport:
    new_key_id: str
    retired_key_ids: tuple[str, ...]
    rewrapped: int


# The SQL implementation ---------------------------------------------------------

_KEYS_LOCK = "runner:master-keys"

_META_COLUMNS = """
    s.id, s.name, s.namespace, s.scope, s.current_version, s.created_at, s.created_by,
    s.updated_at, s.updated_by, s.deleted_at,
    CASE WHEN s.namespace <> 'global' AND EXISTS (
        SELECT 1 FROM secrets g
        WHERE g.namespace = 'global' AND g.name = s.name AND g.scope = s.scope
          AND g.deleted_at IS NULL
    ) THEN 1 ELSE 0 END AS overrides_global
"""


def _meta(row: dict[str, Any]) -> SecretMeta:
    return SecretMeta(
        id=row["id"],
        name=row["name"],
        namespace=row["namespace"],
        scope=row["scope"],
        version=int(row["current_version"]),
        created_at=parse_db_time(row["created_at"]),
        created_by=row["created_by"],
        updated_at=parse_db_time(row["updated_at"]),
        updated_by=row["updated_by"],
        overrides_global=bool(row["overrides_global"]),
    )


def _event(row: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        event=row["event"],
        at=parse_db_time(row["at"]),
        actor=row["actor"],
        secret_id=row["secret_id"],
        name=row["name"],
        namespace=row["namespace"],
        scope=row["scope"],
        version=row["version"],
        job=row["job"],
        step=row["step"],
        count=row["item_count"],
        detail=row["detail"],
    )


def _secret_lock(key: SecretKey) -> str:
    return f"runner:secret:{key.namespace}:{key.scope}:{key.name}"


class SqlSecretStore:
    """The secret store on a ``runner.db.Database``; safe for concurrent processes.

    Opening it applies the schema and refuses a store whose rows name a master
    key the keyring lacks.
    """

    def __init__(self, db: Database, keyring: Keyring, *, clock: Clock = utcnow) -> None:
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
        return db_time(self._clock())

    def _run(self, work: Callable[[Transaction], Any], *, write: bool = True) -> Any:
        return self._db.run(work, write=write, retry_on=(BusyError, IntegrityError))

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
                    at=self._clock(),
                    count=len(rows),
                    detail=detail,
                ),
            )
            return RotationReport(new.key_id, tuple(old_ids), len(rows))

        report: RotationReport = self._run(work)
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
        check_event(event)
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

    def set(
        self,
        name: str,
        namespace: str | Namespace,
        value: Secret,
        *,
        scope: str = DEFAULT_SCOPE,
        actor: str,
    ) -> tuple[SecretMeta, bool]:
        key = secret_key(name, namespace, scope)
        check_value(value)

        def work(tx: Transaction) -> tuple[SecretMeta, bool]:
            master = self._wrapping_key(tx)
            tx.lock(_secret_lock(key))
            moment = self._clock()
            now = db_time(moment)
            row = self._live_row(tx, key)
            created = row is None
            if row is None:
                secret_id = new_secret_id()
                version = 1
                tx.execute(
                    "INSERT INTO secrets (id, name, namespace, scope, current_version,"
                    " created_at, created_by, updated_at, updated_by)"
                    " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                    [secret_id, key.name, key.namespace, key.scope, now, actor, now, actor],
                )
            else:
                secret_id = row["id"]
                version = int(row["current_version"]) + 1
                tx.execute(
                    "UPDATE secrets SET current_version = ?, updated_at = ?, updated_by = ?"
                    " WHERE id = ?",
                    [version, now, actor, secret_id],
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
            self._audit(
                tx,
                AuditEvent(
                    event="created" if created else "updated",
                    at=moment,
                    actor=actor,
                    secret_id=secret_id,
                    name=key.name,
                    namespace=key.namespace,
                    scope=key.scope,
                    version=version,
                ),
            )
            fresh = self._live_row(tx, key)
            assert fresh is not None
            return _meta(fresh), created

        result: tuple[SecretMeta, bool] = self._run(work)
        return result

    def remove(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE, actor: str
    ) -> SecretMeta:
        key = secret_key(name, namespace, scope)

        def work(tx: Transaction) -> SecretMeta:
            tx.lock(_secret_lock(key))
            row = self._live_row(tx, key)
            if row is None:
                raise not_found(key)
            moment = self._clock()
            now = db_time(moment)
            meta = _meta(row)
            tx.execute(
                "UPDATE secrets SET deleted_at = ?, deleted_by = ? WHERE id = ?",
                [now, actor, meta.id],
            )
            self._destroy_versions(tx, meta.id, meta.version + 1, now)
            self._audit(
                tx,
                AuditEvent(
                    event="deleted",
                    at=moment,
                    actor=actor,
                    secret_id=meta.id,
                    name=meta.name,
                    namespace=meta.namespace,
                    scope=meta.scope,
                    version=meta.version,
                ),
            )
            return meta

        result: SecretMeta = self._run(work)
        return result

    def get(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE
    ) -> SecretMeta | None:
        key = secret_key(name, namespace, scope)
        with self._db.transaction(write=False) as tx:
            row = self._live_row(tx, key)
        return None if row is None else _meta(row)

    def list(
        self,
        *,
        namespace: str | Namespace | None = None,
        scope: str | None = None,
        visible_from: str | Namespace | None = None,
    ) -> builtins.list[SecretMeta]:
        if namespace is not None and visible_from is not None:
            raise ValueError("give namespace or visible_from, not both")
        where = ["s.deleted_at IS NULL"]
        params: builtins.list[Any] = []
        if scope is not None:
            where.append("s.scope = ?")
            params.append(check_scope(scope))
        viewer = parse_namespace(visible_from) if visible_from is not None else None
        if namespace is not None:
            where.append("s.namespace = ?")
            params.append(str(parse_namespace(namespace)))
        elif viewer is not None:
            where.append("s.namespace IN (?, ?)")
            params.extend([str(viewer), str(GLOBAL)])
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT {_META_COLUMNS} FROM secrets s WHERE {' AND '.join(where)}"  # noqa: S608
                " ORDER BY s.name, s.namespace, s.scope",
                params,
            )
        metas = [_meta(r) for r in rows]
        return pick_visible(metas, viewer) if viewer is not None else metas

    def resolve(
        self, name: str, from_namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE
    ) -> SecretMeta | None:
        viewer = parse_namespace(from_namespace)
        for owner in [viewer] if viewer.is_global else [viewer, GLOBAL]:
            found = self.get(name, owner, scope=scope)
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
        secret_id = secret.id if isinstance(secret, SecretMeta) else secret

        def work(tx: Transaction) -> Secret:
            row = tx.one(
                f"SELECT {_META_COLUMNS} FROM secrets s WHERE s.id = ?",  # noqa: S608
                [secret_id],
            )
            if row is None:
                raise SecretNotFoundError(
                    f"no secret with id {secret_id}",
                    hint="resolve the secret by name again; it may have been removed",
                )
            meta = _meta(row)
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
            self._audit(
                tx,
                AuditEvent(
                    event="accessed",
                    at=self._clock(),
                    actor=actor,
                    secret_id=meta.id,
                    name=meta.name,
                    namespace=meta.namespace,
                    scope=meta.scope,
                    version=version,
                    job=run_id,
                    step=step,
                ),
            )
            return value

        result: Secret = self._run(work)
        return result

    def log(
        self, name: str | None = None, *, namespace: str | Namespace | None = None
    ) -> builtins.list[AuditEvent]:
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if name is not None:
            where.append("name = ?")
            params.append(normalize_name(name))
        if namespace is not None:
            where.append("namespace = ?")
            params.append(str(parse_namespace(namespace)))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(f"SELECT * FROM secret_audit{clause} ORDER BY id", params)  # noqa: S608
        return [_event(r) for r in rows]

    def record(self, event: AuditEvent) -> None:
        def work(tx: Transaction) -> None:
            self._audit(tx, event)

        self._run(work)

    # Users and orgs -----------------------------------------------------------------

    def add_user(self, name: str, *, admin: bool = False) -> bool:
        check_principal_name(name, "user name")

        def work(tx: Transaction) -> bool:
            created = tx.execute(
                "INSERT INTO runner_users (name, admin, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [name, 1 if admin else 0, self._now()],
            )
            if not created and admin:
                tx.execute("UPDATE runner_users SET admin = 1 WHERE name = ?", [name])
            return created > 0

        result: bool = self._run(work)
        return result

    def add_org(self, name: str) -> bool:
        check_principal_name(name, "org name")

        def work(tx: Transaction) -> bool:
            return (
                tx.execute(
                    "INSERT INTO runner_orgs (name, created_at) VALUES (?, ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    [name, self._now()],
                )
                > 0
            )

        result: bool = self._run(work)
        return result

    def add_member(self, org: str, user: str) -> bool:
        check_principal_name(org, "org name")
        check_principal_name(user, "user name")

        def work(tx: Transaction) -> bool:
            now = self._now()
            tx.execute(
                "INSERT INTO runner_orgs (name, created_at) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [org, now],
            )
            tx.execute(
                "INSERT INTO runner_users (name, admin, created_at) VALUES (?, 0, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [user, now],
            )
            return (
                tx.execute(
                    "INSERT INTO runner_org_members (org_name, user_name, added_at)"
                    " VALUES (?, ?, ?) ON CONFLICT (org_name, user_name) DO NOTHING",
                    [org, user, now],
                )
                > 0
            )

        result: bool = self._run(work)
        return result

    def remove_member(self, org: str, user: str) -> bool:
        def work(tx: Transaction) -> bool:
            return (
                tx.execute(
                    "DELETE FROM runner_org_members WHERE org_name = ? AND user_name = ?",
                    [org, user],
                )
                > 0
            )

        result: bool = self._run(work)
        return result

    def is_admin(self, user: str) -> bool:
        record = self.get_user(user)
        return record is not None and record.admin

    def get_user(self, name: str) -> UserRecord | None:
        return next((u for u in self._users(name) if u.name == name), None)

    def users(self) -> builtins.list[UserRecord]:
        return self._users(None)

    def _users(self, only: str | None) -> builtins.list[UserRecord]:
        clause = " WHERE u.name = ?" if only is not None else ""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT u.name, u.admin, u.created_at, m.org_name FROM runner_users u"  # noqa: S608
                f" LEFT JOIN runner_org_members m ON m.user_name = u.name{clause}"
                " ORDER BY u.name, m.org_name",
                [only] if only is not None else [],
            )
        records: dict[str, UserRecord] = {}
        for row in rows:
            known = records.get(row["name"])
            orgs = (*known.orgs, row["org_name"]) if known else (row["org_name"],)
            records[row["name"]] = UserRecord(
                name=row["name"],
                admin=bool(row["admin"]),
                created_at=parse_db_time(row["created_at"]),
                orgs=tuple(o for o in orgs if o is not None),
            )
        return builtins.list(records.values())

    def get_org(self, name: str) -> OrgRecord | None:
        return next((o for o in self._orgs(name) if o.name == name), None)

    def orgs(self) -> builtins.list[OrgRecord]:
        return self._orgs(None)

    def _orgs(self, only: str | None) -> builtins.list[OrgRecord]:
        clause = " WHERE o.name = ?" if only is not None else ""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT o.name, o.created_at, m.user_name FROM runner_orgs o"  # noqa: S608
                f" LEFT JOIN runner_org_members m ON m.org_name = o.name{clause}"
                " ORDER BY o.name, m.user_name",
                [only] if only is not None else [],
            )
        records: dict[str, OrgRecord] = {}
        for row in rows:
            known = records.get(row["name"])
            members = (*known.members, row["user_name"]) if known else (row["user_name"],)
            records[row["name"]] = OrgRecord(
                name=row["name"],
                created_at=parse_db_time(row["created_at"]),
                members=tuple(m for m in members if m is not None),
            )
        return builtins.list(records.values())

    def org_members(self, org: str) -> builtins.list[str]:
        record = self.get_org(org)
        return builtins.list(record.members) if record else []

    def orgs_of(self, user: str) -> builtins.list[str]:
        record = self.get_user(user)
        return builtins.list(record.orgs) if record else []
