"""Registers every command group on ``cli``; each lives in its own module."""

from __future__ import annotations

from runner.cli import cache_cmds as cache_cmds
from runner.cli import env_cmds as env_cmds
from runner.cli import run_cmds as run_cmds
from runner.cli import secret_cmds as secret_cmds
from runner.cli import server_cmds as server_cmds
from runner.cli import spec_cmds as spec_cmds
