"""Container output on its way out: masks taken out, redacted, split into lines, captured.

Each stream gets its own ``MaskFilter`` (``::add-mask::`` lines are taken out
and handed to ``on_mask`` before anything else sees them) and its own
chunk-safe stream redactor; redacted bytes are then split into lines for
events and logs (long lines in pieces, so memory stays bounded) and the
first ``limit`` bytes are kept for templates and the cache.

The cost follows bytes, not lines: each chunk is redacted once, decoded and
split in one go, and its complete lines leave in one ``on_lines`` call, which
reporters turn into events without a per-line pass of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from runner.execute.masks import MaskCommand, MaskFilter
from runner.redact.protocol import StreamRedacting

TRUNCATION_MARKER = "\n[runner: output truncated here; the whole stream was shown and logged]\n"
MAX_LINE = 64 * 1024
_CR_BEFORE_LF = re.compile("\r+\n")


class OutputSink:
    """Receives raw chunks of one stream; emits redacted lines; keeps a capped capture."""

    def __init__(
        self,
        redactor: StreamRedacting,
        on_lines: Callable[[list[str]], None],
        *,
        limit: int,
        on_mask: Callable[[MaskCommand], None] | None = None,
    ) -> None:
        self._redactor = redactor
        self._on_lines = on_lines
        self._limit = limit
        # Without a taker for masks, a command line is ordinary output.
        self._masks = MaskFilter() if on_mask is not None else None
        self._on_mask = on_mask
        self._pending = b""
        self._captured = bytearray()
        self._truncated = False
        self.total_bytes = 0

    def feed(self, chunk: bytes) -> None:
        if self._masks is None:
            self._consume(self._redactor.feed(chunk))
            return
        self._pass(self._masks.feed(chunk))

    def close(self) -> None:
        if self._masks is not None:
            self._pass(self._masks.flush())
        self._consume(self._redactor.flush())
        if self._pending:
            self._on_lines([_text(self._pending)])
            self._pending = b""

    def _pass(self, pieces: list[bytes | MaskCommand]) -> None:
        for piece in pieces:
            if isinstance(piece, bytes):
                self._consume(self._redactor.feed(piece))
            elif self._on_mask is not None:
                # Registered before the bytes after it reach the redactor.
                self._on_mask(piece)

    def _consume(self, data: bytes) -> None:
        if not data:
            return
        self.total_bytes += len(data)
        room = self._limit - len(self._captured)
        if room > 0:
            self._captured += data[:room]
        if len(data) > max(room, 0):
            self._truncated = True
        buffer = self._pending + data if self._pending else data
        last = buffer.rfind(b"\n")
        lines = _lines(buffer[:last]) if last >= 0 else []
        rest = buffer[last + 1 :]
        while len(rest) > MAX_LINE:
            lines.append(_text(rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        self._pending = rest
        if lines:
            self._on_lines(lines)

    @property
    def captured(self) -> str:
        # A multi-byte character cut at the limit decodes as a replacement mark.
        text = bytes(self._captured).decode("utf-8", "replace")
        return text + TRUNCATION_MARKER if self._truncated else text

    @property
    def truncated(self) -> bool:
        return self._truncated


def _lines(block: bytes) -> list[str]:
    """The lines of ``block`` (complete lines, without the last newline) as text."""
    text = block.decode("utf-8", "replace")
    # NUL ends strings in terminals and PostgreSQL alike: show it as U+FFFD.
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if "\r" in text:
        text = _CR_BEFORE_LF.sub("\n", text)
        lines = text.split("\n")
        lines[-1] = lines[-1].rstrip("\r")
        return lines
    return text.split("\n")


def _text(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", "replace").replace("\x00", "\ufffd")
