"""``StreamRedactor``: redaction of output that arrives in arbitrary chunks.

A form can start in one chunk and end in a later one, so the stream keeps
back the last ``hold_back`` bytes: one less than the longest form, plus how
far the short-line rule (``runner.redact.short_lines``) may look on either
side of a matched line. No match that is still incomplete, and no decision
still open, can touch the bytes before that point, so they are final; except
that a match already found may run past it: its marker is written at once and
the rest of its bytes are remembered as a "carry" that later matches merge
into; and the short lines found after a matched line already written are
remembered too ("pending"). The stream also keeps ``context`` bytes it
already wrote, which the short-line rule reads but never changes. So a value
split at any boundary, inside a UTF-8 character or overlapping itself, never
shows, the output equals a redaction of the whole, and memory stays at the
hold-back plus one chunk whatever the length of the stream.

A stream is used by one reader at a time; it is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

Span = tuple[int, int, int, bool]
"""A match: (start, end, index of the secret owning it, marker already written)."""

# A UTF-8 character is at most 4 bytes: at most 3 continuation bytes to step back.
_MAX_CONTINUATION = 3


@dataclass(frozen=True, slots=True)
class Window:
    """Where a stream stands in the data it asks a matcher about."""

    start: int  # the bytes before were written already: context, read only
    stop: int  # the stream writes up to here now
    final: bool  # the data ends the output
    carry: Span | None = None  # a span begun before ``start``, its marker written
    pending: Sequence[Span] = ()  # spans found earlier that cannot be found again


class SpanMatcher(Protocol):
    """What a stream needs of a matcher (``runner.redact.matcher.Redactor`` has it)."""

    @property
    def hold_back(self) -> int: ...

    @property
    def context(self) -> int: ...

    def stream_spans(self, data: bytes, window: Window) -> tuple[list[Span], list[Span]]: ...

    def marker(self, owner: int) -> bytes: ...


def splice(
    data: bytes,
    spans: Sequence[Span],
    marker: Callable[[int], bytes],
    start: int = 0,
    stop: int | None = None,
) -> tuple[bytes, Span | None]:
    """``data[start:stop]`` with each span replaced by its marker.

    Also returns the span still open at ``stop`` (its marker written, the
    rest of its bytes left out), or ``None``.
    """
    end_at = len(data) if stop is None else stop
    pieces: list[bytes] = []
    pos = start
    for begin, end, owner, emitted in spans:
        if begin >= end_at:
            break
        pieces.append(data[pos:begin])
        if not emitted:
            pieces.append(marker(owner))
        if end > end_at:
            return b"".join(pieces), (begin, end, owner, True)
        pos = end
    pieces.append(data[pos:end_at])
    return b"".join(pieces), None


class StreamRedactor:
    """``feed`` chunks, then ``flush`` once at the end of the stream."""

    __slots__ = ("_carry", "_context", "_held", "_pending", "_source")

    def __init__(self, source: Callable[[], SpanMatcher]) -> None:
        # A callable rather than a Redactor, so a stream of the process's active
        # redactor picks up values registered after it was opened.
        self._source = source
        self._context = b""
        self._held = b""
        # The open span: how many of the held bytes it still covers, and its owner.
        self._carry: tuple[int, int] | None = None
        # Spans in the held bytes that will not be found again: (start, end, owner).
        self._pending: tuple[tuple[int, int, int], ...] = ()

    @property
    def held(self) -> int:
        """How many bytes are waiting for more input."""
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        matcher = self._source()
        begin = len(self._context)
        data = self._context + self._held + chunk if begin or self._held else bytes(chunk)
        cut = _char_boundary(data, len(data) - matcher.hold_back)
        if cut <= begin:
            self._held = data[begin:]
            return b""
        window = Window(begin, cut, False, self._open(begin), self._known(begin))
        spans, later = matcher.stream_spans(data, window)
        out, still_open = splice(data, spans, matcher.marker, begin, cut)
        keep = matcher.context
        self._context = data[max(0, cut - keep) : cut] if keep else b""
        self._held = data[cut:]
        self._carry = None if still_open is None else (still_open[1] - cut, still_open[2])
        self._pending = tuple((b - cut, e - cut, owner) for b, e, owner, _ in later)
        return out

    def flush(self) -> bytes:
        """Everything still held, redacted; the stream can then start afresh."""
        begin = len(self._context)
        data = self._context + self._held
        carry, pending = self._open(begin), self._known(begin)
        self._context, self._held, self._carry, self._pending = b"", b"", None, ()
        if len(data) == begin:
            return b""
        matcher = self._source()
        spans, _ = matcher.stream_spans(data, Window(begin, len(data), True, carry, pending))
        return splice(data, spans, matcher.marker, begin)[0]

    def _open(self, begin: int) -> Span | None:
        if self._carry is None:
            return None
        remaining, owner = self._carry
        return (begin, begin + remaining, owner, True)

    def _known(self, begin: int) -> list[Span]:
        return [(begin + b, begin + e, owner, False) for b, e, owner in self._pending]


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
