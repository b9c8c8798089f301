"""Redaction: no secret value leaves runner in any form a reader could undo.

- ``Redactor(secrets)``: a fixed set of values and all their forms (encodings,
  quotings, line-end spellings: ``encodings``), found in one Aho-Corasick pass
  with overlapping matches merged, plus the short lines of a multi-line value
  where they stand next to its other lines (``short_lines``);
  ``.redact(text)``, ``.redact_bytes(data)``, ``.stream()``.
- ``StreamRedactor``: for output in chunks, holding back only what the
  longest form and the short-line rule's reach need; streamed output is the
  same as redacting the whole text at once.
- ``RedactingProcessor``: a structlog processor for before and after the
  renderer; ``RedactingFormatter`` for other ``logging`` handlers.
- ``active()``: the process's redactor, which every value resolved for a run
  or a job is registered with, and which logging and error messages consult.
"""

from runner.redact.active import ActiveRedactor, ActiveScope, active
from runner.redact.encodings import MIN_FORM_CHARS, MIN_VALUE_CHARS, forms_of
from runner.redact.matcher import PreparedSecret, Redactor, marker_for, prepare
from runner.redact.processors import RedactingFormatter, RedactingProcessor
from runner.redact.protocol import Redacts, StreamRedacting
from runner.redact.stream import StreamRedactor

__all__ = [
    "MIN_FORM_CHARS",
    "MIN_VALUE_CHARS",
    "ActiveRedactor",
    "ActiveScope",
    "PreparedSecret",
    "RedactingFormatter",
    "RedactingProcessor",
    "Redactor",
    "Redacts",
    "StreamRedacting",
    "StreamRedactor",
    "active",
    "forms_of",
    "marker_for",
    "prepare",
]
