"""One-off local secrets: values for one `runner run`, never stored.

``runner run --secret-file FILE`` reads dotenv lines and ``--secret NAME``
reads one value from a no-echo prompt or stdin (the CLI reads files,
prompts and stdin; this module only parses and checks what it is handed).
The values live in ``LocalSecrets`` for the run: planning
(``runner.env.plan_env``) gives a step's bare name a ``LocalRef`` before it
looks in the store, and the run's ``reveal`` answers that ref from here, so
they are registered with the redactor exactly as stored values are.

The dotenv form accepted::

    # a comment
    export GITHUB_TOKEN=ghp_plain      # unquoted; ` #` starts a comment
    API_KEY='single quoted, taken as written'
    KUBECONFIG="double quoted\\nwith \\"escapes\\" and
    real line breaks"

Every refusal names the source and line, never a value: a line that is not
``NAME=VALUE`` is not echoed at all, since it might be a value.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from runner.errors import SecretValidationError
from runner.records import Frozen
from runner.secrets.delivery import DEFAULT_DELIVERY, Delivery
from runner.secrets.names import check_name, check_value
from runner.secrets.value import Secret

LOCAL_NAMESPACE: Final = "local"
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN: Final = re.compile(r"\s*(?:export\s+)?([^=\s]*)\s*=[ \t]*")
# What a backslash stands for inside double quotes; any other backslash stays as written.
_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class LocalRef(Frozen):
    """A local secret as the env plan refers to it: its name, origin and cache MAC.

    It has the shape of a stored secret's ref (``id``, ``namespace``,
    ``version``), so the step loop treats both alike; it holds no value.
    """

    name: str
    origin: str  # the file's name, or "prompt"/"stdin"
    mac: str = ""  # HMAC of name and value under the host's cache key (runner.cache.host_mac)
    version: int = 0
    overrides_global: bool = False
    delivery: Delivery = DEFAULT_DELIVERY

    def __init__(
        self,
        *,
        name: str,
        origin: str,
        mac: str = "",
        version: int = 0,
        overrides_global: bool = False,
        delivery: Delivery = DEFAULT_DELIVERY,
    ) -> None:
        self._fill(name, origin, mac, version, overrides_global, delivery)

    @property
    def id(self) -> str:
        return f"{LOCAL_NAMESPACE}:{self.name}"

    @property
    def namespace(self) -> str:
        return LOCAL_NAMESPACE


@dataclass(init=False, repr=False, eq=False)
class LocalSecrets(Frozen):
    """The values of one run, by name, with where each came from. Empty by default."""

    values: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    origins: Mapping[str, str] = field(default_factory=dict)
    macs: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        values: Mapping[str, Secret] | None = None,
        origins: Mapping[str, str] | None = None,
        macs: Mapping[str, str] | None = None,
    ) -> None:
        self._fill(
            {} if values is None else values,
            {} if origins is None else origins,
            {} if macs is None else macs,
        )

    def __bool__(self) -> bool:
        return bool(self.values)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.values))

    def ref(self, env_name: str) -> LocalRef | None:
        """What a step's bare env name stands for here (``github_token`` finds GITHUB_TOKEN)."""
        name = env_name.upper()
        if name not in self.values:
            return None
        return LocalRef(name=name, origin=self.origins[name], mac=self.macs.get(name, ""))

    def value(self, ref: LocalRef) -> Secret:
        return self.values[ref.name]

    def pairs(self) -> list[tuple[str, Secret]]:
        """(name, value) pairs, for the redactor."""
        return [(name, self.values[name]) for name in self]

    def merged(self, other: LocalSecrets) -> LocalSecrets:
        """Both sets; a name given twice is refused (which value was meant is unclear)."""
        for name in self.values.keys() & other.values.keys():
            raise SecretValidationError(
                f"local secret {name} is given twice ({self.origins[name]} and "
                f"{other.origins[name]})",
                hint="give each name once, in the file or with --secret",
            )
        return LocalSecrets(
            {**self.values, **other.values},
            {**self.origins, **other.origins},
            {**self.macs, **other.macs},
        )

    def keyed(self, mac: Callable[[str, str], str]) -> LocalSecrets:
        """With ``mac(name, value)`` of each, for cache keys (a keyed hash, never the value)."""
        return replace(self, macs={n: mac(n, v.reveal()) for n, v in self.values.items()})


def one(name: str, value: Secret, origin: str) -> LocalSecrets:
    """A single ``--secret NAME`` value, checked like a stored one."""
    checked = check_name(name)
    _checked_value(value, f"local secret {checked} ({origin})")
    return LocalSecrets({checked: value}, {checked: origin})


def check_private(mode: int, where: str) -> None:
    """Refuse a secret file that its group or others may read (``st_mode`` of the file)."""
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        raise SecretValidationError(
            f"{where} can be read or written by other users (mode {stat.S_IMODE(mode):04o})",
            hint=f"run `chmod 600 {where}` so that only you can read it",
        )


def parse_dotenv(text: str, origin: str) -> LocalSecrets:
    """``NAME=VALUE`` lines of ``text`` (a file named ``origin``), checked."""
    values: dict[str, Secret] = {}
    lines: dict[str, int] = {}
    rows = text.replace("\r\n", "\n").split("\n")
    index = 0
    while index < len(rows):
        number = index + 1
        where = f"{origin}:{number}"
        row = rows[index]
        index += 1
        if not row.strip() or row.lstrip().startswith("#"):
            continue
        match = _ASSIGN.match(row)
        if match is None or not _NAME.fullmatch(match.group(1)):
            raise SecretValidationError(
                f"{where}: not a NAME=VALUE line (its text is not shown; it may hold a value)",
                hint="write one NAME=VALUE per line; quote values with spaces or line breaks",
            )
        name = _line_name(match.group(1), where)
        rest = row[match.end() :]
        if rest.startswith('"'):
            plain, index = _double_quoted(rows, index - 1, match.end() + 1, where)
        elif rest.startswith("'"):
            plain = _single_quoted(rest, where)
        else:
            plain = re.split(r"\s#", rest, maxsplit=1)[0].strip()
        if name in values:
            raise SecretValidationError(
                f"{where}: {name} is given twice (first on line {lines[name]})",
                hint="keep one of the two lines",
            )
        value = Secret(plain)
        _checked_value(value, f"{where}: {name}")
        values[name] = value
        lines[name] = number
    return LocalSecrets(values, dict.fromkeys(values, origin))


def _line_name(name: str, where: str) -> str:
    try:
        return check_name(name)
    except SecretValidationError as exc:
        raise SecretValidationError(f"{where}: {exc.message}", hint=exc.hint) from None


def _checked_value(value: Secret, what: str) -> None:
    try:
        check_value(value)
    except SecretValidationError as exc:
        raise SecretValidationError(f"{what}: {exc.message}", hint=exc.hint) from None


def _after_quote(tail: str, where: str) -> None:
    if tail.strip() and not tail.lstrip().startswith("#"):
        raise SecretValidationError(
            f"{where}: text after the closing quote (it is not shown)",
            hint="put the whole value inside the quotes, or a # comment after them",
        )


def _single_quoted(rest: str, where: str) -> str:
    end = rest.find("'", 1)
    if end < 0:
        raise SecretValidationError(
            f"{where}: the single quote is not closed on this line",
            hint="close it on the same line; use double quotes for a value over several lines",
        )
    _after_quote(rest[end + 1 :], where)
    return rest[1:end]


def _double_quoted(rows: list[str], index: int, start: int, where: str) -> tuple[str, int]:
    """The value from ``rows[index][start:]`` to its closing quote, and the next row's index."""
    out: list[str] = []
    row, pos = rows[index], start
    while True:
        if pos >= len(row):
            index += 1
            if index >= len(rows):
                raise SecretValidationError(
                    f"{where}: the double quote is never closed",
                    hint='close the value with " (a line break inside the quotes is kept)',
                )
            out.append("\n")
            row, pos = rows[index], 0
            continue
        char = row[pos]
        if char == '"':
            _after_quote(row[pos + 1 :], where)
            return "".join(out), index + 1
        if char == "\\" and pos + 1 < len(row) and row[pos + 1] in _ESCAPES:
            out.append(_ESCAPES[row[pos + 1]])
            pos += 2
            continue
        out.append(char)
        pos += 1
