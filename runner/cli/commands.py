"""Registers every command group on ``cli``; each lives in its own module."""

from __future__ import annotations


def register_commands() -> None:
    """Import each command module: its decorators add its commands to ``cli``."""
    from runner.cli import (  # noqa: F401
        cache_cmds,
        dev_cmds,
        env_cmds,
        namespace_cmds,
        run_cmds,
        secret_cmds,
        server_cmds,
        spec_cmds,
    )
