"""The seam between redaction and its users (logging, the CLI, execution)."""

from __future__ import annotations

from typing import Protocol


class StreamRedacting(Protocol):
    """Redacts output that arrives in chunks (``StreamRedactor`` provides it).

    ``feed`` returns what is safe to pass on so far, holding back only what
    could be the start of a secret; ``flush`` returns the rest at the end.
    """

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Redacts(Protocol):
    """What logging, error messages and container output need from a redactor.

    ``Redactor`` (a fixed set of secrets, also the in-package fake) and
    ``ActiveRedactor`` (the process's growing set) both provide it.
    """

    def redact(self, text: str) -> str: ...

    def redact_bytes(self, data: bytes) -> bytes: ...

    def stream(self) -> StreamRedacting: ...

    def knows_values(self) -> bool:
        """Whether any value is registered: without one, nothing can be found to hide."""
        ...
