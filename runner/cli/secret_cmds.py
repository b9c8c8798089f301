"""`runner secret`, `runner keys`, `runner user`, `runner org` (issue 4)."""

from __future__ import annotations
