"""Registers every command group on ``cli``; each lives in its own module."""

from __future__ import annotations
