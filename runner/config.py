"""Frozen settings, filled from flags and the environment by the CLI only.

Everything below the CLI receives a ``Settings`` (or the part it needs) and
never reads ``os.environ`` itself, so tests can shorten every interval.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypedDict

from runner.errors import ConfigError, UsageError

LogFormat = Literal["auto", "text", "json"]

MIB = 1024 * 1024

# Runner's own address pool for job networks: one small subnet per network, so
# that far more fit than Docker's default pools allow (about 31 bridges).
DEFAULT_NETWORK_POOL = "10.213.0.0/16"
NETWORK_POLICIES = ("open", "none", "allow")


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
    # Limits on a whole workspace job (unset: none)
    job_timeout_s: float | None = None
    disk_cap_bytes: int | None = None

    # Sandbox: the isolation level and hardening every step gets (runner.sandbox)
    isolation: str = "runc"  # runc | gvisor
    pids_limit: int = 1024
    step_user: str | None = None  # UID[:GID]; None keeps each image's own user

    # Egress (runner.egress): a network per workspace job and what it may reach
    network: str = "open"
    allow_hosts: tuple[str, ...] = ()  # HOST[:PORT] entries, parsed by the CLI
    add_hosts: tuple[str, ...] = ()  # NAME:ADDRESS entries, an operator's setting
    network_pool: str = DEFAULT_NETWORK_POOL
    # Job networks `runner run` keeps ready for the next run (runner.egress.ready); 0: none.
    ready_networks: int = 8
    proxy_bin: Path | None = None  # mitmdump; None: the one `make services` installs
    broker_ca_file: Path | None = None  # roots the broker trusts upstream; None: the system's

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


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``512m``, ``2g``, ``1.5GiB``, ``4096`` (bytes) into bytes; ``UsageError`` otherwise."""
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = raw[-1:] if raw[-1:] in SIZE_UNITS else ""
    number = raw[:-1] if unit else raw
    try:
        value = int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise UsageError(f"{text!r} is not a size", hint="write it like 512m or 2g") from None
    if value <= 0:
        raise UsageError(f"{text!r} is not a positive size", hint="write it like 512m or 2g")
    return value


def _size(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_size(raw)
    except UsageError as exc:
        raise ConfigError(f"{name}: {exc.message}", hint=f"set {name} like 512m or 2g") from None


ISOLATIONS = ("runc", "gvisor")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], what: str) -> str:
    """One of ``choices`` (the first when unset)."""
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise ConfigError(
            f"{name}={raw!r} is not {what}", hint=f"set {name} to one of {', '.join(choices)}"
        )
    return raw


def _isolation(env: Mapping[str, str]) -> str:
    return _choice(env, "RUNNER_ISOLATION", ISOLATIONS, "an isolation level")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A list setting: entries separated by commas or white space."""
    return tuple(part for part in re.split(r"[,\s]+", env.get(name) or "") if part)


class _Egress(TypedDict):
    network: str
    allow_hosts: tuple[str, ...]
    add_hosts: tuple[str, ...]
    network_pool: str
    ready_networks: int
    proxy_bin: Path | None
    broker_ca_file: Path | None


def _egress(env: Mapping[str, str]) -> _Egress:
    network = _choice(env, "RUNNER_NETWORK", NETWORK_POLICIES, "a network policy")
    proxy_bin = env.get("RUNNER_PROXY_BIN")
    broker_ca = env.get("RUNNER_BROKER_CA_FILE")
    return {
        "network": network,
        "allow_hosts": _list(env, "RUNNER_ALLOW_HOSTS"),
        "add_hosts": _list(env, "RUNNER_ADD_HOSTS"),
        "network_pool": env.get("RUNNER_NETWORK_POOL") or DEFAULT_NETWORK_POOL,
        # 0 turns keeping networks off (_int refuses it).
        "ready_networks": 0
        if (env.get("RUNNER_READY_NETWORKS") or "").strip() == "0"
        else _int(env, "RUNNER_READY_NETWORKS", 8),
        "proxy_bin": Path(proxy_bin).expanduser() if proxy_bin else None,
        "broker_ca_file": Path(broker_ca).expanduser() if broker_ca else None,
    }


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
        job_timeout_s=(
            _float(env, "RUNNER_JOB_TIMEOUT", 1.0) if env.get("RUNNER_JOB_TIMEOUT") else None
        ),
        disk_cap_bytes=_size(env, "RUNNER_DISK_CAP"),
        isolation=_isolation(env),
        pids_limit=_int(env, "RUNNER_PIDS_LIMIT", 1024),
        step_user=env.get("RUNNER_STEP_USER") or None,
        **_egress(env),
        poll_interval_s=_float(env, "RUNNER_POLL_INTERVAL", 1.0),
        heartbeat_interval_s=_float(env, "RUNNER_HEARTBEAT_INTERVAL", 5.0),
        stall_limit_s=_float(env, "RUNNER_STALL_LIMIT", 30.0),
    )
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **clean) if clean else base  # type: ignore[arg-type]
