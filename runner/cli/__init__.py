"""The ``runner`` command line: parsing, signals, and wiring objects together."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from runner import __version__
from runner.cli._app import App
from runner.config import settings_from_env
from runner.errors import RunnerError


def _redact_text(text: str) -> str:
    """Error text passes through the process's active redactor before it is shown."""
    from runner.redact import active

    return active().redact(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="runner")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run Sourcegraph-style batch specs in containers, with layered secrets.

    Results go to stdout; logs, progress and errors to stderr.
    Exit codes: 0 success, 1 the command could not do its work, 2 usage error,
    3 some workspaces failed, 130 interrupted.
    """
    ctx.obj = App(settings=settings_from_env(os.environ), env=os.environ)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"error: {_redact_text(message)}\n")
    sys.stderr.flush()
    return code


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="runner", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" — see `{exc.ctx.command_path} --help`"
        return _fail(f"{exc.format_message()}{hint}", 2)
    except click.exceptions.Abort:
        return _fail("interrupted", 130)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except RunnerError as exc:
        if debug:
            sys.stderr.write(_redact_text(traceback.format_exc()))
        return _fail(str(exc), exc.exit_code)
    except click.exceptions.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except Exception as exc:
        if debug:
            sys.stderr.write(_redact_text(traceback.format_exc()))
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} — rerun with --debug and report it", 1
        )
    return rv if isinstance(rv, int) else 0


def main() -> None:
    sys.exit(run_cli())


from runner.cli import commands as _commands  # noqa: E402,F401  (registers commands)
