"""What every command shares: the context object and the common flags.

This layer is the only reader of ``os.environ``; it turns flags and variables
into a frozen ``Settings`` and passes it down.
"""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import click

from runner import __version__
from runner.cli._text import headline_and_details, stderr_width
from runner.cli.commands import load_command, register_commands
from runner.config import LogFormat, Settings, settings_from_env
from runner.errors import UsageError
from runner.log import configure_logging
from runner.plan import NoMatch, RepoArg, Workspace, discover, parse_repo_arg, plan_workspaces
from runner.spec import BatchSpec

F = TypeVar("F", bound=Callable[..., Any])


class _LazyGroup(click.Group):
    """Loads a command's module when the command is looked up (``runner.cli.commands``)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            load_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        register_commands()
        return super().list_commands(ctx)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="runner")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run Sourcegraph-style batch specs in containers, with layered secrets.

    Results go to stdout; logs, progress and errors to stderr.
    Exit codes: 0 success, 1 the command could not do its work, 2 usage error,
    3 some workspaces failed, 130 interrupted.
    """
    ctx.obj = App(settings=settings_from_env(os.environ), env=os.environ)


@dataclass(frozen=True)
class App:
    """Handed to every command through ``click.Context.obj``."""

    settings: Settings
    env: Mapping[str, str]

    def default_namespace(self) -> str:
        return f"user:{login_name(self.env)}"


def login_name(env: Mapping[str, str]) -> str:
    for key in ("RUNNER_USER", "LOGNAME", "USER"):
        if env.get(key):
            return env[key]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def common_options(func: F) -> F:
    """Add ``-v``, ``--debug`` and ``--log-format`` and configure logging.

    They sit on every command (not only the group) so that
    ``runner run spec.yaml --debug`` works as users type it.
    """

    @click.option("-v", "--verbose", count=True, help="More log detail (-vv includes libraries).")
    @click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
    @click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default=None,
        help="Log lines on stderr as text or JSON (default: text on a terminal, else JSON).",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any, verbose: int, debug: bool, log_format: str | None, **kwargs: Any
    ) -> Any:
        ctx = click.get_current_context()
        parent = ctx.find_object(App)
        base = parent.settings if parent else settings_from_env(os.environ)
        fmt = cast(LogFormat, log_format or base.log_format)
        settings = base.with_changes(
            verbose=max(verbose, base.verbose), debug=debug or base.debug, log_format=fmt
        )
        ctx.obj = App(settings=settings, env=parent.env if parent else os.environ)
        configure_logging(fmt=settings.log_format, verbose=settings.verbose)
        return ctx.invoke(func, *args, **kwargs)

    return cast(F, wrapper)


def app() -> App:
    obj = click.get_current_context().find_object(App)
    if obj is None:  # pragma: no cover - every command is wrapped by common_options
        raise UsageError("internal: command ran without its context")
    return obj


class _Closes(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closes)


def closed_at_end(resource: C) -> C:
    """``resource``, closed when the command ends (failed or not).

    A database above all: SQLite folds its write-ahead log back into the
    database, and removes it, when its last connection closes. A process that
    ends with the connection open leaves the log to grow, and the next command
    to open the database reads all of it again first (about 8 ms for the 4 MB
    it reaches; a fully cached `runner run` added 64 KB to it each time).
    """
    click.get_current_context().call_on_close(resource.close)
    return resource


def namespace_from_flags(
    *,
    global_: bool = False,
    org: str | None = None,
    user: str | None = None,
    namespace: str | None = None,
    required: bool = True,
) -> str | None:
    """Turn ``--global`` / ``--org`` / ``--user`` / ``--namespace`` into one namespace."""
    given = [
        ns
        for ns in (
            "global" if global_ else None,
            f"org:{org}" if org else None,
            f"user:{user}" if user else None,
            namespace,
        )
        if ns
    ]
    if len(given) > 1:
        raise UsageError(
            "give one namespace", hint="use only one of --global, --org, --user or --namespace"
        )
    if not given:
        if required:
            raise UsageError(
                "no namespace given", hint="add --global, --org ORG, --user USER or --namespace NS"
            )
        return None
    return given[0]


class RepoArgType(click.ParamType[RepoArg, "str | RepoArg"]):
    """``--repo [NAME=]PATH`` into a ``RepoArg`` (see ``runner.plan.parse_repo_arg``)."""

    name = "[NAME=]PATH"

    def convert(
        self, value: str | RepoArg, param: click.Parameter | None, ctx: click.Context | None
    ) -> RepoArg:
        if isinstance(value, RepoArg):
            return value
        try:
            return parse_repo_arg(value)
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


def spec_input_options(func: F) -> F:
    """SPEC, --namespace, --repos-root, --repo and --allow-host-env (run and explain)."""
    for option in reversed(
        [
            click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False)),
            click.option(
                "--namespace", help="Namespace whose secrets the steps use (default: user:LOGIN)."
            ),
            click.option(
                "--repos-root",
                type=click.Path(file_okay=False, path_type=Path),
                help="Folder of local git repositories, each named by its path below it: "
                "DIR/github.com/org/repo is github.com/org/repo.",
            ),
            click.option(
                "--repo",
                "repos",
                multiple=True,
                type=RepoArgType(),
                help="A local repository (repeatable). PATH is named by its path below "
                "--repos-root if it lies there, else by its origin remote "
                "(https://github.com/org/repo.git and git@github.com:org/repo.git are "
                "github.com/org/repo), else by its folder. NAME=PATH names it yourself; a "
                "PATH holding = is read whole when it starts with / or ./.",
            ),
            click.option(
                "--allow-host-env",
                "allow_host",
                multiple=True,
                metavar="NAME",
                help="Let a bare NAME (or PREFIX_*) with no secret come from this shell's "
                "environment.",
            ),
        ]
    ):
        func = option(func)
    return func


def plan_local(
    spec: BatchSpec, repos_root: Path | None, repos: Sequence[Path | RepoArg]
) -> list[Workspace]:
    """The spec's workspaces over local repositories, warning of each query that matched nothing.

    A warning is one line on stderr, then the likely reasons indented below it.
    """
    from runner.redact import active

    no_match: list[NoMatch] = []
    workspaces = plan_workspaces(spec, discover(repos_root, repos), no_match=no_match)
    redact = active().redact
    for item in no_match:
        text = headline_and_details(
            "warning: ",
            redact(item.headline()),
            [redact(reason) for reason in item.reasons],
            width=stderr_width(),
        )
        sys.stderr.write(text + "\n")
    return workspaces


def remote_options(*, required: bool = True) -> Callable[[F], F]:
    """``--url``, ``--token-file`` and ``--ca-cert``: talk to a coordinator.

    Where they are optional (``secret``, ``env explain``), giving ``--url``
    switches the command from the local store to the coordinator.
    """

    def decorate(func: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--url",
                    envvar="RUNNER_URL",
                    required=required,
                    help="The coordinator, such as https://runner.example.com (or RUNNER_URL).",
                ),
                click.option(
                    "--token-file",
                    envvar="RUNNER_TOKEN_FILE",
                    required=required,
                    type=click.Path(dir_okay=False, path_type=Path),
                    help="File holding an API token (or RUNNER_TOKEN_FILE).",
                ),
                click.option(
                    "--ca-cert",
                    envvar="RUNNER_CA_CERT",
                    type=click.Path(dir_okay=False, path_type=Path),
                    help="CA bundle that signed the coordinator's certificate (or RUNNER_CA_CERT).",
                ),
            ]
        ):
            func = option(func)
        return func

    return decorate


def remote_client(url: str, token_file: Path | None, ca_cert: Path | None = None) -> Any:
    """A client for ``--url``/``--token-file``; the token is redacted from every log line."""
    from runner.queue.client import CoordinatorClient, read_token_file
    from runner.redact import active

    if token_file is None:
        raise UsageError(
            "--url needs --token-file", hint="pass --token-file FILE with an API token"
        )
    token = read_token_file(token_file)
    active().register("RUNNER_API_TOKEN", token)
    verify: bool | str = str(ca_cert) if ca_cert is not None else True
    return CoordinatorClient(url=url, token=token, verify=verify)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, for stdout."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )
