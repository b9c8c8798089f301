"""A coordinator's per-namespace requirements, and the one rule that combines them.

An admin sets a ``NamespacePolicy`` on the coordinator (`runner namespace
set`); every claim of a job in that namespace carries it, and the executor
runs the job under ``tighten(its own policy, the requirement)``. The rule
only ever narrows, so an executor never loosens what the coordinator set:

* network: the stricter of the two (``none`` < ``allow`` < ``open``);
* ``allow_hosts``: only what both sides let through (see ``_hosts``);
* isolation: ``gvisor`` wins over ``runc``;
* job timeout and disk cap: the smaller one (an unset one is no limit).

Hardening and ``add_hosts`` are the executor operator's settings and pass
through unchanged: a namespace cannot ask for them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from runner.errors import UsageError
from runner.sandbox.policy import (
    ISOLATIONS,
    NETWORK_POLICIES,
    HostPort,
    Isolation,
    NetworkPolicy,
    SandboxPolicy,
)

N = TypeVar("N", int, float)

# How much each network policy lets out, least first.
_OPENNESS: Mapping[str, int] = {"none": 0, "allow": 1, "open": 2}


@dataclass(frozen=True, kw_only=True)
class NamespacePolicy:
    """What a coordinator requires of every job in one namespace; ``None``: no requirement."""

    isolation: Isolation | None = None
    network: NetworkPolicy | None = None
    allow_hosts: tuple[HostPort, ...] = ()
    job_timeout_s: float | None = None
    disk_cap_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.isolation is not None and self.isolation not in ISOLATIONS:
            raise UsageError(
                f"unknown isolation {self.isolation!r}", hint=f"use one of {', '.join(ISOLATIONS)}"
            )
        if self.network is not None and self.network not in NETWORK_POLICIES:
            raise UsageError(
                f"unknown network policy {self.network!r}",
                hint=f"use one of {', '.join(NETWORK_POLICIES)}",
            )
        if self.allow_hosts and self.network in (None, "none"):
            raise UsageError(
                "--allow-host needs --network allow (or open, for private addresses)",
                hint="add --network allow, or drop --allow-host",
            )
        if self.job_timeout_s is not None and self.job_timeout_s <= 0:
            raise UsageError("the job timeout must be positive", hint="pass --job-timeout > 0")
        if self.disk_cap_bytes is not None and self.disk_cap_bytes <= 0:
            raise UsageError("the disk cap must be positive", hint="pass --disk-cap like 2g")

    @property
    def empty(self) -> bool:
        return self == NamespacePolicy()

    def to_json(self) -> dict[str, Any]:
        return _as_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> NamespacePolicy:
        """The policy ``to_json`` wrote; ``UsageError`` naming what is wrong otherwise."""
        if not data:
            return cls()
        try:
            hosts = tuple(HostPort.parse(str(h)) for h in data.get("allow_hosts") or ())
            timeout = data.get("job_timeout_s")
            cap = data.get("disk_cap_bytes")
            return cls(
                isolation=cast(Isolation | None, data.get("isolation")),
                network=cast(NetworkPolicy | None, data.get("network")),
                allow_hosts=hosts,
                job_timeout_s=float(timeout) if timeout is not None else None,
                disk_cap_bytes=int(cap) if cap is not None else None,
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise UsageError(
                f"malformed namespace policy ({type(exc).__name__})",
                hint="send isolation, network, allow_hosts, job_timeout_s and disk_cap_bytes",
            ) from None


def tighten(policy: SandboxPolicy, required: NamespacePolicy) -> SandboxPolicy:
    """``policy`` narrowed by ``required``; never looser than either of them."""
    network, hosts = policy.network, policy.allow_hosts
    if required.network is not None:
        network = min(policy.network, required.network, key=_OPENNESS.__getitem__)
        hosts = (
            ()
            if network == "none"
            else _hosts(
                (policy.network, policy.allow_hosts), (required.network, required.allow_hosts)
            )
        )
    isolation: Isolation = (
        "gvisor" if "gvisor" in (policy.isolation, required.isolation) else "runc"
    )
    return replace(
        policy,
        isolation=isolation,
        network=network,
        allow_hosts=hosts,
        job_timeout_s=_smaller(policy.job_timeout_s, required.job_timeout_s),
        disk_cap_bytes=_smaller(policy.disk_cap_bytes, required.disk_cap_bytes),
    )


def sandbox_summary(policy: SandboxPolicy) -> dict[str, Any]:
    """What a job ran under, for its result and log (no operator-only detail)."""
    return _as_json(policy)


def _as_json(policy: SandboxPolicy | NamespacePolicy) -> dict[str, Any]:
    """The fields a requirement and a policy share, in one JSON shape for both."""
    return {
        "isolation": policy.isolation,
        "network": policy.network,
        "allow_hosts": [str(h) for h in policy.allow_hosts],
        "job_timeout_s": policy.job_timeout_s,
        "disk_cap_bytes": policy.disk_cap_bytes,
    }


def describe(data: Mapping[str, Any]) -> str:
    """One line for people from ``to_json`` or ``sandbox_summary``: what is set, in order."""
    parts = []
    if data.get("isolation"):
        parts.append(f"isolation {data['isolation']}")
    if data.get("network"):
        hosts = ", ".join(data.get("allow_hosts") or ())
        parts.append(f"network {data['network']}" + (f" ({hosts})" if hosts else ""))
    if data.get("job_timeout_s") is not None:
        parts.append(f"job timeout {data['job_timeout_s']:g} s")
    if data.get("disk_cap_bytes") is not None:
        parts.append(f"disk cap {format_size(int(data['disk_cap_bytes']))}")
    return ", ".join(parts) or "no requirements"


def format_size(n: int) -> str:
    """Bytes as people write them: ``2 GiB``, ``512 MiB``, ``64 KiB``, ``100 B``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} B"


# allow_hosts ---------------------------------------------------------------------------------

Side = tuple[NetworkPolicy, Sequence[HostPort]]


def _hosts(a: Side, b: Side) -> tuple[HostPort, ...]:
    """What both sides let through, as one list.

    Under ``allow`` a side lets through only its listed hosts. Under ``open``
    it lets through every public host, and a loopback, link-local or private
    address only when listed (the proxy's rule under every policy). So each
    entry of one side is kept as far as the other side lets it through.
    """
    found = [*_let_through(b, a[1]), *_let_through(a, b[1])]
    return _without_covered(found)


def _let_through(side: Side, entries: Iterable[HostPort]) -> list[HostPort]:
    network, listed = side
    kept: list[HostPort] = []
    for entry in entries:
        if network == "open" and not _special(entry.host):
            kept.append(entry)
            continue
        kept.extend(m for m in (_meet(entry, other) for other in listed) if m is not None)
    return kept


def _meet(a: HostPort, b: HostPort) -> HostPort | None:
    """What both entries allow: the same host, on a port both allow."""
    if a.host != b.host:
        return None
    if a.port is None or b.port is None or a.port == b.port:
        return HostPort(a.host, a.port if a.port is not None else b.port)
    return None


def _without_covered(entries: Sequence[HostPort]) -> tuple[HostPort, ...]:
    """Drop repeats, and a ``HOST:PORT`` where ``HOST`` (any port) is there too."""
    any_port = {e.host for e in entries if e.port is None}
    out: list[HostPort] = []
    for entry in entries:
        if entry in out or (entry.port is not None and entry.host in any_port):
            continue
        out.append(entry)
    return tuple(out)


def _special(host: str) -> bool:
    """Loopback, link-local, private and other non-public addresses (and ``localhost``)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False  # a name: the proxy checks what it resolves to


def _smaller(a: N | None, b: N | None) -> N | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None
