"""``Redactor``: every registered form of every secret, found in one pass.

All forms of all values go into one Aho-Corasick automaton over bytes. The
search reports every match, overlapping ones included; a matched line of a
multi-line value then adds the value's short lines that stand next to it
(``runner.redact.short_lines``); and overlapping spans are merged before
anything is replaced, so when one secret is a prefix of, or overlaps, another
(or itself), no piece of either survives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ahocorasick_rs

from runner.errors import SecretValidationError
from runner.redact.encodings import MIN_VALUE_CHARS, forms_of
from runner.redact.short_lines import Neighbours, extend, neighbours_of
from runner.redact.stream import Span, StreamRedactor, Window, splice

if TYPE_CHECKING:
    from runner.secrets.value import Secret

# A DFA scans several times faster than an NFA but costs about 500 bytes of
# memory per pattern byte; above this many pattern bytes the NFA is used.
DFA_MAX_PATTERN_BYTES = 48 * 1024

# Fallbacks for a marker that would itself contain a registered form. The last
# is shorter than any form, so it can never match.
_PLAIN_MARKER = b"[REDACTED]"
_LAST_MARKER = b"*****"


def reveal(value: str | Secret) -> str:
    """The plaintext of a ``str`` or a ``runner.secrets.Secret``."""
    if isinstance(value, str):
        return value
    return value.reveal()


@dataclass(frozen=True, slots=True, repr=False)
class PreparedSecret:
    """A secret's name, all its registered forms and its short-line rules, computed once."""

    name: str
    forms: frozenset[bytes]
    # (form of a long line, the short lines next to it), for a multi-line value.
    neighbours: tuple[tuple[bytes, tuple[Neighbours, ...]], ...] = ()

    def __repr__(self) -> str:
        return f"PreparedSecret(name={self.name!r}, forms={len(self.forms)})"


def prepare(name: str, value: str | Secret) -> PreparedSecret:
    """Check the value and compute its forms; the message never shows the value."""
    if not isinstance(name, str) or not name:
        raise SecretValidationError(
            "a secret to redact needs a name",
            hint="register each value under the name of its secret or variable",
        )
    plain = reveal(value)
    if len(plain) < MIN_VALUE_CHARS:
        raise SecretValidationError(
            f"the value of {name} is shorter than {MIN_VALUE_CHARS} characters "
            "and cannot be redacted without redacting ordinary text",
            hint=f"use a value of at least {MIN_VALUE_CHARS} characters",
        )
    return PreparedSecret(
        name=name,
        forms=frozenset(forms_of(plain)),
        neighbours=tuple(neighbours_of(plain).items()),
    )


def marker_for(name: str) -> bytes:
    return f"[REDACTED:{name}]".encode("utf-8", "surrogatepass")


class Redactor:
    """Replaces every registered form of every secret with ``[REDACTED:NAME]``.

    Immutable once built, so one instance may be shared between threads.
    """

    __slots__ = (
        "_ahead",
        "_automaton",
        "_behind",
        "_markers",
        "_max_len",
        "_names",
        "_owners",
        "_rules",
    )

    def __init__(self, secrets: Mapping[str, str | Secret] | None = None) -> None:
        prepared = [prepare(name, value) for name, value in (secrets or {}).items()]
        self._build(prepared)

    @classmethod
    def from_prepared(cls, prepared: Iterable[PreparedSecret]) -> Redactor:
        """Build from already prepared secrets; one name may appear more than once."""
        redactor = cls.__new__(cls)
        redactor._build(list(prepared))
        return redactor

    def _build(self, prepared: Sequence[PreparedSecret]) -> None:
        names: list[str] = []
        name_index: dict[str, int] = {}
        owner_of: dict[bytes, int] = {}
        rules_of: dict[bytes, list[tuple[int, Neighbours]]] = {}
        for item in prepared:
            owner = name_index.setdefault(item.name, len(names))
            if owner == len(names):
                names.append(item.name)
            for form in item.forms:
                owner_of.setdefault(form, owner)
            for form, rules in item.neighbours:
                rules_of.setdefault(form, []).extend((owner, rule) for rule in rules)
        patterns = list(owner_of)
        self._names: tuple[str, ...] = tuple(names)
        self._owners: tuple[int, ...] = tuple(owner_of[p] for p in patterns)
        self._max_len: int = max(map(len, patterns), default=0)
        index = {p: i for i, p in enumerate(patterns)}
        self._rules: dict[int, tuple[tuple[int, Neighbours], ...]] = {
            index[form]: tuple(rules) for form, rules in rules_of.items() if form in index
        }
        every = [rule for rules in self._rules.values() for _, rule in rules]
        self._ahead: int = max((rule.ahead for rule in every), default=0)
        self._behind: int = max((rule.behind for rule in every), default=0)
        self._automaton: ahocorasick_rs.BytesAhoCorasick | None = None
        if patterns:
            size = sum(map(len, patterns))
            kind = (
                ahocorasick_rs.Implementation.DFA
                if size <= DFA_MAX_PATTERN_BYTES
                else ahocorasick_rs.Implementation.ContiguousNFA
            )
            self._automaton = ahocorasick_rs.BytesAhoCorasick(patterns, implementation=kind)
        self._markers: tuple[bytes, ...] = tuple(self._safe_marker(n) for n in names)

    def _safe_marker(self, name: str) -> bytes:
        # A marker that contained a form would show what it hides (a name that
        # spells its own value) and would be redacted again on a second pass.
        for candidate in (marker_for(name), _PLAIN_MARKER):
            if not self._raw_matches(candidate):
                return candidate
        return _LAST_MARKER

    def _raw_matches(self, data: bytes) -> list[tuple[int, int, int]]:
        if self._automaton is None:
            return []
        matches: list[tuple[int, int, int]] = self._automaton.find_matches_as_indexes(
            data, overlapping=True
        )
        return matches

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def hold_back(self) -> int:
        """Bytes a stream must keep back: the longest form less one, and how far
        the short-line rule looks on both sides of a match."""
        return max(self._max_len - 1, 0) + self._ahead + self._behind

    @property
    def context(self) -> int:
        """Bytes already written that a stream keeps for the short-line rule to read."""
        return self._behind

    def __bool__(self) -> bool:
        return self._automaton is not None

    def __repr__(self) -> str:
        return f"Redactor(secrets={len(self._names)}, forms={len(self._owners)})"

    def spans(self, data: bytes) -> list[Span]:
        """Merged, sorted spans to replace in the whole of ``data``."""
        return self._scan(data, self._raw_matches(data), Window(0, len(data), True))[0]

    def stream_spans(self, data: bytes, window: Window) -> tuple[list[Span], list[Span]]:
        """The spans a stream replaces in ``data[window.start:]``, and those to hand back.

        ``window.carry`` is a span already begun, which later matches merge
        into. The spans handed back lie past ``window.stop``: short lines after
        a matched line written now, which cannot be found again without it.
        """
        return self._scan(data, self._raw_matches(data), window)

    def _scan(
        self, data: bytes, matches: list[tuple[int, int, int]], window: Window
    ) -> tuple[list[Span], list[Span]]:
        start, stop, carry, pending = window.start, window.stop, window.carry, window.pending
        if not matches and not pending:
            return ([carry] if carry is not None else []), []
        owners = self._owners
        found: list[Span] = [(b, e, owners[p], False) for p, b, e in matches if b >= start]
        found += pending
        keep = [span for span in pending if span[0] >= stop]
        if self._rules and found:
            lines, later = self._short_lines(data, matches, window)
            found += lines
            keep += later
        if not found:
            return ([carry] if carry is not None else []), keep
        # Overlapping matches come ordered by where they end; merging needs starts.
        found.sort(key=_start)
        cur_start, cur_end, cur_owner, cur_emitted = found[0] if carry is None else carry
        best = cur_end - cur_start
        merged: list[Span] = []
        for begin, end, owner, emitted in found:
            if begin < cur_end:
                if end > cur_end:
                    cur_end = end
                if end - begin > best:
                    best, cur_owner = end - begin, owner
                continue
            merged.append((cur_start, cur_end, cur_owner, cur_emitted))
            cur_start, cur_end, cur_owner, cur_emitted = begin, end, owner, emitted
            best = end - begin
        merged.append((cur_start, cur_end, cur_owner, cur_emitted))
        return merged, keep

    def _short_lines(
        self, data: bytes, matches: list[tuple[int, int, int]], window: Window
    ) -> tuple[list[Span], list[Span]]:
        """The spans of short lines next to matched lines, and those to hand back."""
        start, stop, final = window.start, window.stop, window.final
        found: list[Span] = []
        later: list[Span] = []
        for pattern, begin, end in matches:
            if begin < start:
                continue
            for owner, rule in self._rules.get(pattern, ()):
                for line_start, line_end in extend(data, begin, end, rule, final):
                    if line_end <= start:
                        continue
                    # A line reaching into what was written belongs to a span
                    # whose marker is out already.
                    span = (max(line_start, start), line_end, owner, line_start < start)
                    found.append(span)
                    if begin < stop <= line_start:
                        later.append(span)
        return found, later

    def marker(self, owner: int) -> bytes:
        return self._markers[owner]

    def knows_values(self) -> bool:
        return bool(self._names)

    def redact_bytes(self, data: bytes) -> bytes:
        if self._automaton is None:
            return bytes(data)
        matches = self._raw_matches(data)
        if not matches:
            return bytes(data)
        spans = self._scan(data, matches, Window(0, len(data), True))[0]
        return splice(data, spans, self.marker)[0]

    def redact(self, text: str) -> str:
        if self._automaton is None:
            return text
        # surrogatepass keeps lone surrogates (from surrogateescape) round-tripping.
        data = text.encode("utf-8", "surrogatepass")
        # The usual case, kept cheap: nothing of any secret here.
        matches = self._raw_matches(data)
        if not matches:
            return text
        spans = self._scan(data, matches, Window(0, len(data), True))[0]
        # Forms are whole UTF-8 sequences, so spans begin and end on characters.
        return splice(data, spans, self.marker)[0].decode("utf-8", "surrogatepass")

    def stream(self) -> StreamRedactor:
        return StreamRedactor(lambda: self)


def _start(span: Span) -> int:
    return span[0]
