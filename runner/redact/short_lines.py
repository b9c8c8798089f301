"""Short lines of a multi-line value, masked where they stand next to its other lines.

A line shorter than ``MIN_FORM_CHARS`` cannot be a form of its own: it would
match ordinary words anywhere (the last line of a PEM key can be ``Zg==``).
The rule: when a long line of a value matched, the value's short lines that
come next to it are masked where they stand, and nowhere else. Line by line,
going away from the matched line:

- between two lines of the value there is a gap of 1 to ``MAX_GAP`` blank
  bytes (any line end: LF, CRLF, CR, CR CR LF; trailing spaces or tabs; blank
  lines; or the single space of an unquoted ``echo $VALUE``);
- after a line end, a line may wear the decoration the matched line wears
  before it, or the start of it (the ``+`` of a diff, an indentation, a
  ``> ``; ``+`` under ``+KEY=``), up to ``MAX_PREFIX`` bytes;
- a short line inside the value must stand alone: a gap, or the end of the
  output, on its far side too; the value's first and last lines may touch
  other text (the value can start or end mid-line), but not glue onto a word
  (``ok`` is not masked inside ``okay``).

Each short line becomes a span of its own, so line ends between lines stay.
Everything here is bounded (``Neighbours.ahead`` and ``behind``), so a stream
that holds back that much more decides exactly as a whole redaction does.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.redact.encodings import LINE_BLANKS, MIN_FORM_CHARS, split_lines

MAX_GAP = 16
MAX_PREFIX = 16

_BLANK = frozenset(b" \t\r\n\v\f")
_INDENT = LINE_BLANKS.encode()
_WORD = frozenset(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_" + bytes(range(0x80, 0x100))
)


@dataclass(frozen=True, slots=True, repr=False)
class Neighbours:
    """The short lines on each side of one long line of a value, nearest first."""

    after: tuple[bytes, ...]
    to_end: bool  # the farthest line in ``after`` is the value's last line
    before: tuple[bytes, ...]
    from_start: bool  # the farthest line in ``before`` is the value's first line

    def __repr__(self) -> str:
        # The lines are pieces of a secret: show only how many there are.
        return f"Neighbours(after={len(self.after)}, before={len(self.before)})"

    # Both bounds keep a byte or two to spare: a search that reaches the start
    # of a stream's data must be at the start of the output.
    @property
    def ahead(self) -> int:
        """How far past the matched line the search may read: gap, decoration, line, one more."""
        return sum(MAX_GAP + MAX_PREFIX + len(line) + 3 for line in self.after)

    @property
    def behind(self) -> int:
        """How far before the matched line the search may read (decorations included)."""
        steps = sum(MAX_GAP + 2 * MAX_PREFIX + len(line) + 4 for line in self.before)
        return MAX_PREFIX + 2 + steps


Rules = dict[bytes, tuple[Neighbours, ...]]


def neighbours_of(value: str) -> Rules:
    """For each long line of ``value`` next to a short one: the form it matches as, and its rule."""
    # Lines match without the blanks around them (runner.redact.encodings);
    # blank lines are part of a gap.
    lines = [bare for line in split_lines(value) if (bare := line.strip(LINE_BLANKS))]
    long = [len(line) >= MIN_FORM_CHARS for line in lines]
    if all(long):
        return {}
    rules: Rules = {}
    for i, line in enumerate(lines):
        if not long[i]:
            continue
        after = _run(lines, long, range(i + 1, len(lines)))
        before = _run(lines, long, range(i - 1, -1, -1))
        if not after and not before:
            continue
        rule = Neighbours(
            after=after,
            to_end=i + len(after) == len(lines) - 1,
            before=before,
            from_start=i - len(before) == 0,
        )
        key = _encode(line)
        rules[key] = (*rules.get(key, ()), rule)
    return rules


def _run(lines: list[str], long: list[bool], order: range) -> tuple[bytes, ...]:
    run: list[bytes] = []
    for j in order:
        if long[j]:
            break
        run.append(_encode(lines[j]))
    return tuple(run)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def extend(
    data: bytes, start: int, end: int, rule: Neighbours, final: bool
) -> list[tuple[int, int]]:
    """The spans of the short lines next to the long line matched at ``data[start:end]``.

    ``final`` says the data ends the output; otherwise a line that runs to
    the end of ``data`` is not decided yet and is left out (a stream asks
    again with more data).
    """
    allowed = (_decoration(data, start) or b"").lstrip(_INDENT)
    found: list[tuple[int, int]] = []
    pos = end
    for i, line in enumerate(rule.after):
        hit = _next(data, pos, line, allowed, rule.to_end and i == len(rule.after) - 1, final)
        if hit is None:
            break
        found.append(hit)
        pos = hit[1]
    pos, worn = start, allowed
    for i, line in enumerate(rule.before):
        back = _previous(
            data, pos, worn, line, allowed, rule.from_start and i == len(rule.before) - 1
        )
        if back is None:
            break
        begin, stop, worn = back
        found.append((begin, stop))
        pos = begin
    return found


def _decoration(data: bytes, start: int) -> bytes | None:
    """What precedes ``start`` on its line, or ``None`` if that is over ``MAX_PREFIX`` bytes."""
    low = max(0, start - MAX_PREFIX - 1)
    line_end = max(data.rfind(b"\n", low, start), data.rfind(b"\r", low, start))
    if line_end >= 0:
        return data[line_end + 1 : start]
    return data[:start] if low == 0 else None


def _next(
    data: bytes, pos: int, line: bytes, allowed: bytes, last: bool, final: bool
) -> tuple[int, int] | None:
    gap_end = pos
    while gap_end < len(data) and data[gap_end] in _BLANK:
        gap_end += 1
        if gap_end - pos > MAX_GAP:
            return None
    if gap_end == pos or gap_end == len(data):
        return None
    # After a line end, the line may wear the matched line's decoration, or its start.
    widest = len(allowed) if _has_line_end(data, pos, gap_end) else 0
    for worn in range(widest + 1):
        if not data.startswith(allowed[:worn], gap_end):
            break
        begin = gap_end + worn
        stop = begin + len(line)
        if data.startswith(line, begin) and _far_end_ok(data, stop, line, last, final):
            return begin, stop
    return None


def _far_end_ok(data: bytes, stop: int, line: bytes, last: bool, final: bool) -> bool:
    if stop == len(data):
        return final
    if last:
        return not (line[-1] in _WORD and data[stop] in _WORD)
    return data[stop] in _BLANK


def _previous(
    data: bytes, pos: int, worn: bytes, line: bytes, allowed: bytes, first: bool
) -> tuple[int, int, bytes] | None:
    """The line before the one starting at ``pos`` (which wears ``worn``), and its decoration."""
    candidates = [(pos, False)]
    if worn and data[max(0, pos - len(worn)) : pos] == worn:
        candidates.append((pos - len(worn), True))
    for gap_end, decorated in candidates:
        gap_start = gap_end
        while gap_start > 0 and data[gap_start - 1] in _BLANK and gap_end - gap_start <= MAX_GAP:
            gap_start -= 1
        width = gap_end - gap_start
        if not 0 < width <= MAX_GAP or (decorated and not _has_line_end(data, gap_start, gap_end)):
            continue
        begin = gap_start - len(line)
        if begin < 0 or not data.startswith(line, begin):
            continue
        own = _worn_before(data, begin, line, allowed, first)
        if own is not None:
            return begin, gap_start, own
    return None


def _worn_before(data: bytes, begin: int, line: bytes, allowed: bytes, first: bool) -> bytes | None:
    """The decoration of a line found at ``begin``, or ``None`` if it does not stand alone."""
    # The start of ``data`` is the start of the output: a stream keeps enough
    # of what it already wrote that a search never reaches back that far.
    if begin == 0:
        return b""
    before = data[begin - 1]
    if first:
        # The value may start mid-line, but not glued onto a word.
        return None if line[0] in _WORD and before in _WORD else b""
    own = (_decoration(data, begin) or b"").lstrip(_INDENT)
    if own and allowed.startswith(own):
        return own
    return b"" if before in _BLANK else None


def _has_line_end(data: bytes, start: int, stop: int) -> bool:
    return b"\n" in data[start:stop] or b"\r" in data[start:stop]
