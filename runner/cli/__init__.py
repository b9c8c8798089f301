"""The ``runner`` command line: parsing, signals, and wiring objects together."""

from __future__ import annotations

import gc
import sys
import traceback
from collections.abc import Sequence

import click

from runner.cli._app import cli
from runner.cli._text import format_error, stderr_width
from runner.errors import RunnerError

# Each command's module is loaded when the command is called (runner.cli.commands).


def _redact_text(text: str) -> str:
    """Error text passes through the process's active redactor before it is shown."""
    from runner.redact import active

    return active().redact(text)


def _fail(message: str, code: int, *, hint: str | None = None, details: Sequence[str] = ()) -> int:
    # Redacted before wrapping: a value split over two lines would escape the redactor.
    text = format_error(
        _redact_text(message),
        _redact_text(hint) if hint else None,
        [_redact_text(d) for d in details],
        width=stderr_width(),
    )
    sys.stderr.write(text + "\n")
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
        usage_hint = None
        if exc.ctx is not None:
            usage_hint = f"see `{exc.ctx.command_path} --help`"
        return _fail(exc.format_message(), 2, hint=usage_hint)
    except click.exceptions.Abort:
        return _fail("interrupted", 130)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except RunnerError as exc:
        if debug:
            sys.stderr.write(_redact_text(traceback.format_exc()))
        return _fail(exc.message, exc.exit_code, hint=exc.hint, details=exc.details())
    except click.exceptions.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except Exception as exc:
        if debug:
            sys.stderr.write(_redact_text(traceback.format_exc()))
        return _fail(
            f"internal error: {type(exc).__name__}: {exc}",
            1,
            hint="rerun with --debug and report it",
        )
    return rv if isinstance(rv, int) else 0


def main() -> None:
    code = run_cli()
    # The process ends here: objects still alive need no collection, and the one the
    # interpreter makes at exit walks every object the command loaded (a third of a
    # `runner run`'s own exit time). Frozen, they are left to the process's end.
    gc.freeze()
    sys.exit(code)
