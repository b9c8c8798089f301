"""Messages on stderr: a first line, then indented details wrapped to the screen.

Errors (``error: ``) and warnings (``warning: ``) share the layout, so a long
message reads as a headline and a list rather than one line running off the
terminal. Text is redacted by the caller before it comes here: wrapping could
split a value over two lines where the redactor would no longer see it.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Sequence

# Stands for a space inside `backticks` while wrapping: a command stays on one line.
_KEEP = "\ue000"
WIDTH = 100  # when stderr is not a terminal


def stderr_width() -> int:
    """The terminal's width when stderr is one, else 100 columns."""
    try:
        if sys.stderr.isatty():
            return max(40, os.get_terminal_size(sys.stderr.fileno()).columns)
    except (OSError, ValueError):
        pass
    return WIDTH


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    kept = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", _KEEP), text)
    lines = textwrap.wrap(
        kept,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [line.replace(_KEEP, " ") for line in lines] or [first.rstrip()]


def headline_and_details(
    prefix: str, message: str, details: Sequence[str], *, width: int = WIDTH
) -> str:
    """``PREFIX MESSAGE`` on one line, then each detail indented and wrapped to ``width``.

    The first line is never broken, so it can be searched for as a whole.
    """
    lines = [f"{prefix}{message}"]
    for item in details:
        lines += _wrap(item, width, "  ", "    ")
    return "\n".join(lines)


def format_error(
    message: str, hint: str | None, details: Sequence[str] = (), *, width: int = WIDTH
) -> str:
    """``error: WHAT — HINT`` when it fits on one line; else WHAT, then the details or hint.

    The first line always starts with ``error: `` and holds the whole message;
    what follows is indented and wrapped to ``width``, each detail on a line
    of its own.
    """
    one = f"error: {message}" + (f" — {hint}" if hint else "")
    if not details and len(one) <= width:
        return one
    return headline_and_details(
        "error: ", message, list(details) or ([hint] if hint else []), width=width
    )
