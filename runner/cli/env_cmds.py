"""`runner env explain`: where each step's environment will come from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from runner import env_lint
from runner.cli._app import (
    app,
    cli,
    closed_at_end,
    common_options,
    plan_local,
    remote_client,
    remote_options,
    spec_input_options,
)
from runner.cli._local_secrets import local_secret_options, read_local_secrets, say_notices
from runner.env import EnvPlan, HostEnv, plan_env
from runner.errors import UsageError
from runner.execute.job import register_values
from runner.explain import explain, render_text
from runner.plan import RepoArg
from runner.secrets.models import SecretMeta
from runner.secrets.names import DEFAULT_SCOPE
from runner.spec import BatchSpec, load_spec


@cli.group("env")
def env_group() -> None:
    """Inspect how steps' env will resolve, before anything runs."""


@env_group.command("explain")
@spec_input_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of variables.")
@click.option(
    "--lint",
    is_flag=True,
    help="Also warn (on stderr, exit 0) of secrets a step's run never mentions, images "
    "not pinned by digest for steps given secrets, and unused overrides of global secrets.",
)
@local_secret_options
@remote_options(required=False)
@common_options
def explain_cmd(
    spec_path: str,
    namespace: str | None,
    repos_root: Path | None,
    repos: tuple[RepoArg, ...],
    allow_host: tuple[str, ...],
    as_json: bool,
    lint: bool,
    secret_files: tuple[Path, ...],
    secret_names: tuple[str, ...],
    url: str | None,
    token_file: Path | None,
    ca_cert: Path | None,
) -> int:
    """Show each step's variables and their sources, without decrypting anything.

    Literals are shown in full; templates rendered for the first repository
    the spec selects (or a placeholder); secrets as their namespace and
    version, never their value, and how they are delivered when not as a
    plain variable (file, brokered for HOSTS); one-off values of --secret-file
    and --secret as `local secret (FILE)`; allowed host variables as `host`. With --url,
    the coordinator resolves against its store, with your token's permissions.
    Given repositories, the spec's queries are evaluated as `runner run` does:
    one runner cannot evaluate is refused, and one that matches nothing gets a
    warning saying why.
    """
    from runner.redact import active
    from runner.secrets import open_store

    ctx = app()
    spec = load_spec(spec_path, check_mounts=True)
    ns = namespace or ctx.default_namespace()
    if url:
        if lint:
            raise UsageError("--lint reads the local store", hint="drop --url to lint against it")
        if secret_files or secret_names:
            raise UsageError(
                "--secret-file and --secret are for local runs; a coordinator never sees them",
                hint="drop --url to explain with local secrets, or store them with "
                "`runner secret set`",
            )
        return _explain_remote(spec_path, ns, as_json, url, token_file, ca_cert)
    host = HostEnv.from_environ(allow_host, ctx.env)
    local = read_local_secrets(secret_files, secret_names)
    register_values(active(), host=host, local=local)
    store = closed_at_end(open_store(ctx.settings))
    plan = plan_env(spec, ns, store, host, local)
    say_notices(plan)
    workspace = None
    if repos_root is not None or repos:
        found = plan_local(spec, repos_root, repos)
        workspace = found[0] if found else None
    explained = explain(spec, plan, workspace)
    if lint:
        _say_lint(spec, plan, store.list(namespace=ns, scope=DEFAULT_SCOPE))
    if as_json:
        click.echo(json.dumps([e.as_json() for e in explained], indent=2))
    else:
        click.echo(render_text(spec, explained, workspace), nl=False)
    return 0


def _say_lint(spec: BatchSpec, plan: EnvPlan, namespace_secrets: Sequence[SecretMeta]) -> None:
    """Each warning as one `warning:` line on stderr; the exit code stays 0."""
    from runner.redact import active

    for warning in env_lint.lint(spec, plan, namespace_secrets):
        click.echo(f"warning: {active().redact(warning)}", err=True)


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
