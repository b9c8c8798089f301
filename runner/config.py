"""Frozen settings, filled from flags and the environment by the CLI only.

Everything below the CLI receives a ``Settings`` (or the part it needs) and
never reads ``os.environ`` itself, so tests can shorten every interval.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from runner.errors import ConfigError

LogFormat = Literal["auto", "text", "json"]

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every tunable of runner in one immutable object."""

    home: Path
    database_url: str | None = None
    master_key_file: Path | None = None

    log_format: LogFormat = "auto"
    verbose: int = 0
    debug: bool = False

    # Execution
    step_timeout_s: float = 30 * 60
    parallelism: int = field(default_factory=lambda: os.cpu_count() or 1)
    capture_limit_bytes: int = 1 * MIB
    job_log_cap_bytes: int = 100 * MIB
    step_memory_bytes: int | None = None
    step_cpus: float | None = None

    # Cache
    cache_max_mb: int = 1024

    # Coordinator and executors
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = 5.0
    stall_limit_s: float = 30.0
    max_resets: int = 3
    max_attempts: int = 3

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'runner.db'}"

    @property
    def effective_master_key_file(self) -> Path:
        return self.master_key_file or self.home / "master.key"

    def with_changes(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number", hint=f"set {name} to a number of seconds"
        ) from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive", hint=f"set {name} to a positive number")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number", hint=f"set {name} to a whole number"
        ) from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive", hint=f"set {name} to a positive number")
    return value


def default_home(env: Mapping[str, str]) -> Path:
    if env.get("RUNNER_HOME"):
        return Path(env["RUNNER_HOME"]).expanduser()
    data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/share")
    return Path(data).expanduser() / "runner"


def settings_from_env(env: Mapping[str, str], **overrides: object) -> Settings:
    """Build settings from environment variables; flags arrive as ``overrides``.

    Only the CLI calls this, with ``os.environ``.
    """
    key_file = env.get("RUNNER_MASTER_KEY_FILE")
    base = Settings(
        home=default_home(env),
        database_url=env.get("RUNNER_DATABASE_URL") or None,
        master_key_file=Path(key_file).expanduser() if key_file else None,
        step_timeout_s=_float(env, "RUNNER_STEP_TIMEOUT", 30 * 60),
        cache_max_mb=_int(env, "RUNNER_CACHE_MAX_MB", 1024),
        job_log_cap_bytes=_int(env, "RUNNER_JOB_LOG_CAP_MB", 100) * MIB,
        step_memory_bytes=(
            _int(env, "RUNNER_STEP_MEMORY_MB", 1) * MIB
            if env.get("RUNNER_STEP_MEMORY_MB")
            else None
        ),
        step_cpus=_float(env, "RUNNER_STEP_CPUS", 1.0) if env.get("RUNNER_STEP_CPUS") else None,
        poll_interval_s=_float(env, "RUNNER_POLL_INTERVAL", 1.0),
        heartbeat_interval_s=_float(env, "RUNNER_HEARTBEAT_INTERVAL", 5.0),
        stall_limit_s=_float(env, "RUNNER_STALL_LIMIT", 30.0),
    )
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **clean) if clean else base  # type: ignore[arg-type]
