"""What the store accepts as a secret name, a scope and a value."""

from __future__ import annotations

import re
from typing import Final, Literal

from runner.errors import SecretValidationError
from runner.secrets.value import Secret

Scope = Literal["batches", "codeintel"]
SCOPES: Final[tuple[Scope, ...]] = ("batches", "codeintel")
DEFAULT_SCOPE: Final[Scope] = "batches"

NAME_MAX = 128
VALUE_MIN_CHARS = 8
VALUE_MAX_BYTES = 48 * 1024

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")

# Variables that change how programs are loaded or run: a secret by one of
# these names would let whoever sets it take over every step that sees it.
RESERVED_NAMES: Final[frozenset[str]] = frozenset(
    {
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "BASH_ENV",
        "ENV",
        "PATH",
        "HOME",
        "SHELL",
        "IFS",
        "SHELLOPTS",
        "PROMPT_COMMAND",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "RUBYOPT",
        "NODE_OPTIONS",
        "JAVA_TOOL_OPTIONS",
        "GIT_SSH_COMMAND",
        "GIT_CONFIG_GLOBAL",
    }
)
RESERVED_PREFIX: Final = "RUNNER_"


def check_name(text: str) -> str:
    """``text`` when it is a valid secret name as typed, else ``SecretValidationError``.

    Names the user types (the CLI, the API, the web form) must already be upper
    case: a name is never changed silently, so ``lower_case`` is refused with
    the suggestion ``LOWER_CASE`` rather than stored under that name.
    """
    name = normalize_name(text)
    if name != text:
        raise SecretValidationError(
            f"secret name {text!r} is not upper case", hint=f"did you mean {name}?"
        )
    return name


def normalize_name(text: str) -> str:
    """The upper-case name ``text`` stands for, or ``SecretValidationError`` saying what to change.

    Only where a name is looked up on the user's behalf: a step's bare env
    NAME finds the secret NAME in upper case. Names to store go through
    ``check_name``.
    """
    name = text.upper()
    if not name:
        raise SecretValidationError(
            "a secret name is empty", hint="name it like GITHUB_TOKEN: A-Z, 0-9 and _"
        )
    if len(name) > NAME_MAX:
        raise SecretValidationError(
            f"secret name {name[:32]}… is {len(name)} characters long",
            hint=f"use at most {NAME_MAX} characters",
        )
    # Checked before upper-casing too: "ſ".upper() is "S", and such look-alikes
    # must not become a valid (or a reserved) name.
    if not text.isascii() or not _NAME_RE.fullmatch(name):
        raise SecretValidationError(
            f"invalid secret name {text!r}",
            hint="use letters, digits and _, starting with a letter (like GITHUB_TOKEN)",
        )
    if name.startswith(RESERVED_PREFIX):
        raise SecretValidationError(
            f"secret name {name} starts with {RESERVED_PREFIX}",
            hint=f"names starting with {RESERVED_PREFIX} are reserved for runner; pick another",
        )
    if name in RESERVED_NAMES:
        raise SecretValidationError(
            f"secret name {name} is refused: it changes how programs are loaded or run",
            hint="pick another name and refer to it from the step's env",
        )
    return name


def check_scope(text: str) -> Scope:
    if text not in SCOPES:
        raise SecretValidationError(
            f"unknown secret scope {text!r}", hint=f"use one of: {', '.join(SCOPES)}"
        )
    return text


def check_value(value: Secret) -> None:
    """Refuse values that cannot be stored or redacted safely. Never shows the value."""
    plain = value.reveal()
    try:
        size = len(plain.encode("utf-8"))
    except UnicodeEncodeError:
        raise SecretValidationError(
            "secret values must be UTF-8 text", hint="store binary data base64-encoded"
        ) from None
    if "\x00" in plain:
        raise SecretValidationError(
            "secret values must not contain NUL characters",
            hint="store binary data base64-encoded",
        )
    if len(plain) < VALUE_MIN_CHARS:
        raise SecretValidationError(
            f"secret values must be at least {VALUE_MIN_CHARS} characters",
            hint="a shorter value cannot be redacted safely",
        )
    if size > VALUE_MAX_BYTES:
        raise SecretValidationError(
            f"secret values must be at most 48 KiB (this one is {size} bytes)",
            hint="store large material elsewhere and put a short token in the secret",
        )
