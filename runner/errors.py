"""One error hierarchy for everything a user can cause.

Every message says what went wrong and what to do next; the CLI prints it as
``error: WHAT — WHAT TO DO`` after passing it through the redactor, and exits
with ``exit_code``. An error too long for one line is printed as its message,
then its ``details()`` (the hint spelled out one line per item, where a class
has them) or else its hint, indented below. The coordinator answers with ``http_status`` and the
error as JSON (``error_to_json``); its client raises the same class again
(``error_from_json``), so a remote command fails exactly as a local one.
Exceptions from docker, sqlite, psycopg or httpx are translated into these at
the boundary (``raise ... from exc``).

Every class is defined here, so ``REGISTRY`` (built by walking the tree)
holds them all without importing the rest of the package. Classes inherit
``exit_code`` and ``http_status`` from their parent unless drawn otherwise;
fields in brackets travel with the error.

::

    RunnerError                      exit 1, HTTP 400
    ├── UsageError                   exit 2: the command line itself is wrong
    ├── ConfigError                  HTTP 500: settings, environment, key files
    ├── SpecError                    HTTP 422: a batch spec is invalid [problems]
    ├── TemplateError                HTTP 422: a ${{ }} template failed [offset]
    │   └── ChangesetError           changesetTemplate could not be rendered or applied
    ├── MountPathError               a step's `mount` leaves the spec's folder or is absent
    ├── BundleError                  HTTP 422: a submitted bundle is malformed or too big
    ├── QueryError                   a repositoriesMatchingQuery runner cannot evaluate
    │                                [what, offset, unsupported]
    ├── SecretError                  HTTP 422: secret names, values, lookups
    │   ├── SecretValidationError    a name or value the store refuses
    │   ├── SecretNotFoundError      HTTP 404: no such secret in that namespace
    │   ├── MissingSecretsError      step.env names found nowhere, all at once [missing, searched]
    │   ├── StaleSecretError         HTTP 409: that version is no longer current
    │   ├── DecryptionError          wrong key or tampered row (names the secret)
    │   └── MasterKeyError           a key file is missing, unreadable or lacks a key id
    ├── PermissionDeniedError        HTTP 403: the actor may not do this
    │   └── CsrfError                a form post that did not come from our own page
    ├── StoreError                   HTTP 503: the state database failed
    │   ├── IntegrityError           a constraint refused a write
    │   ├── BusyError                another writer held the database too long; retry
    │   └── CacheError               the execution cache failed (a miss, never a failed run)
    ├── ExecutionError               a run could not start or a workspace failed
    │   ├── RepositoryNotFoundError  HTTP 404
    │   ├── ImageNotFoundError
    │   ├── ContainerRuntimeError    the Docker engine failed
    │   └── GitError                 git failed or could not start [detail]
    ├── StepFailed                   a step exited non-zero, timed out or could not start
    └── CoordinatorError             HTTP 409: a coordinator refused, or answered nonsense
        ├── NotAuthenticatedError    HTTP 401: no token, or an unknown or revoked one
        ├── TokenNotFoundError       HTTP 404
        ├── JobNotFoundError         HTTP 404
        ├── LeaseLostError           the job is no longer held under this lease
        └── CoordinatorUnavailableError  no answer at all (made by the client only)

Internal exceptions are not part of the tree; they are translated where they
are caught: ``YamlError`` (runner.spec.yamlpos) into ``SpecError``;
``CallError`` (runner.gotemplate.builtins), and ``GlobError``
(runner.spec.glob) by way of it, into ``TemplateError``; ``KeyNotLoaded`` and
``Undecryptable`` (runner.secrets.crypto) into ``MasterKeyError`` and
``DecryptionError``; ``SignInNeeded`` (runner.web.deps) into a redirect to the
sign-in page. Private ones (``_Break``, ``_TooBig``, ...) steer control flow
inside their module and never leave it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self

QUERY_DOCS_HINT: Final = (
    "see docs/query-language.md for the part of the query language runner evaluates"
)


class RunnerError(Exception):
    """Base of every error a user can cause. ``hint`` says what to do next."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 400
    # The hint when the raiser gives none.
    default_hint: ClassVar[str | None] = None
    # Made by the client itself: an answer naming it is not trusted to mean it.
    client_only: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self._fields: dict[str, Any] = {}

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} — {self.hint}"
        return self.message

    def _declare(self, **values: Any) -> None:
        """Record constructor arguments beyond message and hint, as JSON values."""
        self._fields.update(values)

    def fields(self) -> dict[str, Any]:
        """What ``_declare`` recorded: it travels with the error, beside message and hint."""
        return dict(self._fields)

    def details(self) -> tuple[str, ...]:
        """The hint spelled out one item per line, for a display with room; () when it has none.

        A display that shows the details leaves the hint out: they say the same.
        """
        return ()

    @classmethod
    def from_fields(cls, message: str, *, hint: str | None, fields: Mapping[str, Any]) -> Self:
        """The error again from its message, hint and ``fields()``.

        Scalar fields go back to the constructor as they are; a class whose fields
        hold structures rebuilds them itself.
        """
        return cls(message, hint=hint, **fields)


class UsageError(RunnerError):
    exit_code = 2


class ConfigError(RunnerError):
    http_status = 500


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

    http_status = 422
    default_hint = "fix the spec and run `runner validate` again"

    def __init__(self, problems: Sequence[Problem], *, hint: str | None = None) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.column))
        count = len(self.problems)
        first = str(self.problems[0]) if self.problems else "invalid spec"
        summary = first if count == 1 else f"{first} (and {count - 1} more)"
        super().__init__(summary, hint=hint)
        self._declare(problems=[asdict(p) for p in self.problems])

    @classmethod
    def from_fields(cls, message: str, *, hint: str | None, fields: Mapping[str, Any]) -> Self:
        problems = [
            Problem(str(p["path"]), int(p["line"]), int(p["column"]), str(p["message"]))
            for p in fields["problems"]
        ]
        return cls(problems, hint=hint)


class TemplateError(RunnerError):
    """``offset``: where in the template text (in characters) the problem is, when known."""

    http_status = 422

    def __init__(self, message: str, *, hint: str | None = None, offset: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.offset = offset
        self._declare(offset=offset)


class ChangesetError(TemplateError):
    pass


class MountPathError(RunnerError):
    pass


class BundleError(RunnerError):
    """A bundle is malformed, too large, or does not hold what its spec mounts."""

    http_status = 422


class QueryError(RunnerError):
    """A query runner cannot evaluate.

    ``what`` names the construct at fault, like ``patterntype:structural``,
    ``repo:has.topic`` or ``rev:`` (None when the query is merely empty);
    ``offset`` is where it starts in the query (0-based, None when unknown).
    ``unsupported`` is True when Sourcegraph would accept the query and only
    runner cannot evaluate it locally; False when the query is malformed.
    """

    default_hint = QUERY_DOCS_HINT

    def __init__(
        self,
        message: str,
        *,
        what: str | None = None,
        hint: str | None = None,
        offset: int | None = None,
        unsupported: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.what = what
        self.offset = offset
        self.unsupported = unsupported
        self._declare(what=what, offset=offset, unsupported=unsupported)


class SecretError(RunnerError):
    http_status = 422


class SecretValidationError(SecretError):
    pass


class SecretNotFoundError(SecretError):
    http_status = 404


@dataclass(frozen=True)
class MissingSecret:
    """A bare step.env name that resolves in no namespace searched."""

    step: int  # counted from 1
    name: str
    line: int  # of the env entry in the spec
    command: str  # the command that would create it


class MissingSecretsError(SecretError):
    """``missing``: every unresolved name; ``searched``: the namespaces looked in, in order."""

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[MissingSecret],
        searched: Sequence[str],
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.missing = tuple(missing)
        self.searched = tuple(searched)
        self._declare(missing=[asdict(m) for m in self.missing], searched=list(self.searched))

    def details(self) -> tuple[str, ...]:
        """One line per missing name: its step, its spec line, the command that creates it."""
        return tuple(
            f"step {m.step} (line {m.line}): {m.name} — create it with `{m.command}`"
            for m in self.missing
        )

    @classmethod
    def from_fields(cls, message: str, *, hint: str | None, fields: Mapping[str, Any]) -> Self:
        missing = [
            MissingSecret(int(m["step"]), str(m["name"]), int(m["line"]), str(m["command"]))
            for m in fields["missing"]
        ]
        return cls(
            message, hint=hint, missing=missing, searched=[str(n) for n in fields["searched"]]
        )


class StaleSecretError(SecretError):
    """A version was asked for that is no longer current (the secret changed or was removed)."""

    http_status = 409


class DecryptionError(SecretError):
    pass


class MasterKeyError(SecretError):
    pass


class PermissionDeniedError(RunnerError):
    http_status = 403


class CsrfError(PermissionDeniedError):
    """A form post without a matching CSRF token, or sent from another origin."""


class StoreError(RunnerError):
    http_status = 503


class IntegrityError(StoreError):
    """A constraint refused a write (a unique key exists, a reference is missing)."""


class BusyError(StoreError):
    """Another writer held the database too long, or a deadlock was broken; retry."""


class CacheError(StoreError):
    """The execution cache could not read or write an entry; callers log it and go on."""


class ExecutionError(RunnerError):
    pass


class RepositoryNotFoundError(ExecutionError):
    http_status = 404


class ImageNotFoundError(ExecutionError):
    pass


class ContainerRuntimeError(ExecutionError):
    pass


class GitError(ExecutionError):
    """Git failed or could not start. ``detail`` is git's own last word on it."""

    def __init__(self, message: str, *, detail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.detail = detail
        self._declare(detail=detail)


class StepFailed(RunnerError):
    """A step failed: its exit code, a timeout, or an error before it ran."""


class CoordinatorError(RunnerError):
    http_status = 409


class NotAuthenticatedError(CoordinatorError):
    """No token, an unknown one, or a revoked one."""

    http_status = 401


class TokenNotFoundError(CoordinatorError):
    http_status = 404


class JobNotFoundError(CoordinatorError):
    http_status = 404


class LeaseLostError(CoordinatorError):
    """The job is no longer held under this lease: reset, canceled, or claimed again."""


class CoordinatorUnavailableError(CoordinatorError):
    """No answer: connection refused, timeout, TLS failure."""

    client_only = True


def _tree(root: type[RunnerError]) -> dict[str, type[RunnerError]]:
    found: dict[str, type[RunnerError]] = {}
    todo = [root]
    while todo:
        cls = todo.pop()
        # Subclasses made elsewhere (a test's, say) are not part of the wire protocol.
        if cls.__module__ == __name__:
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


# Every class of the tree by name: how the client turns an answer back into its class.
REGISTRY: Final[Mapping[str, type[RunnerError]]] = MappingProxyType(_tree(RunnerError))


def _redact_json(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_json(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(v, redact) for v in value]
    return value


def error_to_json(exc: RunnerError, redact: Callable[[str], str]) -> dict[str, Any]:
    """``{"type", "message", "hint", "fields"}`` with every string passed through ``redact``."""
    return {
        "type": type(exc).__name__,
        "message": redact(exc.message),
        "hint": redact(exc.hint) if exc.hint else None,
        "fields": _redact_json(exc.fields(), redact),
    }


def error_from_json(data: Mapping[str, Any]) -> RunnerError:
    """The error ``error_to_json`` described; an unknown class comes back as ``CoordinatorError``.

    Raises ``KeyError``, ``TypeError`` or ``ValueError`` when ``data`` lacks a message.
    """
    message = str(data["message"])
    hint = str(data["hint"]) if data.get("hint") else None
    cls = REGISTRY.get(str(data.get("type") or ""), CoordinatorError)
    if cls.client_only:
        cls = CoordinatorError
    try:
        return cls.from_fields(message, hint=hint, fields=data.get("fields") or {})
    except (KeyError, TypeError, ValueError):
        # Fields this version cannot read (another runner version): keep the words at least.
        return CoordinatorError(message, hint=hint)
