"""`--secret-file FILE` and `--secret NAME` of `runner run` and `runner env explain`.

The CLI reads what ``runner.secrets.local`` parses: the file (refused when
its group or others may read it), a no-echo prompt when stdin is a terminal,
else one line of stdin per ``--secret``. Values are never stored, and no
message here holds one.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from runner.cache import host_mac
from runner.env import EnvPlan
from runner.errors import SecretValidationError
from runner.secrets.local import LocalSecrets, check_private, one, parse_dotenv
from runner.secrets.names import VALUE_MAX_BYTES
from runner.secrets.value import Secret

F = TypeVar("F", bound=Callable[..., Any])

# A dotenv file of many values; far beyond it is not a secret file.
_FILE_MAX_BYTES = 1024 * 1024


def local_secret_options(func: F) -> F:
    """Adds ``secret_files`` and ``secret_names`` to a command's parameters."""
    func = click.option(
        "--secret",
        "secret_names",
        multiple=True,
        metavar="NAME",
        help="A one-off value for NAME, not stored: asked for without echo, or one line of "
        "stdin per --secret when stdin is not a terminal. Overrides a stored NAME.",
    )(func)
    return click.option(
        "--secret-file",
        "secret_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help="One-off values from a dotenv file (NAME=VALUE lines) only you can read; never "
        "stored. They override stored secrets of the same name.",
    )(func)


def read_local_secrets(
    files: tuple[Path, ...], names: tuple[str, ...], stdin: IO[str] | None = None
) -> LocalSecrets:
    """Every one-off value the flags give; a name given twice is refused."""
    found = LocalSecrets()
    for path in files:
        found = found.merged(parse_dotenv(_read_private(path), path.name))
    stream = sys.stdin if stdin is None else stdin
    prompt = stream is not None and stream.isatty()
    for name in names:
        value = _prompt(name) if prompt else _line(stream, name)
        found = found.merged(one(name, value, "prompt" if prompt else "stdin"))
    return found


def _read_private(path: Path) -> str:
    try:
        # O_NOFOLLOW: the mode checked is the file's own, not a link's target's.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise SecretValidationError(
            f"cannot read secret file {path}: {exc.strerror or type(exc).__name__}",
            hint="check the path and that it is a regular file you own (not a link)",
        ) from None
    with os.fdopen(fd, "rb") as fh:
        check_private(os.fstat(fh.fileno()).st_mode, str(path))
        data = fh.read(_FILE_MAX_BYTES + 1)
    if len(data) > _FILE_MAX_BYTES:
        raise SecretValidationError(
            f"secret file {path} is larger than 1 MiB",
            hint="keep only NAME=VALUE lines of the secrets this run needs",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SecretValidationError(
            f"{path.name}:{line}: not UTF-8 text", hint="store binary values base64-encoded"
        ) from None


def _prompt(name: str) -> Secret:
    return Secret(getpass.getpass(f"Value for {name} (this run only): ", stream=sys.stderr))


def _line(stream: IO[str] | None, name: str) -> Secret:
    text = stream.readline(VALUE_MAX_BYTES + 2) if stream is not None else ""
    if not text:
        raise SecretValidationError(
            f"stdin ended before a value for --secret {name}",
            hint="give one line of stdin per --secret, in the order of the flags",
        )
    return Secret(text.removesuffix("\n").removesuffix("\r"))


def keyed_for_cache(local: LocalSecrets, mac_key: bytes) -> LocalSecrets:
    """Each value's HMAC under the host's cache key, as allowed host variables are keyed."""
    return local.keyed(partial(host_mac, mac_key))


def say_notices(plan: EnvPlan) -> None:
    """What planning wants the user to know (a local secret hiding a stored one), on stderr."""
    for notice in plan.notices:
        click.echo(f"notice: {notice}", err=True)
