"""What a job's proxy lets through: pure rules over host names, ports and addresses.

Standard library only: the proxy's addon (``mitm_addon.py``, running in the
proxy's own environment, not runner's) loads this file by path, and runner
builds and tests the same rules in its own process.

A connection goes through when its host and port are on the allow list and
the name resolves (by the proxy, never by the step) to an address the proxy
accepts. The proxy refuses every address that is not globally routable
(loopback, link-local such as a cloud's metadata service at 169.254.169.254,
private ranges, and so other jobs' networks), this host's own addresses and
runner's network pool, unless that address is itself on the allow list. A
name the operator mapped with ``--add-host`` resolves to its mapping and
counts as vetted.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Resolver = Callable[[str, int], list[str]]
MAX_HOST_LENGTH = 253


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to here, in the resolver's order, each once."""
    found: list[str] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found


def normal_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets; addresses in canonical form."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class Verdict:
    """Whether a connection may go, and to which address (the one that was checked)."""

    allowed: bool
    address: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class EgressRules:
    """A job's allow list, the operator's name mappings, and what is never reached."""

    allow: tuple[tuple[str, int | None], ...] = ()
    add_hosts: Mapping[str, str] = field(default_factory=dict)
    host_addresses: frozenset[str] = frozenset()
    blocked_networks: tuple[str, ...] = ()
    # Under ``open`` (a job with brokered secrets gets the proxy there too) every name is
    # listed; addresses are still checked as under ``allow``.
    any_host: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "allow": [[host, port] for host, port in self.allow],
            "add_hosts": dict(self.add_hosts),
            "host_addresses": sorted(self.host_addresses),
            "blocked_networks": list(self.blocked_networks),
            "any_host": self.any_host,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EgressRules:
        return cls(
            allow=tuple((normal_host(h), p) for h, p in data.get("allow", [])),
            add_hosts={normal_host(k): v for k, v in data.get("add_hosts", {}).items()},
            host_addresses=frozenset(normal_host(a) for a in data.get("host_addresses", [])),
            blocked_networks=tuple(data.get("blocked_networks", [])),
            any_host=bool(data.get("any_host", False)),
        )

    @classmethod
    def from_json(cls, text: str) -> EgressRules:
        return cls.from_dict(json.loads(text))

    def listed(self, host: str, port: int) -> bool:
        name = normal_host(host)
        if self.any_host:
            return len(name) <= MAX_HOST_LENGTH
        return any(h == name and (p is None or p == port) for h, p in self.allow)

    def check(self, host: str, port: int, resolve: Resolver = system_resolver) -> Verdict:
        """Whether the proxy connects to ``host:port``, and to which address."""
        name = normal_host(host)
        if len(name) > MAX_HOST_LENGTH or not self.listed(name, port):
            return Verdict(False, reason="it is not on the job's allow list")
        if name in self.add_hosts:
            return Verdict(True, self.add_hosts[name])
        if _address(name) is not None:
            return Verdict(True, name)  # an address listed itself
        try:
            addresses = resolve(name, port)
        except (OSError, UnicodeError):
            return Verdict(False, reason="the name does not resolve")
        for address in addresses:
            if not self.refused_address(address) or self.listed(address, port):
                return Verdict(True, address)
        return Verdict(
            False,
            reason="it resolves only to addresses the proxy refuses "
            "(loopback, link-local, private, or this host's own)",
        )

    def refused_address(self, address: str) -> bool:
        """True for every address a step must not reach unless it is listed itself."""
        ip = _address(address)
        if ip is None:
            return True
        if not ip.is_global or ip.is_multicast or str(ip) in self.host_addresses:
            return True
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.blocked_networks)
