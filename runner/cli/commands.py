"""Which module holds each command; a command's module is loaded when it is called.

Loading every command module costs a `runner run` what it never uses (the
coordinator's web stack, the cache's SQL, the dev tools): the group looks a
command up here and imports only its modules (``cli`` in ``_app.py``).
``runner --help`` and a name not listed load them all, so a command missing
from ``COMMAND_MODULES`` still works (``tests/test_lazy_imports.py`` says so).
"""

from __future__ import annotations

import importlib

# Every module below runner.cli that adds commands, in the order --help lists them from.
MODULES = (
    "cache_cmds",
    "dev_cmds",
    "env_cmds",
    "namespace_cmds",
    "run_cmds",
    "secret_cmds",
    "server_cmds",
    "spec_cmds",
)

# Top-level command -> the modules adding it or its subcommands (`cache why` is dev_cmds').
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "run": ("run_cmds",),
    "cleanup": ("run_cmds",),
    "validate": ("spec_cmds",),
    "workspaces": ("dev_cmds",),
    "cache": ("cache_cmds", "dev_cmds"),
    "env": ("env_cmds",),
    "namespace": ("namespace_cmds",),
    "secret": ("secret_cmds",),
    "keys": ("secret_cmds",),
    "user": ("secret_cmds",),
    "org": ("secret_cmds",),
    "server": ("server_cmds",),
    "executor": ("server_cmds",),
    "token": ("server_cmds",),
    "submit": ("server_cmds",),
    "jobs": ("server_cmds",),
    "executors": ("server_cmds",),
}


def load_command(name: str) -> None:
    """Import the modules of command ``name`` (all of them for a name not listed)."""
    for module in COMMAND_MODULES.get(name, MODULES):
        importlib.import_module(f"runner.cli.{module}")


def register_commands() -> None:
    """Import each command module: its decorators add its commands to ``cli``."""
    for module in MODULES:
        importlib.import_module(f"runner.cli.{module}")
