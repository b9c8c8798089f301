"""`runner namespace set|show|clear`: what a coordinator requires of a namespace's jobs.

With ``--url`` the command goes through the coordinator's API, where only
admins may change a policy (and whoever may act in a namespace may see it).
Without it, it works on the local database, as the coordinator's operator
(like `runner user add`): run it where `runner server` keeps its state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from runner.cli._app import app, cli, common_options, login_name
from runner.cli._limits import JobLimits, namespace_limit_options
from runner.cli._options import Remote, remote_flags
from runner.sandbox.policy import ISOLATIONS, NETWORK_POLICIES, HostPort
from runner.sandbox.tighten import NamespacePolicy, describe

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@cli.group("namespace")
def namespace_group() -> None:
    """Sandbox policies per namespace, on a coordinator (admins set them)."""


@contextmanager
def _local_store() -> Iterator[Any]:
    from runner.db import connect
    from runner.queue.policies import SqlPolicyStore

    with connect(app().settings.effective_database_url) as db:
        yield SqlPolicyStore(db)


def _describe(shown: dict[str, Any]) -> str:
    """The sandbox policy in one line, then the executor labels required."""
    text = describe(shown)
    labels = shown.get("require_labels") or []
    if not labels:
        return text
    required = f"executor labels {', '.join(labels)}"
    return required if text == "no requirements" else f"{text}, {required}"


@namespace_group.command("set")
@click.argument("namespace", metavar="NS")
@click.option("--network", type=click.Choice(NETWORK_POLICIES), help="Network policy required.")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Under --network allow, a host the jobs may reach (repeatable).",
)
@click.option("--isolation", type=click.Choice(ISOLATIONS), help="Isolation level required.")
@click.option(
    "--require-label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="A label every executor of NS's jobs must have (repeatable); applies to jobs "
    "queued from now on.",
)
@namespace_limit_options
@remote_flags(required=False)
@_json_option
@common_options
def namespace_set(
    namespace: str,
    network: Any,
    allow_hosts: tuple[str, ...],
    isolation: Any,
    labels: tuple[str, ...],
    job_limits: JobLimits,
    remote: Remote | None,
    as_json: bool,
) -> None:
    """Require NS's jobs to run under this policy; it replaces the one set before.

    Executors run each job under their own policy tightened by this one: the
    stricter network (none < allow < open; allow-lists intersect), gvisor over
    runc, the smaller timeout and cap. Claims carry it from the next one on.
    """
    from runner.queue.policies import policy_namespace
    from runner.queue.routing import parse_labels

    ns = str(policy_namespace(namespace))
    required = parse_labels(labels, flag="--require-label")
    policy = NamespacePolicy(
        isolation=isolation,
        network=network,
        allow_hosts=tuple(HostPort.parse(h) for h in allow_hosts),
        job_timeout_s=job_limits.job_timeout_s,
        disk_cap_bytes=job_limits.disk_cap_bytes,
    )
    if remote is not None:
        with remote.client() as client:
            shown = client.namespace_policy_set(ns, policy, labels=required)
    else:
        with _local_store() as store:
            actor = login_name(app().env)
            shown = store.set(ns, policy, actor=actor, labels=required).to_json()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
    else:
        click.echo(f"set the sandbox policy of {ns}: {_describe(shown)}")


@namespace_group.command("show")
@click.argument("namespace", metavar="NS")
@remote_flags(required=False)
@_json_option
@common_options
def namespace_show(namespace: str, remote: Remote | None, as_json: bool) -> None:
    """What NS's jobs must run under, and who set it when."""
    from runner.queue.policies import policy_namespace

    ns = str(policy_namespace(namespace))
    if remote is not None:
        with remote.client() as client:
            shown = client.namespace_policy(ns)
    else:
        with _local_store() as store:
            shown = store.get(ns).to_json()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(f"{ns}: {_describe(shown)}")
    if shown.get("updated_by"):
        click.echo(f"  set by {shown['updated_by']} at {shown['updated_at']}")


@namespace_group.command("clear")
@click.argument("namespace", metavar="NS")
@remote_flags(required=False)
@common_options
def namespace_clear(namespace: str, remote: Remote | None) -> None:
    """Drop NS's policy: its jobs run under each executor's own policy again."""
    from runner.queue.policies import policy_namespace

    ns = str(policy_namespace(namespace))
    if remote is not None:
        with remote.client() as client:
            cleared = bool(client.namespace_policy_clear(ns)["cleared"])
    else:
        with _local_store() as store:
            cleared = store.clear(ns)
    if cleared:
        click.echo(f"cleared the sandbox policy of {ns}")
    else:
        click.echo(f"{ns} had no sandbox policy", err=True)
