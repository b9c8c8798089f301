"""One error hierarchy for everything a user can cause.

Every message says what went wrong and what to do next; the CLI prints it as
``error: WHAT — WHAT TO DO`` after passing it through the redactor, and exits
with ``exit_code``. Exceptions from docker, sqlite, psycopg or httpx are
translated into these at the boundary (``raise ... from exc``).

::

    RunnerError                      exit 1 unless said otherwise
    ├── UsageError                   exit 2: the command line itself is wrong
    ├── ConfigError                  settings, environment, key files
    ├── SpecError                    a batch spec is invalid (all problems, with positions)
    ├── TemplateError                a ${{ }} template failed to parse or execute
    ├── SecretError                  secret names, values, lookups
    │   ├── SecretValidationError    a name or value the store refuses
    │   ├── SecretNotFoundError      no such secret in that namespace
    │   ├── MissingSecretsError      step.env names that resolve nowhere (all at once)
    │   ├── DecryptionError          wrong key or tampered row (names the secret)
    │   └── MasterKeyError           a key file is missing, unreadable or lacks a key id
    ├── PermissionDeniedError        the actor may not do this
    ├── StoreError                   the state database failed
    ├── ExecutionError               a run could not start or a workspace failed
    │   ├── RepositoryNotFoundError
    │   ├── ImageNotFoundError
    │   └── ContainerRuntimeError    the Docker engine failed
    └── CoordinatorError             a coordinator answered with an error, or not at all
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class RunnerError(Exception):
    """Base of every error a user can cause. ``hint`` says what to do next."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} — {self.hint}"
        return self.message


class UsageError(RunnerError):
    exit_code = 2


class ConfigError(RunnerError):
    pass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, at a 1-based line and column."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class SpecError(RunnerError):
    """A spec is invalid. ``problems`` holds every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem], *, hint: str | None = None) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.column))
        count = len(self.problems)
        first = str(self.problems[0]) if self.problems else "invalid spec"
        summary = first if count == 1 else f"{first} (and {count - 1} more)"
        super().__init__(summary, hint=hint or "fix the spec and run `runner validate` again")


class TemplateError(RunnerError):
    """``offset``: where in the template text (in characters) the problem is, when known."""

    def __init__(self, message: str, *, hint: str | None = None, offset: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.offset = offset


class SecretError(RunnerError):
    pass


class SecretValidationError(SecretError):
    pass


class SecretNotFoundError(SecretError):
    pass


class MissingSecretsError(SecretError):
    pass


class DecryptionError(SecretError):
    pass


class MasterKeyError(SecretError):
    pass


class PermissionDeniedError(RunnerError):
    pass


class StoreError(RunnerError):
    pass


class ExecutionError(RunnerError):
    pass


class RepositoryNotFoundError(ExecutionError):
    pass


class ImageNotFoundError(ExecutionError):
    pass


class ContainerRuntimeError(ExecutionError):
    pass


class CoordinatorError(RunnerError):
    pass
