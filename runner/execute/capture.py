"""Container output on its way out: redacted, split into lines, captured.

Each stream gets its own chunk-safe stream redactor; redacted bytes are then
split into lines for events and logs (long lines in pieces, so memory stays
bounded) and the first ``limit`` bytes are kept for templates and the cache.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.redact.protocol import StreamRedacting

TRUNCATION_MARKER = "\n[runner: output truncated here; the whole stream was shown and logged]\n"
MAX_LINE = 64 * 1024


class OutputSink:
    """Receives raw chunks of one stream; emits redacted lines; keeps a capped capture."""

    def __init__(
        self,
        redactor: StreamRedacting,
        on_line: Callable[[str], None],
        *,
        limit: int,
    ) -> None:
        self._redactor = redactor
        self._on_line = on_line
        self._limit = limit
        self._pending = b""
        self._captured = bytearray()
        self._truncated = False
        self.total_bytes = 0

    def feed(self, chunk: bytes) -> None:
        self._consume(self._redactor.feed(chunk))

    def close(self) -> None:
        self._consume(self._redactor.flush())
        if self._pending:
            self._emit(self._pending)
            self._pending = b""

    def _consume(self, data: bytes) -> None:
        if not data:
            return
        self.total_bytes += len(data)
        room = self._limit - len(self._captured)
        if room > 0:
            self._captured += data[:room]
        if len(data) > max(room, 0):
            self._truncated = True
        buffer = self._pending + data
        start = 0
        while True:
            nl = buffer.find(b"\n", start)
            if nl < 0:
                break
            self._emit(buffer[start:nl])
            start = nl + 1
        rest = buffer[start:]
        while len(rest) > MAX_LINE:
            self._emit(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._pending = rest

    def _emit(self, line: bytes) -> None:
        # NUL ends strings in terminals and PostgreSQL alike: show it as U+FFFD.
        text = line.rstrip(b"\r").decode("utf-8", "replace").replace("\x00", "\ufffd")
        self._on_line(text)

    @property
    def captured(self) -> str:
        # A multi-byte character cut at the limit decodes as a replacement mark.
        text = bytes(self._captured).decode("utf-8", "replace")
        return text + TRUNCATION_MARKER if self._truncated else text

    @property
    def truncated(self) -> bool:
        return self._truncated
