"""The ``UserDirectory`` seam: users (some of them admins), orgs and their members.

Permission checks (``runner.secrets.access``), the coordinator, the CLI and the
web pages read it; nothing in it is secret. Names follow the namespace rules
(``runner.namespaces``), so every user and org can own a namespace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from runner.namespaces import Namespace, check_principal_name
from runner.secrets.models import rfc3339


@dataclass(frozen=True)
class _Record:
    def to_json(self) -> dict[str, Any]:
        """Fields in order; times in RFC 3339, name lists as lists."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = rfc3339(value)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, kw_only=True)
class UserRecord(_Record):
    name: str
    admin: bool
    created_at: datetime
    orgs: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class OrgRecord(_Record):
    name: str
    created_at: datetime
    members: tuple[str, ...] = ()


class UserDirectory(Protocol):
    """What access checks and the front doors need to know about people."""

    def add_user(self, name: str, *, admin: bool = False) -> bool:
        """True when created; an existing user is kept (and made admin if asked)."""
        ...

    def add_org(self, name: str) -> bool:
        """True when created; an existing org is kept."""
        ...

    def add_member(self, org: str, user: str) -> bool:
        """True when added; creates a missing org or user record."""
        ...

    def remove_member(self, org: str, user: str) -> bool: ...

    def get_user(self, name: str) -> UserRecord | None: ...

    def get_org(self, name: str) -> OrgRecord | None: ...

    def users(self) -> list[UserRecord]:
        """Every user, by name, each with their orgs by name."""
        ...

    def orgs(self) -> list[OrgRecord]:
        """Every org, by name, each with its members by name."""
        ...

    def is_admin(self, user: str) -> bool: ...

    def org_members(self, org: str) -> list[str]: ...

    def orgs_of(self, user: str) -> list[str]: ...


def check_user_name(name: str) -> str:
    return check_principal_name(name, "user name")


def check_org_name(name: str) -> str:
    return check_principal_name(name, "org name")


class DirectoryBase(ABC):
    """The answers every implementation derives from its user and org records."""

    @abstractmethod
    def get_user(self, name: str) -> UserRecord | None: ...

    @abstractmethod
    def get_org(self, name: str) -> OrgRecord | None: ...

    def is_admin(self, user: str) -> bool:
        record = self.get_user(user)
        return record is not None and record.admin

    def org_members(self, org: str) -> list[str]:
        record = self.get_org(org)
        return list(record.members) if record else []

    def orgs_of(self, user: str) -> list[str]:
        record = self.get_user(user)
        return list(record.orgs) if record else []


def ensure_owner(directory: UserDirectory, ns: Namespace) -> None:
    """Create the user or org record that ``ns`` belongs to, if missing."""
    if ns.kind == "user" and directory.get_user(ns.name) is None:
        directory.add_user(ns.name)
    elif ns.kind == "org" and directory.get_org(ns.name) is None:
        directory.add_org(ns.name)
