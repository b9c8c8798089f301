"""``FakeSecretStore``: the store's behaviour in memory, for tests of other modules.

``SecretStore`` checks names, scopes and values for it exactly as for
``SqlSecretStore``; it versions and audits the same way (one contract test
suite runs against both) and only skips encryption, since nothing leaves the
process.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass, field, replace

from runner.clock import SYSTEM_CLOCK, Clock
from runner.namespaces import GLOBAL
from runner.secrets.delivery import Delivery
from runner.secrets.models import AuditEvent, SecretMeta
from runner.secrets.store import (
    Access,
    Listing,
    SecretKey,
    SecretStore,
    accessed,
    kept_delivery,
    new_secret_id,
    not_found,
    secret_event,
    stale,
    unknown_id,
    written,
)
from runner.secrets.value import Secret


@dataclass
class _Row:
    meta: SecretMeta
    deleted: bool = False
    # Only the current version keeps its value; older ones are None (destroyed).
    values: dict[int, Secret | None] = field(default_factory=dict)

    @property
    def key(self) -> SecretKey:
        return SecretKey(self.meta.name, self.meta.namespace, self.meta.scope)

    def destroy_values(self) -> None:
        self.values = dict.fromkeys(self.values)


class FakeSecretStore(SecretStore):
    """An in-memory ``SecretStore``. Thread-safe; not shared between processes."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._rows: dict[str, _Row] = {}
        self._audit: builtins.list[AuditEvent] = []

    def _live(self, key: SecretKey) -> _Row | None:
        return next((r for r in self._rows.values() if not r.deleted and r.key == key), None)

    def _shown(self, meta: SecretMeta) -> SecretMeta:
        """``meta`` as the store answers it: marked where it hides a global secret."""
        overrides = meta.namespace != str(GLOBAL) and (
            self._live(SecretKey(meta.name, str(GLOBAL), meta.scope)) is not None
        )
        return replace(meta, overrides_global=overrides)

    def _put(
        self, key: SecretKey, value: Secret, actor: str, delivery: Delivery | None
    ) -> tuple[SecretMeta, bool]:
        with self._lock:
            now = self._clock.now()
            row = self._live(key)
            before = None if row is None else row.meta
            delivery = kept_delivery(delivery, before)
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
                    delivery=delivery,
                )
                row = self._rows[meta.id] = _Row(meta=meta)
            else:
                row.meta = replace(
                    row.meta,
                    version=row.meta.version + 1,
                    updated_at=now,
                    updated_by=actor,
                    delivery=delivery,
                )
                row.destroy_values()
            row.values[row.meta.version] = value
            self._audit.append(written(row.meta, before, actor=actor, at=now))
            return self._shown(row.meta), before is None

    def _delete(self, key: SecretKey, actor: str) -> SecretMeta:
        with self._lock:
            row = self._live(key)
            if row is None:
                raise not_found(key)
            meta = self._shown(row.meta)
            row.deleted = True
            row.destroy_values()
            now = self._clock.now()
            self._audit.append(secret_event("deleted", row.meta, actor=actor, at=now))
            return meta

    def _find(self, key: SecretKey) -> SecretMeta | None:
        with self._lock:
            row = self._live(key)
            return None if row is None else self._shown(row.meta)

    def _select(self, asked: Listing) -> builtins.list[SecretMeta]:
        with self._lock:
            metas = [
                self._shown(row.meta)
                for row in self._rows.values()
                if not row.deleted
                and asked.scope in (None, row.meta.scope)
                and (asked.owners is None or row.meta.namespace in asked.owners)
            ]
        return sorted(metas, key=lambda m: (m.name, m.namespace, m.scope))

    def _open(self, access: Access) -> Secret:
        with self._lock:
            row = self._rows.get(access.secret_id)
            if row is None:
                raise unknown_id(access.secret_id)
            if row.deleted or row.meta.version != access.version:
                raise stale(row.meta, asked=access.version, removed=row.deleted)
            value = row.values.get(access.version)
            assert value is not None
            self._audit.append(accessed(row.meta, access, self._clock.now()))
            return value

    def _events(self, name: str | None, namespace: str | None) -> builtins.list[AuditEvent]:
        with self._lock:
            return [
                e
                for e in self._audit
                if name in (None, e.name) and namespace in (None, e.namespace)
            ]

    def _append(self, event: AuditEvent) -> None:
        with self._lock:
            self._audit.append(event)
