"""The executor fleet: the latest heartbeat of every executor, as the coordinator keeps it.

Each heartbeat carries an ``ExecutorInfo`` (name, runner version, host name,
Docker engine version, the isolation levels it can run, its labels, its
running jobs and its limits); ``SqlFleetStore`` keeps the latest one per
executor name in ``runner_executors``, with when it was first and last seen.
An executor is *stale* once it has been quiet for longer than the stall
limit: the same limit after which its jobs are reset. Nothing here holds a
secret: an executor's info is what it says about itself, bounded in size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from runner.clock import SYSTEM_CLOCK, Clock
from runner.db import Database, Transaction, db_time, parse_db_time
from runner.errors import BusyError
from runner.migrations import Migration, register
from runner.queue.models import fields_to_json

MAX_TEXT: Final = 200
MAX_ITEMS: Final = 64

_TABLES = """
-- The latest heartbeat of each executor (runner.queue.fleet), one row per name.
CREATE TABLE runner_executors (
    name TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(380, "queue: the executor fleet's latest heartbeats", _TABLES),
)

register(*MIGRATIONS)


def _text(value: Any) -> str:
    return str(value or "")[:MAX_TEXT]


def _texts(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        return ()
    return tuple(_text(v) for v in values[:MAX_ITEMS])


def _limits(values: Any) -> dict[str, int | float]:
    # Numbers only: a limit is a count, a size or a time.
    if not isinstance(values, Mapping):
        return {}
    return {
        _text(k): v
        for k, v in list(values.items())[:MAX_ITEMS]
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


@dataclass(frozen=True, kw_only=True)
class ExecutorInfo:
    """What an executor says about itself in each heartbeat."""

    name: str
    version: str = ""
    hostname: str = ""
    docker_version: str = ""
    isolations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    running: tuple[str, ...] = ()  # ids of the jobs it runs now
    limits: Mapping[str, int | float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, name: str | None = None) -> ExecutorInfo:
        """Read (and bound) what an executor sent; ``name`` is the one its token proved."""
        return cls(
            name=_text(name if name is not None else data.get("name")),
            version=_text(data.get("version")),
            hostname=_text(data.get("hostname")),
            docker_version=_text(data.get("docker_version")),
            isolations=_texts(data.get("isolations")),
            labels=_texts(data.get("labels")),
            running=_texts(data.get("running")),
            limits=_limits(data.get("limits")),
        )


@dataclass(frozen=True, kw_only=True)
class FleetEntry:
    info: ExecutorInfo
    first_seen: datetime
    last_seen: datetime

    def stale(self, *, now: datetime, limit_s: float) -> bool:
        return self.last_seen < now - timedelta(seconds=limit_s)

    def to_json(self, *, now: datetime, limit_s: float) -> dict[str, Any]:
        """The info's fields with ``jobs`` (how many run), the times and ``stale``."""
        return {
            **self.info.to_json(),
            "jobs": len(self.info.running),
            "first_seen": fields_to_json(self)["first_seen"],
            "last_seen": fields_to_json(self)["last_seen"],
            "stale": self.stale(now=now, limit_s=limit_s),
        }


class FleetStore(Protocol):
    def record(self, info: ExecutorInfo) -> None:
        """Keep ``info`` as its executor's latest, seen now."""
        ...

    def list(self) -> list[FleetEntry]:
        """Every executor ever seen, by name."""
        ...

    def counts(self, *, limit_s: float) -> dict[str, int]:
        """How many executors are ``live`` and how many ``stale``."""
        ...


class SqlFleetStore:
    """``runner_executors`` on SQLite or PostgreSQL (one upsert per heartbeat)."""

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._clock = clock
        db.migrate(MIGRATIONS)

    def record(self, info: ExecutorInfo) -> None:
        now = db_time(self._clock.now())

        def work(tx: Transaction) -> None:
            tx.execute(
                "INSERT INTO runner_executors (name, info, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET info = excluded.info, last_seen = excluded.last_seen",
                [info.name, json.dumps(info.to_json()), now, now],
            )

        self._db.run(work, write=True, retry_on=(BusyError,))

    def list(self) -> list[FleetEntry]:
        with self._db.transaction(write=False) as tx:
            rows = tx.all("SELECT * FROM runner_executors ORDER BY name")
        return [
            FleetEntry(
                info=ExecutorInfo.from_json(json.loads(r["info"]), name=r["name"]),
                first_seen=parse_db_time(r["first_seen"]),
                last_seen=parse_db_time(r["last_seen"]),
            )
            for r in rows
        ]

    def counts(self, *, limit_s: float) -> dict[str, int]:
        cutoff = db_time(self._clock.now() - timedelta(seconds=limit_s))
        with self._db.transaction(write=False) as tx:
            live = tx.scalar("SELECT COUNT(*) FROM runner_executors WHERE last_seen >= ?", [cutoff])
            total = tx.scalar("SELECT COUNT(*) FROM runner_executors")
        return {"live": int(live or 0), "stale": int(total or 0) - int(live or 0)}


def fleet_json(
    entries: Sequence[FleetEntry], *, now: datetime, limit_s: float
) -> list[dict[str, Any]]:
    return [e.to_json(now=now, limit_s=limit_s) for e in entries]
