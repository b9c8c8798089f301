"""``FakeSecretStore``: the store's behaviour in memory, for tests of other modules.

It validates names, scopes and values, versions and audits exactly like
``SqlSecretStore`` (one contract test suite runs against both); it only
skips encryption, since nothing leaves the process.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime

from runner.db import utcnow
from runner.errors import SecretNotFoundError
from runner.namespaces import GLOBAL, Namespace, check_principal_name, parse_namespace
from runner.secrets.models import AuditEvent, OrgRecord, SecretMeta, UserRecord
from runner.secrets.names import DEFAULT_SCOPE, check_scope, check_value, normalize_name
from runner.secrets.store import (
    Clock,
    SecretKey,
    check_event,
    new_secret_id,
    not_found,
    pick_visible,
    secret_key,
    stale,
)
from runner.secrets.value import Secret


@dataclass
class _Row:
    meta: SecretMeta
    deleted: bool = False
    # Only the current version keeps its value; older ones are None (destroyed).
    values: dict[int, Secret | None] = field(default_factory=dict)


class FakeSecretStore:
    """An in-memory ``SecretStore``. Thread-safe; not shared between processes."""

    def __init__(self, *, clock: Clock = utcnow) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._rows: dict[str, _Row] = {}
        self._audit: builtins.list[AuditEvent] = []
        self._users: dict[str, tuple[bool, datetime]] = {}
        self._orgs: dict[str, datetime] = {}
        self._members: builtins.set[tuple[str, str]] = builtins.set()

    # Helpers ------------------------------------------------------------------------

    def _live(self, key: SecretKey) -> _Row | None:
        for row in self._rows.values():
            m = row.meta
            if not row.deleted and (m.name, m.namespace, m.scope) == (
                key.name,
                key.namespace,
                key.scope,
            ):
                return row
        return None

    def _with_override(self, meta: SecretMeta) -> SecretMeta:
        overrides = meta.namespace != str(GLOBAL) and (
            self._live(SecretKey(meta.name, str(GLOBAL), meta.scope)) is not None
        )
        return replace(meta, overrides_global=overrides)

    def _append(self, event: AuditEvent) -> None:
        check_event(event)
        self._audit.append(event)

    def _event(self, event: str, meta: SecretMeta, *, actor: str, at: datetime) -> AuditEvent:
        return AuditEvent(
            event=event,
            at=at,
            actor=actor,
            secret_id=meta.id,
            name=meta.name,
            namespace=meta.namespace,
            scope=meta.scope,
            version=meta.version,
        )

    # Secrets ----------------------------------------------------------------------------

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
        with self._lock:
            now = self._clock()
            row = self._live(key)
            created = row is None
            if row is None:
                meta = SecretMeta(
                    id=new_secret_id(),
                    name=key.name,
                    namespace=key.namespace,
                    scope=key.scope,
                    version=1,
                    created_at=now,
                    created_by=actor,
                    updated_at=now,
                    updated_by=actor,
                )
                row = _Row(meta=meta)
                self._rows[meta.id] = row
            else:
                row.meta = replace(
                    row.meta, version=row.meta.version + 1, updated_at=now, updated_by=actor
                )
                row.values = dict.fromkeys(row.values)
            row.values[row.meta.version] = value
            self._append(
                self._event("created" if created else "updated", row.meta, actor=actor, at=now)
            )
            return self._with_override(row.meta), created

    def remove(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE, actor: str
    ) -> SecretMeta:
        key = secret_key(name, namespace, scope)
        with self._lock:
            row = self._live(key)
            if row is None:
                raise not_found(key)
            meta = self._with_override(row.meta)
            row.deleted = True
            row.values = dict.fromkeys(row.values)
            self._append(self._event("deleted", row.meta, actor=actor, at=self._clock()))
            return meta

    def get(
        self, name: str, namespace: str | Namespace, *, scope: str = DEFAULT_SCOPE
    ) -> SecretMeta | None:
        key = secret_key(name, namespace, scope)
        with self._lock:
            row = self._live(key)
            return None if row is None else self._with_override(row.meta)

    def list(
        self,
        *,
        namespace: str | Namespace | None = None,
        scope: str | None = None,
        visible_from: str | Namespace | None = None,
    ) -> builtins.list[SecretMeta]:
        if namespace is not None and visible_from is not None:
            raise ValueError("give namespace or visible_from, not both")
        wanted_scope = check_scope(scope) if scope is not None else None
        viewer = parse_namespace(visible_from) if visible_from is not None else None
        owners: builtins.set[str] | None = None
        if namespace is not None:
            owners = {str(parse_namespace(namespace))}
        elif viewer is not None:
            owners = {str(viewer), str(GLOBAL)}
        with self._lock:
            metas = [
                self._with_override(row.meta)
                for row in self._rows.values()
                if not row.deleted
                and (wanted_scope is None or row.meta.scope == wanted_scope)
                and (owners is None or row.meta.namespace in owners)
            ]
        metas.sort(key=lambda m: (m.name, m.namespace, m.scope))
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
        with self._lock:
            row = self._rows.get(secret_id)
            if row is None:
                raise SecretNotFoundError(
                    f"no secret with id {secret_id}",
                    hint="resolve the secret by name again; it may have been removed",
                )
            if row.deleted or row.meta.version != version:
                raise stale(row.meta, asked=version, removed=row.deleted)
            value = row.values.get(version)
            assert value is not None
            self._append(
                replace(
                    self._event("accessed", row.meta, actor=actor, at=self._clock()),
                    job=run_id,
                    step=step,
                )
            )
            return value

    def log(
        self, name: str | None = None, *, namespace: str | Namespace | None = None
    ) -> builtins.list[AuditEvent]:
        wanted_name = normalize_name(name) if name is not None else None
        wanted_ns = str(parse_namespace(namespace)) if namespace is not None else None
        with self._lock:
            return [
                e
                for e in self._audit
                if (wanted_name is None or e.name == wanted_name)
                and (wanted_ns is None or e.namespace == wanted_ns)
            ]

    def record(self, event: AuditEvent) -> None:
        with self._lock:
            self._append(event)

    # Users and orgs -------------------------------------------------------------------

    def add_user(self, name: str, *, admin: bool = False) -> bool:
        check_principal_name(name, "user name")
        with self._lock:
            known = self._users.get(name)
            if known is None:
                self._users[name] = (admin, self._clock())
                return True
            if admin and not known[0]:
                self._users[name] = (True, known[1])
            return False

    def add_org(self, name: str) -> bool:
        check_principal_name(name, "org name")
        with self._lock:
            if name in self._orgs:
                return False
            self._orgs[name] = self._clock()
            return True

    def add_member(self, org: str, user: str) -> bool:
        with self._lock:
            self.add_org(org)
            self.add_user(user)
            if (org, user) in self._members:
                return False
            self._members.add((org, user))
            return True

    def remove_member(self, org: str, user: str) -> bool:
        with self._lock:
            if (org, user) not in self._members:
                return False
            self._members.discard((org, user))
            return True

    def is_admin(self, user: str) -> bool:
        with self._lock:
            known = self._users.get(user)
            return known is not None and known[0]

    def get_user(self, name: str) -> UserRecord | None:
        with self._lock:
            known = self._users.get(name)
            if known is None:
                return None
            orgs = tuple(sorted(o for o, u in self._members if u == name))
            return UserRecord(name=name, admin=known[0], created_at=known[1], orgs=orgs)

    def get_org(self, name: str) -> OrgRecord | None:
        with self._lock:
            created = self._orgs.get(name)
            if created is None:
                return None
            members = tuple(sorted(u for o, u in self._members if o == name))
            return OrgRecord(name=name, created_at=created, members=members)

    def users(self) -> builtins.list[UserRecord]:
        with self._lock:
            return [u for n in sorted(self._users) if (u := self.get_user(n)) is not None]

    def orgs(self) -> builtins.list[OrgRecord]:
        with self._lock:
            return [o for n in sorted(self._orgs) if (o := self.get_org(n)) is not None]

    def org_members(self, org: str) -> builtins.list[str]:
        record = self.get_org(org)
        return builtins.list(record.members) if record else []

    def orgs_of(self, user: str) -> builtins.list[str]:
        record = self.get_user(user)
        return builtins.list(record.orgs) if record else []
