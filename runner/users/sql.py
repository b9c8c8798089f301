"""``SqlUserDirectory``: users, orgs and members in SQLite or PostgreSQL.

The tables (``runner_users``, ``runner_orgs``, ``runner_org_members``) came
with the secret store's first migration, so this directory applies that
schema when it opens and shares the database with the secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from runner.clock import SYSTEM_CLOCK, Clock
from runner.db import Database, Transaction, db_time, parse_db_time
from runner.errors import BusyError, IntegrityError
from runner.secrets import schema
from runner.users.directory import (
    DirectoryBase,
    OrgRecord,
    UserRecord,
    check_org_name,
    check_user_name,
)

T = TypeVar("T")

_ADD_USER: Final = (
    "INSERT INTO runner_users (name, admin, created_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO NOTHING"
)
_ADD_ORG: Final = (
    "INSERT INTO runner_orgs (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
)
# Each record with its members (or orgs), one row per pair; {where} narrows to one name.
_USERS: Final = (
    "SELECT u.name, u.admin, u.created_at, m.org_name AS other FROM runner_users u"
    " LEFT JOIN runner_org_members m ON m.user_name = u.name{where}"
    " ORDER BY u.name, m.org_name"
)
_ORGS: Final = (
    "SELECT o.name, o.created_at, m.user_name AS other FROM runner_orgs o"
    " LEFT JOIN runner_org_members m ON m.org_name = o.name{where}"
    " ORDER BY o.name, m.user_name"
)


def _grouped(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """Joined rows folded into (the record's row, the names it is joined to)."""
    records: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for row in rows:
        _, others = records.setdefault(row["name"], (row, []))
        if row["other"] is not None:
            others.append(row["other"])
    return [(row, tuple(others)) for row, others in records.values()]


def _named(row: dict[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "created_at": parse_db_time(row["created_at"])}


class SqlUserDirectory(DirectoryBase):
    """The directory on a ``runner.db.Database``; safe for concurrent processes."""

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._clock = clock
        db.migrate(schema.MIGRATIONS)

    def _run(self, work: Callable[[Transaction], T]) -> T:
        return self._db.run(work, retry_on=(BusyError, IntegrityError))

    def _select(self, sql: str, alias: str, only: str | None) -> list[dict[str, Any]]:
        where = f" WHERE {alias}.name = ?" if only is not None else ""
        with self._db.transaction(write=False) as tx:
            return tx.all(sql.format(where=where), [only] if only is not None else [])

    def add_user(self, name: str, *, admin: bool = False) -> bool:
        check_user_name(name)

        def work(tx: Transaction) -> bool:
            created = tx.execute(_ADD_USER, [name, 1 if admin else 0, db_time(self._clock.now())])
            if not created and admin:
                tx.execute("UPDATE runner_users SET admin = 1 WHERE name = ?", [name])
            return created > 0

        return self._run(work)

    def add_org(self, name: str) -> bool:
        check_org_name(name)
        return self._run(lambda tx: tx.execute(_ADD_ORG, [name, db_time(self._clock.now())]) > 0)

    def add_member(self, org: str, user: str) -> bool:
        check_org_name(org)
        check_user_name(user)

        def work(tx: Transaction) -> bool:
            now = db_time(self._clock.now())
            tx.execute(_ADD_ORG, [org, now])
            tx.execute(_ADD_USER, [user, 0, now])
            added = tx.execute(
                "INSERT INTO runner_org_members (org_name, user_name, added_at)"
                " VALUES (?, ?, ?) ON CONFLICT (org_name, user_name) DO NOTHING",
                [org, user, now],
            )
            return added > 0

        return self._run(work)

    def remove_member(self, org: str, user: str) -> bool:
        sql = "DELETE FROM runner_org_members WHERE org_name = ? AND user_name = ?"
        return self._run(lambda tx: tx.execute(sql, [org, user]) > 0)

    def get_user(self, name: str) -> UserRecord | None:
        return next(iter(self._users(name)), None)

    def get_org(self, name: str) -> OrgRecord | None:
        return next(iter(self._orgs(name)), None)

    def users(self) -> list[UserRecord]:
        return self._users(None)

    def orgs(self) -> list[OrgRecord]:
        return self._orgs(None)

    def _users(self, only: str | None) -> list[UserRecord]:
        rows = _grouped(self._select(_USERS, "u", only))
        return [UserRecord(admin=bool(r["admin"]), orgs=orgs, **_named(r)) for r, orgs in rows]

    def _orgs(self, only: str | None) -> list[OrgRecord]:
        rows = _grouped(self._select(_ORGS, "o", only))
        return [OrgRecord(members=members, **_named(r)) for r, members in rows]
