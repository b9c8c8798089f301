"""``FakeUserDirectory``: the directory in memory, for tests of other modules.

It validates names and keeps records exactly like ``SqlUserDirectory`` (one
contract suite, tests/test_users.py, runs against both).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from runner.clock import SYSTEM_CLOCK, Clock
from runner.users.directory import (
    DirectoryBase,
    OrgRecord,
    UserRecord,
    check_org_name,
    check_user_name,
)


class FakeUserDirectory(DirectoryBase):
    """An in-memory ``UserDirectory``. Thread-safe; not shared between processes."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        # Records without their relations, which come from the (org, user) pairs.
        self._users: dict[str, UserRecord] = {}
        self._orgs: dict[str, OrgRecord] = {}
        self._members: set[tuple[str, str]] = set()
        self._lock = threading.RLock()

    def add_user(self, name: str, *, admin: bool = False) -> bool:
        check_user_name(name)
        with self._lock:
            known = self._users.get(name)
            if known is None:
                self._users[name] = UserRecord(name=name, admin=admin, created_at=self._clock.now())
                return True
            if admin:
                self._users[name] = replace(known, admin=True)
            return False

    def add_org(self, name: str) -> bool:
        check_org_name(name)
        with self._lock:
            if name in self._orgs:
                return False
            self._orgs[name] = OrgRecord(name=name, created_at=self._clock.now())
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

    def get_user(self, name: str) -> UserRecord | None:
        with self._lock:
            known = self._users.get(name)
            return None if known is None else replace(known, orgs=self._related(user=name))

    def get_org(self, name: str) -> OrgRecord | None:
        with self._lock:
            known = self._orgs.get(name)
            return None if known is None else replace(known, members=self._related(org=name))

    def _related(self, *, user: str | None = None, org: str | None = None) -> tuple[str, ...]:
        """The orgs of ``user``, or the members of ``org``, by name."""
        if user is not None:
            return tuple(sorted(o for o, u in self._members if u == user))
        return tuple(sorted(u for o, u in self._members if o == org))

    def users(self) -> list[UserRecord]:
        with self._lock:
            return [replace(u, orgs=self._related(user=n)) for n, u in sorted(self._users.items())]

    def orgs(self) -> list[OrgRecord]:
        with self._lock:
            return [replace(o, members=self._related(org=n)) for n, o in sorted(self._orgs.items())]
