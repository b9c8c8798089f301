"""Namespace policies: what an admin requires of every job in a namespace.

One row per namespace holding a ``runner.sandbox.tighten.NamespacePolicy``
as JSON. The coordinator reads it at each claim and sends it with the job;
the executor runs the job under ``tighten(its own policy, this one)``. A
namespace without a row requires nothing beyond the executor's own policy.

The row also holds the executor labels the namespace's jobs require
(``runner.queue.routing``); they join a job's own when it is queued.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runner.clock import SYSTEM_CLOCK, Clock
from runner.db import Database, Transaction, db_time, parse_db_time
from runner.errors import UsageError
from runner.migrations import Migration, register
from runner.namespaces import Namespace, parse_namespace
from runner.queue.routing import decode, encode
from runner.sandbox.tighten import NamespacePolicy
from runner.secrets.models import rfc3339

_TABLE = """
CREATE TABLE runner_namespace_policies (
    namespace TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(350, "queue: namespace sandbox policies", _TABLE),
    Migration(
        371,
        "queue: executor labels a namespace's jobs require",
        "ALTER TABLE runner_namespace_policies ADD COLUMN labels TEXT NOT NULL DEFAULT '';",
    ),
)

register(*MIGRATIONS)

Labels = tuple[str, ...]


def policy_namespace(text: str | Namespace) -> Namespace:
    """The namespace a policy is for: a user or an org, never ``global``."""
    namespace = parse_namespace(text)
    if namespace.is_global:
        raise UsageError(
            "jobs never run in global, so it has no sandbox policy",
            hint="set the policy of each user: or org: namespace, or start executors "
            "with the flags they must always use",
        )
    return namespace


@dataclass(frozen=True, kw_only=True)
class PolicyRecord:
    """A namespace's policy, with who set it last and when (never set: both None)."""

    namespace: str
    policy: NamespacePolicy = field(default_factory=NamespacePolicy)
    updated_by: str | None = None
    updated_at: datetime | None = None
    # Executor labels every job of the namespace requires.
    labels: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            **self.policy.to_json(),
            "require_labels": list(self.labels),
            "updated_by": self.updated_by,
            "updated_at": rfc3339(self.updated_at) if self.updated_at else None,
        }


class PolicyStore(Protocol):
    def get(self, namespace: str) -> PolicyRecord:
        """The namespace's policy; an empty one if none was set."""
        ...

    def set(
        self, namespace: str, policy: NamespacePolicy, *, actor: str, labels: Labels = ()
    ) -> PolicyRecord:
        """Replace the namespace's policy (and required labels) as a whole."""
        ...

    def clear(self, namespace: str) -> bool:
        """Forget the namespace's policy; True if it had one."""
        ...

    def list(self) -> builtins.list[PolicyRecord]:
        """Every namespace with a policy, by name."""
        ...


def _record(row: dict[str, Any]) -> PolicyRecord:
    return PolicyRecord(
        namespace=row["namespace"],
        policy=NamespacePolicy.from_json(json.loads(row["policy"])),
        updated_by=row["updated_by"],
        updated_at=parse_db_time(row["updated_at"]),
        labels=decode(row["labels"]),
    )


class SqlPolicyStore:
    """Policies on a ``runner.db.Database`` (SQLite or PostgreSQL, the same SQL)."""

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._clock = clock
        db.migrate(MIGRATIONS)

    def get(self, namespace: str) -> PolicyRecord:
        with self._db.transaction(write=False) as tx:
            row = tx.one("SELECT * FROM runner_namespace_policies WHERE namespace = ?", [namespace])
        return _record(row) if row is not None else PolicyRecord(namespace=namespace)

    def set(
        self, namespace: str, policy: NamespacePolicy, *, actor: str, labels: Labels = ()
    ) -> PolicyRecord:
        now = self._clock.now()
        record = PolicyRecord(
            namespace=namespace, policy=policy, updated_by=actor, updated_at=now, labels=labels
        )

        def work(tx: Transaction) -> None:
            tx.execute(
                "INSERT INTO runner_namespace_policies"
                " (namespace, policy, updated_by, updated_at, labels)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET"
                " policy = excluded.policy, updated_by = excluded.updated_by,"
                " updated_at = excluded.updated_at, labels = excluded.labels",
                [namespace, json.dumps(policy.to_json()), actor, db_time(now), encode(labels)],
            )

        self._db.run(work)
        return record

    def clear(self, namespace: str) -> bool:
        sql = "DELETE FROM runner_namespace_policies WHERE namespace = ?"
        return self._db.run(lambda tx: tx.execute(sql, [namespace]) > 0)

    def list(self) -> builtins.list[PolicyRecord]:
        with self._db.transaction(write=False) as tx:
            rows = tx.all("SELECT * FROM runner_namespace_policies ORDER BY namespace")
        return [_record(r) for r in rows]
