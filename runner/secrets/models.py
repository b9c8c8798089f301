"""Value objects of the secret store. None of them ever holds a value."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from runner.records import Frozen
from runner.secrets.delivery import DEFAULT_DELIVERY, Delivery

AuditEventName = Literal[
    "created",
    "updated",
    "deleted",
    "accessed",
    "brokered",
    "denied",
    "key_rotated",
    "cache_invalidated",
]
AUDIT_EVENTS: Final[tuple[str, ...]] = (
    "created",
    "updated",
    "deleted",
    "accessed",
    "brokered",  # a job's proxy used a brokered secret: hosts and requests, once per job
    "denied",
    "key_rotated",
    "cache_invalidated",
)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as every JSON output spells times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class SecretMeta(Frozen):
    """A secret's identity and its current version's metadata."""

    id: str
    name: str
    namespace: str
    scope: str
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    overrides_global: bool = False
    # How the value reaches a step (env, file, brokered); metadata, never a value.
    delivery: Delivery = DEFAULT_DELIVERY

    def __init__(
        self,
        *,
        id: str,
        name: str,
        namespace: str,
        scope: str,
        version: int,
        created_at: datetime,
        created_by: str,
        updated_at: datetime,
        updated_by: str,
        overrides_global: bool = False,
        delivery: Delivery = DEFAULT_DELIVERY,
    ) -> None:
        self._fill(
            id,
            name,
            namespace,
            scope,
            version,
            created_at,
            created_by,
            updated_at,
            updated_by,
            overrides_global,
            delivery,
        )

    def describe(self) -> str:
        """How messages name it: ``GITHUB_TOKEN in user:alice`` (plus a non-default scope)."""
        scope = "" if self.scope == "batches" else f" (scope {self.scope})"
        return f"{self.name} in {self.namespace}{scope}"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecretMeta:
        """The metadata ``to_json`` wrote; a database row with the same names reads alike."""
        return cls(
            id=data["id"],
            name=data["name"],
            namespace=data["namespace"],
            scope=data["scope"],
            version=int(data["version"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            created_by=data["created_by"],
            updated_at=datetime.fromisoformat(data["updated_at"]),
            updated_by=data["updated_by"],
            overrides_global=bool(data.get("overrides_global", False)),
            delivery=_delivery(data.get("delivery")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "namespace": self.namespace,
            "scope": self.scope,
            "version": self.version,
            "created_at": rfc3339(self.created_at),
            "created_by": self.created_by,
            "updated_at": rfc3339(self.updated_at),
            "updated_by": self.updated_by,
            "overrides_global": self.overrides_global,
            "delivery": self.delivery.to_json(),
        }


def _delivery(raw: object) -> Delivery:
    """A ``Delivery`` from its JSON form, or from a database row's JSON text (NULL: env)."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"not a secret delivery: {type(raw).__name__}")
    return Delivery.from_json(raw)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(init=False, repr=False, eq=False)
class AuditEvent(Frozen):
    """One line of the audit log. ``job``/``step`` for accesses, ``count`` for cache events."""

    event: str
    actor: str
    at: datetime = field(default_factory=_now)
    secret_id: str | None = None
    name: str | None = None
    namespace: str | None = None
    scope: str | None = None
    version: int | None = None
    job: str | None = None
    step: int | None = None
    count: int | None = None
    detail: str | None = None

    def __init__(
        self,
        *,
        event: str,
        actor: str,
        at: datetime | None = None,
        secret_id: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        scope: str | None = None,
        version: int | None = None,
        job: str | None = None,
        step: int | None = None,
        count: int | None = None,
        detail: str | None = None,
    ) -> None:
        self._fill(
            event,
            actor,
            _now() if at is None else at,
            secret_id,
            name,
            namespace,
            scope,
            version,
            job,
            step,
            count,
            detail,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEvent:
        """The event ``to_json`` wrote; a database row with the same names reads alike."""
        return cls(
            event=data["event"],
            at=datetime.fromisoformat(data["at"]),
            actor=data["actor"],
            secret_id=data.get("secret_id"),
            name=data.get("name"),
            namespace=data.get("namespace"),
            scope=data.get("scope"),
            version=data.get("version"),
            job=data.get("job"),
            step=data.get("step"),
            count=data.get("count"),
            detail=data.get("detail"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "at": rfc3339(self.at),
            "actor": self.actor,
            "secret_id": self.secret_id,
            "name": self.name,
            "namespace": self.namespace,
            "scope": self.scope,
            "version": self.version,
            "job": self.job,
            "step": self.step,
            "count": self.count,
            "detail": self.detail,
        }
