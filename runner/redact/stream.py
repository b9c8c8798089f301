"""``StreamRedactor``: redaction of output that arrives in arbitrary chunks.

A form can start in one chunk and end in a later one, so the stream keeps
back the last ``hold_back`` bytes (one less than the longest form): no match
that is still incomplete can begin before them. Bytes before that point are
final, except that a match already found may run past it; its marker is
written at once and the rest of its bytes are remembered as a "carry" that
later matches merge into. So a value split at any boundary, inside a UTF-8
character or overlapping itself, never shows, and memory stays at the
hold-back plus one chunk whatever the length of the stream.

A stream is used by one reader at a time; it is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.redact.matcher import Redactor, Span

# A UTF-8 character is at most 4 bytes: at most 3 continuation bytes to step back.
_MAX_CONTINUATION = 3


class StreamRedactor:
    """``feed`` chunks, then ``flush`` once at the end of the stream."""

    __slots__ = ("_carry", "_held", "_source")

    def __init__(self, source: Callable[[], Redactor]) -> None:
        # A callable rather than a Redactor, so a stream of the process's active
        # redactor picks up values registered after it was opened.
        self._source = source
        self._held = b""
        self._carry: Span | None = None

    @property
    def held(self) -> int:
        """How many bytes are waiting for more input."""
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        redactor = self._source()
        buf = self._held + chunk if self._held else bytes(chunk)
        cut = _char_boundary(buf, len(buf) - redactor.hold_back)
        if cut <= 0:
            self._held = buf
            return b""
        spans = redactor.spans(buf, self._carry)
        self._held = buf[cut:]
        self._carry = None
        if not spans:
            return buf[:cut] if cut < len(buf) else buf
        pieces: list[bytes] = []
        pos = 0
        for start, end, owner, emitted in spans:
            if start >= cut:
                break
            pieces.append(buf[pos:start])
            if not emitted:
                pieces.append(redactor.marker(owner))
            if end > cut:
                # Its marker is out; what remains of it is held, and the next
                # chunk's matches may extend it further.
                self._carry = (0, end - cut, owner, True)
                pos = cut
                break
            pos = end
        pieces.append(buf[pos:cut])
        return b"".join(pieces)

    def flush(self) -> bytes:
        """Everything still held, redacted; the stream can then start afresh."""
        buf, carry = self._held, self._carry
        self._held, self._carry = b"", None
        if not buf:
            return b""
        redactor = self._source()
        spans = redactor.spans(buf, carry)
        if not spans:
            return buf
        return redactor.replace(buf, spans)


def _char_boundary(buf: bytes, cut: int) -> int:
    """Move ``cut`` back to the start of a UTF-8 character, if it splits one.

    Each emitted piece of UTF-8 text then decodes on its own; for binary
    output (no lead byte within reach) the cut stays where it was.
    """
    if cut <= 0 or cut >= len(buf):
        return cut
    for back in range(_MAX_CONTINUATION + 1):
        pos = cut - back
        if pos == 0 or buf[pos] & 0xC0 != 0x80:
            return pos
    return cut
