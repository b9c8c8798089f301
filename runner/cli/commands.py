"""Registers every command group on ``cli``; each lives in its own module."""

from __future__ import annotations

from runner.cli import secret_cmds as secret_cmds
