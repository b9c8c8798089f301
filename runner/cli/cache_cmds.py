"""`runner cache list` and `runner cache clear`: the local execution cache.

These open the state database only, not the master key: listing or clearing
entries needs no secret, and an entry holds none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from runner.cache import EntryInfo, parse_ref
from runner.cache.sql import SqlStepCache
from runner.cli._app import app, cli, common_options, table
from runner.config import MIB
from runner.db import connect
from runner.namespaces import parse_namespace
from runner.secrets.models import rfc3339

KEY_PREFIX = 12


@contextmanager
def _cache() -> Iterator[SqlStepCache]:
    settings = app().settings
    if settings.database_url is None and not settings.home.exists():
        settings.home.mkdir(mode=0o700, parents=True)
    db = connect(settings.effective_database_url)
    try:
        yield SqlStepCache(db, max_bytes=settings.cache_max_mb * MIB)
    finally:
        db.close()


def _namespace(text: str | None) -> str | None:
    return None if text is None else str(parse_namespace(text))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def entry_json(info: EntryInfo) -> dict[str, Any]:
    secrets = []
    for ref in info.secret_refs:
        secret_id, version = parse_ref(ref)
        secrets.append({"id": secret_id, "version": version})
    return {
        "key": info.key,
        "key_prefix": info.key[:KEY_PREFIX],
        "namespace": info.namespace,
        "size": info.size,
        "created_at": rfc3339(info.created_at),
        "last_used_at": rfc3339(info.last_used_at),
        "secrets": secrets,
    }


def _entries(count: int) -> str:
    return "entry" if count == 1 else "entries"


_namespace_option = click.option(
    "--namespace", metavar="NS", help="Only this namespace's entries (global, org:NAME, user:NAME)."
)


@cli.group("cache")
def cache_group() -> None:
    """The execution cache: one entry per step prefix, reused by later runs.

    Entries never hold a secret value; keys name the secret versions they
    used, so rotating or removing a secret makes its entries unreachable (and
    `runner secret set`/`rm` delete them).
    """


@cache_group.command("list")
@_namespace_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@common_options
def cache_list(namespace: str | None, as_json: bool) -> None:
    """List cache entries, most recently used first."""
    ns = _namespace(namespace)
    with _cache() as cache:
        infos = cache.entries(ns)
    if as_json:
        click.echo(json.dumps([entry_json(i) for i in infos], indent=2))
        return
    if not infos:
        click.echo("the cache is empty", err=True)
        return
    rows = [
        [
            i.key[:KEY_PREFIX],
            i.namespace,
            human_size(i.size),
            rfc3339(i.created_at.replace(microsecond=0)),
            rfc3339(i.last_used_at.replace(microsecond=0)),
        ]
        for i in infos
    ]
    click.echo(table(["KEY", "NAMESPACE", "SIZE", "CREATED", "LAST USED"], rows))
    total = sum(i.size for i in infos)
    click.echo(f"{len(infos)} {_entries(len(infos))}, {human_size(total)}", err=True)


@cache_group.command("clear")
@_namespace_option
@common_options
def cache_clear(namespace: str | None) -> None:
    """Remove every cache entry (or one namespace's)."""
    ns = _namespace(namespace)
    with _cache() as cache:
        removed = cache.clear(ns)
    where = f" of {ns}" if ns else ""
    click.echo(f"removed {removed} cache {_entries(removed)}{where}")
