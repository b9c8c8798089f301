"""Option groups that reach a command as one value: its namespace, its coordinator.

``namespace_options`` turns ``--global``/``--org``/``--user``/``--namespace``
into one ``Namespace``, parsed here and nowhere after; ``remote`` hands the
``--url``/``--token-file``/``--ca-cert`` trio over as one ``Remote`` (``remote_flags``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from runner.cli._app import namespace_from_flags, remote_client, remote_options
from runner.namespaces import parse_optional
from runner.records import Frozen

F = TypeVar("F", bound=Callable[..., Any])


def namespace_options(*, required: bool) -> Callable[[F], F]:
    """The namespace flags; the command gets ``ns`` (None if not ``required`` and not given)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def parsed(
            *args: Any,
            global_: bool,
            org: str | None,
            user: str | None,
            namespace: str | None,
            **kwargs: Any,
        ) -> Any:
            text = namespace_from_flags(
                global_=global_, org=org, user=user, namespace=namespace, required=required
            )
            return func(*args, ns=parse_optional(text), **kwargs)

        command: Any = parsed
        for option in reversed(
            [
                click.option("--global", "global_", is_flag=True, help="Global secrets (admins)."),
                click.option("--org", metavar="ORG", help="The secrets of org ORG."),
                click.option("--user", metavar="USER", help="The secrets of user USER."),
                click.option("--namespace", metavar="NS", help="global, org:NAME or user:NAME."),
            ]
        ):
            command = option(command)
        return cast(F, command)

    return decorate


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class Remote(Frozen):
    """The coordinator a command talks to, as its flags named it."""

    url: str
    token_file: Path | None
    ca_cert: Path | None

    def __init__(self, url: str, token_file: Path | None, ca_cert: Path | None) -> None:
        self._fill(url, token_file, ca_cert)

    def client(self) -> Any:
        return remote_client(self.url, self.token_file, self.ca_cert)


def remote_flags(*, required: bool = True) -> Callable[[F], F]:
    """``remote_options``; the command gets ``remote: Remote``, or None without ``--url``."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def packed(
            *args: Any, url: str | None, token_file: Path | None, ca_cert: Path | None, **kw: Any
        ) -> Any:
            given = Remote(url, token_file, ca_cert) if url else None
            return func(*args, remote=given, **kw)

        return remote_options(required=required)(cast(F, packed))

    return decorate


def option_group(
    options: dict[str, Callable[[Any], Any]], into: str, pack: Callable[..., Any]
) -> Callable[[F], F]:
    """Options (by the parameter each sets) that reach the command as one value:
    ``into=pack(**their values)``."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def packed(*args: Any, **kwargs: Any) -> Any:
            mine = {name: kwargs.pop(name) for name in options}
            return func(*args, **{into: pack(**mine)}, **kwargs)

        command: Any = packed
        for option in reversed(list(options.values())):
            command = option(command)
        return cast(F, command)

    return decorate
