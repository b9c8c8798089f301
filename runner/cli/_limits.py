"""`--job-timeout` and `--disk-cap`: limits on a whole workspace job.

``limit_options`` adds both flags to `runner run` and `runner executor`; the
command gets them as one ``JobLimits`` (flags over the settings
``RUNNER_JOB_TIMEOUT`` and ``RUNNER_DISK_CAP``), which it applies to its
``SandboxPolicy``. `runner namespace set` takes the same flags as a
namespace's requirement (``namespace_limit_options``: no settings behind them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import click

from runner.cli._options import option_group
from runner.config import parse_size
from runner.records import Frozen
from runner.sandbox import SandboxPolicy

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class JobLimits(Frozen):
    """The wall time of a workspace job's steps together, and what one step may write."""

    job_timeout_s: float | None = None
    disk_cap_bytes: int | None = None

    def __init__(
        self, job_timeout_s: float | None = None, disk_cap_bytes: int | None = None
    ) -> None:
        self._fill(job_timeout_s, disk_cap_bytes)

    def apply(self, sandbox: SandboxPolicy) -> SandboxPolicy:
        return replace(
            sandbox, job_timeout_s=self.job_timeout_s, disk_cap_bytes=self.disk_cap_bytes
        )


def _flags(timeout_help: str, cap_help: str) -> dict[str, Callable[[Any], Any]]:
    return {
        "job_timeout_s": click.option(
            "--job-timeout",
            "job_timeout_s",
            type=click.FloatRange(min=0, min_open=True),
            help=timeout_help,
        ),
        "disk_cap": click.option("--disk-cap", help=cap_help),
    }


def limit_options(what: str) -> Callable[[F], F]:
    """Both flags; the command gets ``job_limits: JobLimits`` (``what``: the job, in the help)."""

    def pack(job_timeout_s: float | None, disk_cap: str | None) -> JobLimits:
        from runner.cli._app import app

        settings = app().settings
        return JobLimits(
            job_timeout_s=job_timeout_s or settings.job_timeout_s,
            disk_cap_bytes=parse_size(disk_cap) if disk_cap else settings.disk_cap_bytes,
        )

    flags = _flags(
        f"Seconds for all steps of a {what} together (default: RUNNER_JOB_TIMEOUT, or none).",
        "Stop a step that writes more than this to the workspace and its container, such as "
        "2g (default: RUNNER_DISK_CAP, or none).",
    )
    return option_group(flags, "job_limits", pack)


def namespace_limit_options(func: F) -> F:
    """Both flags as a namespace's requirement; the command gets ``job_limits: JobLimits``."""

    def pack(job_timeout_s: float | None, disk_cap: str | None) -> JobLimits:
        return JobLimits(
            job_timeout_s=job_timeout_s, disk_cap_bytes=parse_size(disk_cap) if disk_cap else None
        )

    flags = _flags(
        "Seconds for all steps of a job together, at most.",
        "What a step may write, at most, such as 2g.",
    )
    return option_group(flags, "job_limits", pack)(func)
