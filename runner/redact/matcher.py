"""``Redactor``: every registered form of every secret, found in one pass.

All forms of all values go into one Aho-Corasick automaton over bytes. The
search reports every match, overlapping ones included, and overlapping spans
are merged before anything is replaced, so when one secret is a prefix of,
or overlaps, another (or itself), no piece of either survives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ahocorasick_rs

from runner.errors import SecretValidationError
from runner.redact.encodings import MIN_VALUE_CHARS, forms_of

if TYPE_CHECKING:
    from runner.redact.stream import StreamRedactor
    from runner.secrets.value import Secret

# A DFA scans several times faster than an NFA but costs about 500 bytes of
# memory per pattern byte; above this many pattern bytes the NFA is used.
DFA_MAX_PATTERN_BYTES = 48 * 1024

# Fallbacks for a marker that would itself contain a registered form. The last
# is shorter than any form, so it can never match.
_PLAIN_MARKER = b"[REDACTED]"
_LAST_MARKER = b"*****"

# (start, end, owner, already_emitted); owner indexes Redactor's names.
Span = tuple[int, int, int, bool]


def reveal(value: str | Secret) -> str:
    """The plaintext of a ``str`` or a ``runner.secrets.Secret``."""
    if isinstance(value, str):
        return value
    return value.reveal()


@dataclass(frozen=True, slots=True, repr=False)
class PreparedSecret:
    """A secret's name and all its registered forms, computed once."""

    name: str
    forms: frozenset[bytes]

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
    return PreparedSecret(name=name, forms=frozenset(forms_of(plain)))


def marker_for(name: str) -> bytes:
    return f"[REDACTED:{name}]".encode("utf-8", "surrogatepass")


class Redactor:
    """Replaces every registered form of every secret with ``[REDACTED:NAME]``.

    Immutable once built, so one instance may be shared between threads.
    """

    __slots__ = ("_automaton", "_markers", "_max_len", "_names", "_owners")

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
        for item in prepared:
            owner = name_index.setdefault(item.name, len(names))
            if owner == len(names):
                names.append(item.name)
            for form in item.forms:
                owner_of.setdefault(form, owner)
        patterns = list(owner_of)
        self._names: tuple[str, ...] = tuple(names)
        self._owners: tuple[int, ...] = tuple(owner_of[p] for p in patterns)
        self._max_len: int = max(map(len, patterns), default=0)
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
        """Bytes a stream must keep back: one less than the longest form."""
        return max(self._max_len - 1, 0)

    def __bool__(self) -> bool:
        return self._automaton is not None

    def __repr__(self) -> str:
        return f"Redactor(secrets={len(self._names)}, forms={len(self._owners)})"

    def spans(self, data: bytes, carry: Span | None = None) -> list[Span]:
        """Merged, sorted spans to replace in ``data``.

        ``carry`` is a span already begun before ``data`` (a stream's held
        bytes), which later matches merge into.
        """
        matches = self._raw_matches(data)
        if not matches:
            return [carry] if carry is not None else []
        # Overlapping matches come ordered by where they end; merging needs starts.
        matches.sort(key=_start)
        owners = self._owners
        merged: list[Span] = []
        if carry is not None:
            cur_start, cur_end, cur_owner, cur_emitted = carry
            best = cur_end - cur_start
        else:
            pattern, cur_start, cur_end = matches[0]
            cur_owner, cur_emitted, best = owners[pattern], False, cur_end - cur_start
        for pattern, start, end in matches:
            if start < cur_end:
                if end > cur_end:
                    cur_end = end
                if end - start > best:
                    best, cur_owner = end - start, owners[pattern]
                continue
            merged.append((cur_start, cur_end, cur_owner, cur_emitted))
            cur_start, cur_end, cur_owner, cur_emitted = start, end, owners[pattern], False
            best = end - start
        merged.append((cur_start, cur_end, cur_owner, cur_emitted))
        return merged

    def marker(self, owner: int) -> bytes:
        return self._markers[owner]

    def replace(self, data: bytes, spans: Sequence[Span], stop: int | None = None) -> bytes:
        """``data[:stop]`` with each span ending by ``stop`` replaced by its marker."""
        end_at = len(data) if stop is None else stop
        pieces: list[bytes] = []
        pos = 0
        for start, end, owner, emitted in spans:
            if end > end_at:
                break
            pieces.append(data[pos:start])
            if not emitted:
                pieces.append(self._markers[owner])
            pos = end
        pieces.append(data[pos:end_at])
        return b"".join(pieces)

    def redact_bytes(self, data: bytes) -> bytes:
        if self._automaton is None:
            return bytes(data)
        spans = self.spans(data)
        if not spans:
            return bytes(data)
        return self.replace(data, spans)

    def redact(self, text: str) -> str:
        if self._automaton is None:
            return text
        # surrogatepass keeps lone surrogates (from surrogateescape) round-tripping.
        data = text.encode("utf-8", "surrogatepass")
        spans = self.spans(data)
        if not spans:
            return text
        # Forms are whole UTF-8 sequences, so spans begin and end on characters.
        return self.replace(data, spans).decode("utf-8", "surrogatepass")

    def stream(self) -> StreamRedactor:
        from runner.redact.stream import StreamRedactor

        return StreamRedactor(lambda: self)


def _start(match: tuple[int, int, int]) -> int:
    return match[1]
