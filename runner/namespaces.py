"""Namespaces: ``global``, ``org:NAME`` and ``user:NAME``.

One spelling everywhere (flags, JSON, messages, database rows), so the text
form is canonical and ``parse_namespace(str(ns)) == ns`` always holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from runner.errors import UsageError
from runner.records import OrderedFrozen

NamespaceKind = Literal["global", "org", "user"]

# Login-name-like: what Sourcegraph allows for users and orgs, minus oddities
# that would make `org:NAME` ambiguous (no colon, no whitespace).
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?")
NAME_HINT = (
    "use letters, digits, '.', '_' or '-' (at most 64), "
    "starting with a letter or digit and not ending in '.' or '-'"
)


@dataclass(init=False, repr=False, eq=False)  # an ordered Frozen record: see runner.records
class Namespace(OrderedFrozen):
    """A parsed namespace; ``str`` gives its one spelling."""

    kind: NamespaceKind
    name: str = ""

    def __init__(self, kind: NamespaceKind, name: str = "") -> None:
        self._fill(kind, name)

    def __str__(self) -> str:
        return "global" if self.kind == "global" else f"{self.kind}:{self.name}"

    @property
    def is_global(self) -> bool:
        return self.kind == "global"


GLOBAL = Namespace("global")


def valid_principal_name(name: str) -> bool:
    """Whether ``name`` can name a user or an org."""
    return bool(_NAME_RE.fullmatch(name))


def check_principal_name(name: str, what: str = "name") -> str:
    if not valid_principal_name(name):
        raise UsageError(f"invalid {what} {name!r}", hint=NAME_HINT)
    return name


def user(name: str) -> Namespace:
    return Namespace("user", check_principal_name(name, "user name"))


def org(name: str) -> Namespace:
    return Namespace("org", check_principal_name(name, "org name"))


def parse_namespace(text: str | Namespace) -> Namespace:
    """``global``, ``org:NAME`` or ``user:NAME``; anything else is a usage error."""
    if isinstance(text, Namespace):
        return text
    if text == "global":
        return GLOBAL
    kind, sep, name = text.partition(":")
    if sep and kind == "user":
        return user(name)
    if sep and kind == "org":
        return org(name)
    raise UsageError(
        f"invalid namespace {text!r}",
        hint="write it as global, org:NAME or user:NAME",
    )


def parse_optional(text: str | Namespace | None) -> Namespace | None:
    """``parse_namespace`` for an optional flag, field or query parameter."""
    return None if text is None else parse_namespace(text)


def visible_namespaces(ns: Namespace | str) -> list[Namespace]:
    """Owners whose secrets a job in ``ns`` sees, the preferred one first."""
    parsed = parse_namespace(ns)
    return [GLOBAL] if parsed.is_global else [parsed, GLOBAL]
