"""The network side of a policy, from flags and settings.

How a coordinator's and an executor's policies combine is ``runner.sandbox.tighten``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from runner.errors import UsageError
from runner.records import Frozen
from runner.sandbox import HostPort, NetworkPolicy, SandboxPolicy
from runner.sandbox.policy import NETWORK_POLICIES

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


def parse_add_host(text: str) -> tuple[str, str]:
    """``NAME:ADDRESS`` as Docker's ``--add-host`` (the address may be IPv6)."""
    name, sep, address = text.strip().partition(":")
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        ip = None
    if not sep or ip is None or not _NAME.fullmatch(name):
        raise UsageError(
            f"{text!r} is not NAME:ADDRESS",
            hint="map a host name to an IP address, like git.internal:10.0.0.5",
        )
    return name.lower().rstrip("."), str(ip)


# A frozen record (runner.records): a full cache hit loads it without generating code.
@dataclass(init=False, repr=False, eq=False)
class NetworkChoice(Frozen):
    """``--network``, ``--allow-host``, ``--add-host`` and ``--broker-ca-file``, parsed.

    ``broker_ca_file`` is the operator's: what the job's proxy trusts for the real
    servers of brokered hosts (a submitted job never sets it).
    """

    network: NetworkPolicy = "open"
    allow_hosts: tuple[HostPort, ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()
    broker_ca_file: Path | None = None

    def __init__(
        self,
        network: NetworkPolicy = "open",
        allow_hosts: tuple[HostPort, ...] = (),
        add_hosts: tuple[tuple[str, str], ...] = (),
        broker_ca_file: Path | None = None,
    ) -> None:
        self._fill(network, allow_hosts, add_hosts, broker_ca_file)

    @classmethod
    def parse(
        cls,
        network: str | None,
        allow_hosts: Iterable[str],
        add_hosts: Iterable[str],
        broker_ca_file: Path | None = None,
    ) -> NetworkChoice:
        chosen = network or "open"
        if chosen not in NETWORK_POLICIES:
            raise UsageError(
                f"unknown network policy {chosen!r}",
                hint=f"use one of {', '.join(NETWORK_POLICIES)}",
            )
        return cls(
            network=chosen,
            allow_hosts=tuple(HostPort.parse(entry) for entry in allow_hosts),
            add_hosts=tuple(parse_add_host(entry) for entry in add_hosts),
            broker_ca_file=broker_ca_file,
        )

    def apply(self, policy: SandboxPolicy) -> SandboxPolicy:
        return replace(
            policy, network=self.network, allow_hosts=self.allow_hosts, add_hosts=self.add_hosts
        )
