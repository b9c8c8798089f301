"""`runner env explain`: where each step's environment will come from."""

from __future__ import annotations

import json
from pathlib import Path

import click

from runner.cli._app import (
    app,
    cli,
    common_options,
    plan_local,
    remote_client,
    remote_options,
    spec_input_options,
)
from runner.env import HostEnv, plan_env
from runner.explain import explain, render_text
from runner.plan import RepoArg
from runner.spec import load_spec


@cli.group("env")
def env_group() -> None:
    """Inspect how steps' env will resolve, before anything runs."""


@env_group.command("explain")
@spec_input_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of variables.")
@remote_options(required=False)
@common_options
def explain_cmd(
    spec_path: str,
    namespace: str | None,
    repos_root: Path | None,
    repos: tuple[RepoArg, ...],
    allow_host: tuple[str, ...],
    as_json: bool,
    url: str | None,
    token_file: Path | None,
    ca_cert: Path | None,
) -> int:
    """Show each step's variables and their sources, without decrypting anything.

    Literals are shown in full; templates rendered for the first repository
    the spec selects (or a placeholder); secrets as their namespace and
    version, never their value; allowed host variables as `host`. With --url,
    the coordinator resolves against its store, with your token's permissions.
    Given repositories, the spec's queries are evaluated as `runner run` does:
    one runner cannot evaluate is refused, and one that matches nothing gets a
    warning saying why.
    """
    from runner.secrets import open_store

    ctx = app()
    spec = load_spec(spec_path, check_mounts=True)
    ns = namespace or ctx.default_namespace()
    if url:
        return _explain_remote(spec_path, ns, as_json, url, token_file, ca_cert)
    host = HostEnv.from_environ(allow_host, ctx.env)
    store = open_store(ctx.settings)
    plan = plan_env(spec, ns, store, host)
    workspace = None
    if repos_root is not None or repos:
        found = plan_local(spec, repos_root, repos)
        workspace = found[0] if found else None
    explained = explain(spec, plan, workspace)
    if as_json:
        click.echo(json.dumps([e.as_json() for e in explained], indent=2))
    else:
        click.echo(render_text(spec, explained, workspace), nl=False)
    return 0


def _explain_remote(
    spec_path: str,
    namespace: str,
    as_json: bool,
    url: str,
    token_file: Path | None,
    ca_cert: Path | None,
) -> int:
    from runner.queue.bundle import Bundle

    bundle = Bundle.from_spec_file(spec_path)
    with remote_client(url, token_file, ca_cert) as client:
        answer = client.env_explain(bundle, namespace)
    if as_json:
        click.echo(json.dumps(answer["variables"], indent=2))
    else:
        click.echo(answer["text"], nl=not str(answer["text"]).endswith("\n"))
    return 0
