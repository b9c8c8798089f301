"""The isolation and hardening flags of `runner run` and `runner executor`.

``isolation_options`` adds ``--isolation``, ``--pids-limit`` and ``--user``;
the command gets them as one ``Confinement`` (flags over settings over
defaults), which it puts into its ``SandboxPolicy``. The engine is asked
for the level's runtime once, before any container starts
(``check_isolation``). ``sandbox_policy`` and ``run_limits`` build what
`runner run` and `runner executor` both hand to the step loop, the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from runner.cli._limits import JobLimits
from runner.config import ISOLATIONS, Settings
from runner.egress import NetworkChoice
from runner.execute.docker_sandbox import parse_user
from runner.execute.steps import RunLimits
from runner.records import Frozen
from runner.sandbox import Hardening, Isolation, SandboxPolicy

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class Confinement(Frozen):
    """The isolation level and hardening the flags and settings chose."""

    isolation: Isolation
    hardening: Hardening

    def __init__(self, isolation: Isolation, hardening: Hardening) -> None:
        self._fill(isolation, hardening)

    def check(self, runtime: Any) -> None:
        """Refuse, before any container starts, a level the engine cannot run."""
        runtime.check_isolation(self.isolation)


def confinement(
    settings: Settings, isolation: str | None, pids_limit: int | None, user: str | None
) -> Confinement:
    chosen = user or settings.step_user
    if chosen is not None:
        parse_user(chosen)  # a usage error now, not an engine error at the first step
    return Confinement(
        isolation=cast(Isolation, isolation or settings.isolation),
        hardening=Hardening(pids_limit=pids_limit or settings.pids_limit, user=chosen),
    )


def sandbox_policy(
    confinement: Confinement, job_limits: JobLimits, network: NetworkChoice
) -> SandboxPolicy:
    """The confinement, then the job limits, then the network flags (``--add-host`` is
    the operator's alone: a submitted job never sets it)."""
    sandbox = SandboxPolicy(isolation=confinement.isolation, hardening=confinement.hardening)
    return network.apply(job_limits.apply(sandbox))


def run_limits(
    settings: Settings,
    *,
    timeout_s: float | None = None,
    memory_bytes: int | None = None,
    cpus: float | None = None,
    log_cap_bytes: int | None = None,
) -> RunLimits:
    """Each step's limits: the flags given, else the settings."""
    return RunLimits(
        timeout_s=timeout_s or settings.step_timeout_s,
        capture_limit=settings.capture_limit_bytes,
        memory_bytes=settings.step_memory_bytes if memory_bytes is None else memory_bytes,
        cpus=cpus or settings.step_cpus,
        log_cap_bytes=settings.job_log_cap_bytes if log_cap_bytes is None else log_cap_bytes,
    )


def isolation_options(func: F) -> F:
    """The three flags; the command gets ``confinement: Confinement``."""

    @functools.wraps(func)
    def packed(
        *args: Any, isolation: str | None, pids_limit: int | None, user: str | None, **kw: Any
    ) -> Any:
        from runner.cli._app import app

        chosen = confinement(app().settings, isolation, pids_limit, user)
        return func(*args, confinement=chosen, **kw)

    command: Any = packed
    for option in reversed(
        [
            click.option(
                "--isolation",
                type=click.Choice(ISOLATIONS),
                help="runc (the engine's default runtime) or gvisor (runsc: a kernel of the "
                "step's own); default RUNNER_ISOLATION or runc.",
            ),
            click.option(
                "--pids-limit",
                type=click.IntRange(min=1),
                help="Processes and threads per step container (default RUNNER_PIDS_LIMIT or "
                "1024; under gvisor the sandbox's own threads count too).",
            ),
            click.option(
                "--user",
                metavar="UID[:GID]",
                help="Run steps as this user (default RUNNER_STEP_USER, else each image's own).",
            ),
        ]
    ):
        command = option(command)
    return cast(F, command)
