"""Placeholders for brokered secrets: what a step holds instead of the value.

A placeholder is made per job and per secret. It is random (from the
system's CSPRNG), never equal to the value, and shaped like it, so that a
tool that checks a token's look (``gh`` wants ``ghp_…`` or
``github_pat_…``, GitLab's tools ``glpat-…``) still accepts it: the same
length, the value's leading type prefix kept (runs of lower-case letters
each ended by ``_`` or ``-``, such as ``ghp_``, ``github_pat_``, ``glpat-``,
``xoxb-``), and each other character drawn from the same class as the one
it stands for (a digit for a digit, an upper-case letter for one, …), with
punctuation kept where it stands (a JWT keeps its dots).

A placeholder is useless outside its job: only that job's proxy swaps it
for the value, and only in HTTPS requests to the hosts it is bound to.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Collection

# One segment of a type prefix: lower-case letters ended by _ or -.
_SEGMENT = re.compile(r"[a-z]{1,12}[_-]")
# A prefix is kept only while this many characters are left to randomize.
MIN_RANDOM_CHARS = 16
_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
_ATTEMPTS = 32


def type_prefix(value: str) -> str:
    """The leading type prefix of ``value`` (``ghp_``, ``github_pat_``, …) or ``""``.

    Whole segments only, and only while enough of the value is left to randomize.
    """
    end = 0
    while (match := _SEGMENT.match(value, end)) and len(value) - match.end() >= MIN_RANDOM_CHARS:
        end = match.end()
    return value[:end]


def _alphabet(char: str) -> str | None:
    for alphabet in _CLASSES:
        if char in alphabet:
            return alphabet
    return None


def make_placeholder(value: str, *, taken: Collection[str] = ()) -> str:
    """A fresh placeholder shaped like ``value``, unlike it and unlike each of ``taken``.

    ``ValueError`` for a value without a single letter or digit to randomize
    (the store refuses values that short of content long before this).
    """
    prefix = type_prefix(value)
    rest = value[len(prefix) :]
    if not any(_alphabet(char) for char in rest):
        raise ValueError("a brokered value needs letters or digits to shape a placeholder from")
    for _ in range(_ATTEMPTS):
        made = prefix + "".join(
            secrets.choice(alphabet) if (alphabet := _alphabet(char)) else char for char in rest
        )
        if made != value and made not in taken and value not in made:
            return made
    # Only a value with next to nothing random-able gets here: say so rather than loop.
    raise ValueError("could not shape a placeholder unlike the value; use a longer value")
