"""The sandbox policy's value objects; pure data, no engine calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from runner.errors import UsageError
from runner.records import Frozen

Isolation = Literal["runc", "gvisor"]
NetworkPolicy = Literal["open", "none", "allow"]
ISOLATIONS: tuple[Isolation, ...] = ("runc", "gvisor")
NETWORK_POLICIES: tuple[NetworkPolicy, ...] = ("open", "none", "allow")

# Removed from Docker's default capability set on every step. None of them is
# needed to install packages as root; each is a known way to attack neighbours
# or the host (raw sockets spoof and sniff, device nodes reach host devices,
# file capabilities plant privileged binaries, audit writes flood the host's log).
DROPPED_CAPABILITIES: tuple[str, ...] = ("NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP")


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class HostPort(Frozen):
    """A host name or address, with a port or any port (``None``)."""

    host: str
    port: int | None = None

    def __init__(self, host: str, port: int | None = None) -> None:
        self._fill(host, port)

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """``HOST`` or ``HOST:PORT`` (``[IPv6]:PORT`` for IPv6 addresses)."""
        raw = text.strip()
        host, port_text = raw, ""
        if raw.startswith("["):
            end = raw.find("]")
            if end < 0:
                raise UsageError(f"{text!r} is not HOST[:PORT]", hint="write [::1]:8080")
            host, port_text = raw[1:end], raw[end + 1 :].removeprefix(":")
        elif raw.count(":") == 1:
            host, port_text = raw.split(":")
        if not host or any(c.isspace() for c in host) or "/" in host or "@" in host:
            raise UsageError(
                f"{text!r} is not HOST[:PORT]",
                hint="give a host name or address, like example.com:443",
            )
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise UsageError(f"{text!r} has no valid port", hint="give a port from 1 to 65535")
            port = int(port_text)
        return cls(host.lower(), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(init=False, repr=False, eq=False)
class Hardening(Frozen):
    """What every step's container gets, at every isolation level."""

    no_new_privileges: bool = True
    cap_drop: tuple[str, ...] = DROPPED_CAPABILITIES
    pids_limit: int | None = 1024
    user: str | None = None  # UID[:GID]; None keeps the image's user, as Sourcegraph does
    init: bool = True

    def __init__(
        self,
        *,
        no_new_privileges: bool = True,
        cap_drop: tuple[str, ...] = DROPPED_CAPABILITIES,
        pids_limit: int | None = 1024,
        user: str | None = None,
        init: bool = True,
    ) -> None:
        self._fill(no_new_privileges, cap_drop, pids_limit, user, init)


@dataclass(init=False, repr=False, eq=False)
class SandboxPolicy(Frozen):
    """A job's confinement: decided once, before the job's first container."""

    isolation: Isolation = "runc"
    hardening: Hardening = field(default_factory=Hardening)
    network: NetworkPolicy = "open"
    allow_hosts: tuple[HostPort, ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()  # (name, address), as Docker's --add-host
    job_timeout_s: float | None = None  # wall time across all steps of a workspace job
    disk_cap_bytes: int | None = None  # workspace plus the container's writable layer

    def __init__(
        self,
        *,
        isolation: Isolation = "runc",
        hardening: Hardening | None = None,
        network: NetworkPolicy = "open",
        allow_hosts: tuple[HostPort, ...] = (),
        add_hosts: tuple[tuple[str, str], ...] = (),
        job_timeout_s: float | None = None,
        disk_cap_bytes: int | None = None,
    ) -> None:
        self._fill(
            isolation,
            Hardening() if hardening is None else hardening,
            network,
            allow_hosts,
            add_hosts,
            job_timeout_s,
            disk_cap_bytes,
        )
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise UsageError(
                f"unknown isolation {self.isolation!r}", hint=f"use one of {', '.join(ISOLATIONS)}"
            )
        if self.network not in NETWORK_POLICIES:
            raise UsageError(
                f"unknown network policy {self.network!r}",
                hint=f"use one of {', '.join(NETWORK_POLICIES)}",
            )
        if self.job_timeout_s is not None and self.job_timeout_s <= 0:
            raise UsageError("the job timeout must be positive", hint="pass --job-timeout > 0")
        if self.disk_cap_bytes is not None and self.disk_cap_bytes <= 0:
            raise UsageError("the disk cap must be positive", hint="pass --disk-cap like 2g")


def _no_entries() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(init=False, repr=False, eq=False)
class StepSandbox(Frozen):
    """What one step's container gets from its job's policy and its job's network."""

    isolation: Isolation = "runc"
    hardening: Hardening = field(default_factory=Hardening)
    # The Docker network the container joins: the job's own, or "none". None: the
    # engine's default bridge (only runtimes without job networks, such as the fake).
    network: str | None = None
    extra_hosts: Mapping[str, str] = field(
        default_factory=_no_entries
    )  # name -> address, for the step's /etc/hosts
    proxy_env: Mapping[str, str] = field(
        default_factory=_no_entries
    )  # HTTP(S)_PROXY and NO_PROXY, when egress is proxied

    def __init__(
        self,
        *,
        isolation: Isolation = "runc",
        hardening: Hardening | None = None,
        network: str | None = None,
        extra_hosts: Mapping[str, str] | None = None,
        proxy_env: Mapping[str, str] | None = None,
    ) -> None:
        self._fill(
            isolation,
            Hardening() if hardening is None else hardening,
            network,
            _no_entries() if extra_hosts is None else extra_hosts,
            _no_entries() if proxy_env is None else proxy_env,
        )
