"""Masks a step adds at run time: ``::add-mask::VALUE`` lines in its output.

A step that mints a credential (a GitHub App token, a short-lived cloud key)
prints ``::add-mask::VALUE``, or ``::add-mask name=NAME::VALUE``, on a line of
its own on stdout or stderr. From then on the job's redactor hides VALUE as
``[REDACTED:MASK]`` (or ``[REDACTED:NAME]``) wherever runner would show or
keep it. The command line itself is never shown, logged or kept: it is taken
out of the stream before the redactor, the events and the step's captured
output see it.

``MaskFilter`` does that for one stream, chunk by chunk. A chunk can end in
the middle of a command, so the start of a line that could still become one
(``::add-m``) is held back until the next byte decides, and a command is held
until its newline: its value never passes in pieces. Everything else passes
at once. As in GitHub's workflow commands, ``%25``, ``%0D`` and ``%0A`` in a
value stand for ``%``, CR and LF; the value is masked both as printed and as
read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runner.secrets.names import VALUE_MIN_CHARS

PREFIX = b"::add-mask"
DEFAULT_NAME = "MASK"
# Longer than any stored secret may be (48 KiB): a longer command is dropped whole.
MAX_COMMAND_BYTES = 64 * 1024
_LINE_PREFIX = b"\n" + PREFIX
_AFTER_PREFIX = (ord(" "), ord(":"))
# The same characters as the markers the diff check reads back (``[REDACTED:NAME]``).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ESCAPES = {"%25": "%", "%0D": "\r", "%0A": "\n"}
_ESCAPE = re.compile("|".join(_ESCAPES))


@dataclass(frozen=True, slots=True, repr=False)
class MaskCommand:
    """One ``::add-mask`` line: the values to register, or why none is (``problem``)."""

    name: str
    values: tuple[str, ...] = ()
    problem: str | None = None
    note: str | None = None  # a warning that does not stop the mask (a name not usable)

    def __repr__(self) -> str:  # never the values
        values = len(self.values)
        return f"MaskCommand(name={self.name!r}, values={values}, problem={self.problem!r})"


def parse_command(line: bytes) -> MaskCommand:
    """The command on ``line`` (without its newline), which starts with ``PREFIX``.

    Messages never quote the value, nor a name that could be one.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    rest = line[len(PREFIX) :]
    if rest.startswith(b"::"):
        props, data = b"", rest[2:]
    else:
        end = rest.find(b"::")
        if not rest.startswith(b" ") or end < 0:
            return MaskCommand(
                DEFAULT_NAME,
                problem="a line starting with ::add-mask was not a mask command and was not "
                "shown; write it as ::add-mask::VALUE or ::add-mask name=NAME::VALUE",
            )
        props, data = rest[1:end], rest[end + 2 :]
    try:
        printed = data.decode("utf-8")
        properties = props.decode("utf-8")
    except UnicodeDecodeError:
        return MaskCommand(
            DEFAULT_NAME, problem="a mask that is not UTF-8 text was refused; print it as text"
        )
    name, note = _name_of(properties)
    value = _ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], printed)
    if not value.strip():
        return MaskCommand(name, problem="an empty mask was refused; print the value to mask")
    if len(value) < VALUE_MIN_CHARS:
        return MaskCommand(
            name,
            problem=f"a mask shorter than {VALUE_MIN_CHARS} characters was refused: it cannot be "
            "redacted without redacting ordinary text; mask a longer value",
        )
    values = (value,) if value == printed else (value, printed)
    return MaskCommand(name, values, note=note)


def _name_of(properties: str) -> tuple[str, str | None]:
    name = DEFAULT_NAME
    for item in properties.split(","):
        key, _, given = item.strip().partition("=")
        if key.strip() != "name":
            continue  # other properties mean nothing to a mask
        given = given.strip()
        if not _NAME.fullmatch(given):
            return DEFAULT_NAME, (
                "a mask's name must be letters, digits and underscores (up to 64); "
                f"it is named {DEFAULT_NAME}"
            )
        name = given
    return name, None


Piece = bytes | MaskCommand


class MaskFilter:
    """Takes the ``::add-mask`` lines out of one stream of raw output.

    ``feed`` returns, in order, the bytes to pass on and the commands found;
    ``flush`` ends the stream (a command on its last line counts without a
    newline). Only the start of a line that may be a command is held back.
    """

    __slots__ = ("_held", "_line_start", "_skipping")

    def __init__(self) -> None:
        self._held = b""  # the start of a line that is, or may become, a command
        self._line_start = True  # the next byte fed starts a line
        self._skipping = False  # inside a command too long to keep: dropped to its newline

    def feed(self, chunk: bytes) -> list[Piece]:
        if not chunk:
            return []
        data = self._held + chunk if self._held else chunk
        self._held = b""
        pieces: list[Piece] = []
        pos = 0
        at_start = self._line_start
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._skipping = False
            pos, at_start = newline + 1, True
        while True:
            start = _next_command(data, pos, at_start)
            if start < 0:
                break
            end = data.find(b"\n", start)
            if end < 0:
                break  # its newline is still to come: held below
            if start > pos:
                pieces.append(data[pos:start])
            pieces.append(parse_command(data[start:end]))
            pos, at_start = end + 1, True
        self._hold_tail(data, pos, at_start, pieces)
        return pieces

    def flush(self) -> list[Piece]:
        held, skipping = self._held, self._skipping
        self._held, self._line_start, self._skipping = b"", True, False
        if skipping or not held:
            return []
        if _is_command(held, 0):
            return [parse_command(held)]
        return [held]  # the start of ``::add-mask`` and nothing more: ordinary output

    def _hold_tail(self, data: bytes, pos: int, at_start: bool, pieces: list[Piece]) -> None:
        """Pass on ``data[pos:]`` but its last line, if that is or may become a command."""
        newline = data.rfind(b"\n", pos)
        tail = newline + 1 if newline >= 0 else (pos if at_start else -1)
        if 0 <= tail < len(data) and _may_be_command(data, tail):
            if tail > pos:
                pieces.append(data[pos:tail])
            if len(data) - tail > MAX_COMMAND_BYTES:
                self._skipping = True
                pieces.append(
                    MaskCommand(
                        DEFAULT_NAME,
                        problem=f"a mask command longer than {MAX_COMMAND_BYTES // 1024} KiB "
                        "was refused and not shown",
                    )
                )
            else:
                self._held = data[tail:]
            self._line_start = True
            return
        if pos < len(data):
            pieces.append(data[pos:])
            self._line_start = data.endswith(b"\n")
        else:
            self._line_start = at_start


def _is_command(data: bytes, at: int) -> bool:
    after = at + len(PREFIX)
    return data.startswith(PREFIX, at) and len(data) > after and data[after] in _AFTER_PREFIX


def _may_be_command(data: bytes, at: int) -> bool:
    """Whether the line starting at ``at`` (and running to the end) is or may become one."""
    rest = len(data) - at
    if rest <= len(PREFIX):
        return PREFIX.startswith(data[at:])
    return _is_command(data, at)


def _next_command(data: bytes, pos: int, at_start: bool) -> int:
    """Where the next line holding a command starts, at ``pos`` or after; -1 if none."""
    if at_start and _is_command(data, pos):
        return pos
    found = data.find(_LINE_PREFIX, pos)
    while found >= 0:
        if _is_command(data, found + 1):
            return found + 1
        found = data.find(_LINE_PREFIX, found + 1)
    return -1
