"""`runner secret`, `runner keys`, `runner user`, `runner org`.

A value never travels on the command line: `secret set` reads it from stdin
(when stdin is not a terminal), from a no-echo prompt, or from `--from-file`.
Nothing here prints a value. The local CLI holds the master key and acts with
full rights; naming a user or org with no record yet creates the record.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import click

from runner.cli._app import app, cli, common_options, login_name, table
from runner.cli._options import Remote, namespace_options, remote_flags
from runner.errors import SecretValidationError
from runner.namespaces import Namespace
from runner.secrets.delivery import DEFAULT_DELIVERY, SECRET_TYPES, Delivery
from runner.secrets.models import AuditEvent, SecretMeta, rfc3339
from runner.secrets.names import (
    DEFAULT_SCOPE,
    SCOPES,
    VALUE_MAX_BYTES,
    check_name,
    check_value,
)
from runner.secrets.opening import open_store, rotate_master_key
from runner.secrets.store import SqlSecretStore
from runner.secrets.value import Secret
from runner.users.directory import ensure_owner
from runner.users.sql import SqlUserDirectory


class _Shown(Protocol):
    def to_json(self) -> dict[str, Any]: ...


_scope_option = click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default=None,
    help=f"Feature scope of the secret (default: {DEFAULT_SCOPE}).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _store() -> SqlSecretStore:
    return open_store(app().settings)


@contextmanager
def _directory() -> Iterator[SqlUserDirectory]:
    """Users and orgs, on the secret store's database (opened as ``secret`` commands do)."""
    with _store() as store:
        yield SqlUserDirectory(store.db)


def _actor() -> str:
    return login_name(app().env)


def _invalidate_cache(store: SqlSecretStore, before: SecretMeta | None) -> None:
    """Drop cached step results that used the value as it was; the count goes on record."""
    # Imported here: the cache is only needed once a secret actually changed.
    from runner.cache.sql import invalidate_after_secret_change

    dropped = invalidate_after_secret_change(store, before, _actor())
    if dropped:
        click.echo(f"dropped {dropped} cached step results that used the old value", err=True)


def _scope_suffix(scope: str) -> str:
    return "" if scope == DEFAULT_SCOPE else f" (scope {scope})"


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


def _show(
    items: Sequence[_Shown],
    rows: list[list[str]],
    headers: list[str],
    *,
    as_json: bool,
    empty: str,
) -> None:
    """``items`` as JSON, or their ``rows`` as a table, or a note on stderr that there are none."""
    if as_json:
        _print_json([item.to_json() for item in items])
    elif items:
        click.echo(table(headers, rows))
    else:
        click.echo(empty, err=True)


# Reading a value ----------------------------------------------------------------


def _read_limited(stream: BinaryIO) -> bytes:
    # Two bytes of slack for a trailing newline; anything beyond is refused unread.
    data = stream.read(VALUE_MAX_BYTES + 3)
    if len(data) > VALUE_MAX_BYTES + 2:
        raise SecretValidationError(
            "secret values must be at most 48 KiB",
            hint="store large material elsewhere and put a short token in the secret",
        )
    return data


def _decode(data: bytes) -> Secret:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretValidationError(
            "secret values must be UTF-8 text", hint="store binary data base64-encoded"
        ) from None
    # `echo VALUE |` and editors add one newline that is not part of the value.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecretValidationError(
            "no secret value given",
            hint="pipe the value on stdin, use --from-file PATH, or run in a terminal to be asked",
        )
    return Secret(text)


def _prompt_value(name: str) -> Secret:
    first = getpass.getpass(f"Value for {name}: ", stream=sys.stderr)
    second = getpass.getpass(f"Repeat the value for {name}: ", stream=sys.stderr)
    if first != second:
        raise SecretValidationError(
            "the two values typed differ", hint="run the command again and type the same value"
        )
    return _decode(first.encode("utf-8"))


def read_value(name: str, from_file: Path | None) -> Secret:
    """The value from ``--from-file``, else stdin when it is not a terminal, else a prompt."""
    if from_file is not None:
        try:
            with from_file.open("rb") as fh:
                return _decode(_read_limited(fh))
        except OSError as exc:
            raise SecretValidationError(
                f"cannot read {from_file}: {exc.strerror or type(exc).__name__}",
                hint="check the path and its permissions",
            ) from None
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty():
        raw: BinaryIO | None = getattr(stdin, "buffer", None)
        if raw is not None:
            return _decode(_read_limited(raw))
        return _decode(stdin.read(VALUE_MAX_BYTES + 3).encode("utf-8"))
    return _prompt_value(name)


# runner secret --------------------------------------------------------------------


@cli.group("secret")
def secret_group() -> None:
    """Layered, encrypted secrets for steps' env (values never on the command line).

    A job in user:X sees X's secrets, then the global ones; a job in org:Y
    sees Y's, then the global ones.
    """


@secret_group.command("set")
@click.argument("name")
@namespace_options(required=True)
@_scope_option
@click.option(
    "--from-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the value from this file instead of stdin or a prompt.",
)
@click.option(
    "--type",
    "type_",
    type=click.Choice(SECRET_TYPES),
    help="How a step gets it: the variable holds the value (env), or the path of a file "
    "on a tmpfs holding it (file). Default: as the secret is now (env when new).",
)
@click.option(
    "--broker-host",
    "broker_hosts",
    multiple=True,
    metavar="HOST",
    help="Broker the secret for HOST (repeatable): the step sees a placeholder and the "
    "job's proxy puts the value into HTTPS requests to these hosts only.",
)
@click.option(
    "--broker-as",
    metavar="bearer|token|basic:USERNAME|header:NAME",
    help="How brokered requests carry it (default bearer).",
)
@remote_flags(required=False)
@common_options
def secret_set(
    name: str,
    ns: Namespace,
    scope: str | None,
    from_file: Path | None,
    type_: str | None,
    broker_hosts: tuple[str, ...],
    broker_as: str | None,
    remote: Remote | None,
) -> None:
    """Create or update secret NAME; the value comes from stdin, a prompt or a file.

    Every set makes a new version, also one that only changes --type or the
    broker binding (give the value again). Without --type or --broker-host,
    the secret keeps how it is delivered; `--type env` alone drops a broker
    binding. With --url, the coordinator stores it (with your token's
    permissions).
    """
    # Refuse a bad name or delivery before asking for the value.
    delivery = None
    if type_ is not None or broker_hosts or broker_as is not None:
        delivery = Delivery.of(type_ or "env", broker_hosts, broker_as)
    value = read_value(check_name(name), from_file)
    check_value(value)
    if remote:
        with remote.client() as client:
            meta, created = client.secret_set(name, str(ns), value, scope=scope, delivery=delivery)
    else:
        with _store() as store:
            ensure_owner(SqlUserDirectory(store.db), ns)
            chosen = scope or DEFAULT_SCOPE
            before = store.get(name, ns, scope=chosen)
            meta, created = store.set(
                name, ns, value, scope=chosen, actor=_actor(), delivery=delivery
            )
            _invalidate_cache(store, before)
    verb = "created" if created else "updated"
    click.echo(
        f"{verb} {meta.name} v{meta.version} in {meta.namespace}{_scope_suffix(meta.scope)}"
        + ("" if meta.delivery == DEFAULT_DELIVERY else f" ({meta.delivery.describe()})")
    )


@secret_group.command("list")
@namespace_options(required=False)
@_scope_option
@_json_option
@remote_flags(required=False)
@common_options
def secret_list(
    ns: Namespace | None, scope: str | None, as_json: bool, remote: Remote | None
) -> None:
    """List secrets (never values): all, or what a user's or org's jobs see."""
    if remote:
        with remote.client() as client:
            metas = client.secrets_list(namespace=None if ns is None else str(ns), scope=scope)
    else:
        with _store() as store:
            if ns is None:
                metas = store.list(scope=scope)
            elif ns.is_global:
                metas = store.list(namespace=ns, scope=scope)
            else:
                metas = store.list(visible_from=ns, scope=scope)
    _show_metas(metas, as_json)


def _show_metas(metas: Sequence[SecretMeta], as_json: bool) -> None:
    headers = ["NAME", "NAMESPACE", "SCOPE", "VERSION", "TYPE", "UPDATED", "BY", ""]
    rows = [_meta_row(m) for m in metas]
    _show(metas, rows, headers, as_json=as_json, empty="no secrets")


def _meta_row(m: SecretMeta) -> list[str]:
    return [
        m.name,
        m.namespace,
        m.scope,
        f"v{m.version}",
        m.delivery.describe(),
        rfc3339(m.updated_at.replace(microsecond=0)),
        m.updated_by,
        "overrides global" if m.overrides_global else "",
    ]


@secret_group.command("rm")
@click.argument("name")
@namespace_options(required=True)
@_scope_option
@remote_flags(required=False)
@common_options
def secret_rm(name: str, ns: Namespace, scope: str | None, remote: Remote | None) -> None:
    """Remove secret NAME; its values are destroyed, its audit log stays."""
    if remote:
        with remote.client() as client:
            meta = client.secret_remove(name, str(ns), scope=scope)
    else:
        with _store() as store:
            meta = store.remove(name, ns, scope=scope or DEFAULT_SCOPE, actor=_actor())
            _invalidate_cache(store, meta)
    click.echo(
        f"removed {meta.name} v{meta.version} from {meta.namespace}{_scope_suffix(meta.scope)}"
    )


@secret_group.command("log")
@click.argument("name", required=False)
@namespace_options(required=False)
@_json_option
@remote_flags(required=False)
@common_options
def secret_log(
    name: str | None, ns: Namespace | None, as_json: bool, remote: Remote | None
) -> None:
    """The audit log: changes, uses, refusals and key rotations (oldest first)."""
    if remote:
        with remote.client() as client:
            events = client.secret_log(name, namespace=None if ns is None else str(ns))
    else:
        with _store() as store:
            events = store.log(name, namespace=ns)
    headers = ["AT", "EVENT", "ACTOR", "NAMESPACE", "NAME", "SCOPE", "VERSION", "DETAIL"]
    rows = [_event_row(e) for e in events]
    _show(events, rows, headers, as_json=as_json, empty="no audit events")


def _event_row(event: AuditEvent) -> list[str]:
    detail = []
    if event.job is not None:
        detail.append(f"{_run_or_job(event.actor)} {event.job}")
    if event.step is not None:
        detail.append(f"step {event.step}")
    if event.count is not None:
        unit = "requests" if event.event == "brokered" else "entries"
        detail.append(f"{event.count} {unit}")
    if event.detail:
        detail.append(event.detail)
    return [
        rfc3339(event.at.replace(microsecond=0)),
        event.event,
        event.actor,
        event.namespace or "",
        event.name or "",
        event.scope or "",
        f"v{event.version}" if event.version is not None else "",
        ", ".join(detail),
    ]


def _run_or_job(actor: str) -> str:
    """An executor reveals for a coordinator's job; anyone else for a local `runner run`.

    The audit row keeps one ``job`` field for both (older rows stay readable);
    the actor tells them apart: executors reveal as ``executor:NAME``.
    """
    return "job" if actor == "executor" or actor.startswith("executor:") else "run"


# runner keys ------------------------------------------------------------------------


@cli.group("keys")
def keys_group() -> None:
    """Master keys that wrap every secret's data key."""


@keys_group.command("rotate")
@common_options
def keys_rotate() -> None:
    """Add a new primary master key, re-wrap every data key, retire the old keys."""
    with _store() as store:
        report = rotate_master_key(store, actor=_actor())
        path = store.keyring.source
    retired = ", ".join(report.retired_key_ids) or "none"
    click.echo(
        f"rotated to master key {report.new_key_id}: {report.rewrapped} data keys re-wrapped, "
        f"retired {retired}"
    )
    click.echo(f"back up the new key file now: {path}", err=True)


# runner user / runner org --------------------------------------------------------------


@cli.group("user")
def user_group() -> None:
    """User records (for namespaces and permission checks)."""


@user_group.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May manage global secrets and every namespace.")
@common_options
def user_add(name: str, admin: bool) -> None:
    """Add user NAME (an existing user is kept; --admin makes them an admin)."""
    with _directory() as users:
        created = users.add_user(name, admin=admin)
        record = users.get_user(name)
    role = " (admin)" if record is not None and record.admin else ""
    click.echo(f"{'added' if created else 'kept'} user {name}{role}")


@user_group.command("list")
@_json_option
@common_options
def user_list(as_json: bool) -> None:
    """List users, their orgs and whether they are admins.

    With --json, each user's name, admin flag, creation time and orgs.
    """
    with _directory() as users:
        records = users.users()
    rows = [[u.name, "yes" if u.admin else "", ", ".join(u.orgs)] for u in records]
    _show(records, rows, ["NAME", "ADMIN", "ORGS"], as_json=as_json, empty="no users")


@cli.group("org")
def org_group() -> None:
    """Org records and their members."""


@org_group.command("add")
@click.argument("name")
@common_options
def org_add(name: str) -> None:
    """Add org NAME (an existing org is kept)."""
    with _directory() as users:
        created = users.add_org(name)
    click.echo(f"{'added' if created else 'kept'} org {name}")


@org_group.command("add-member")
@click.argument("org")
@click.argument("user")
@common_options
def org_add_member(org: str, user: str) -> None:
    """Make USER a member of ORG (creating either record if missing).

    Members manage the org's secrets and run jobs in org:ORG.
    """
    with _directory() as users:
        added = users.add_member(org, user)
    click.echo(f"{'added' if added else 'kept'} {user} in org {org}")


@org_group.command("remove-member")
@click.argument("org")
@click.argument("user")
@common_options
def org_remove_member(org: str, user: str) -> None:
    """Remove USER from ORG."""
    with _directory() as users:
        removed = users.remove_member(org, user)
    if removed:
        click.echo(f"removed {user} from org {org}")
    else:
        click.echo(f"{user} was not a member of org {org}", err=True)


@org_group.command("list")
@_json_option
@common_options
def org_list(as_json: bool) -> None:
    """List orgs and their members."""
    with _directory() as users:
        orgs = users.orgs()
    rows = [[o.name, ", ".join(o.members)] for o in orgs]
    _show(orgs, rows, ["NAME", "MEMBERS"], as_json=as_json, empty="no orgs")
