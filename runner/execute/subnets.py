"""Which subnets of runner's network pool are free, as this process keeps count.

Choosing a job network's subnet by listing the engine's networks each time
costs a round trip per network and forces one network at a time. Instead
``SubnetBook`` lists them once, hands out subnets under a short lock of its
own, and keeps what this process holds; networks are then made concurrently.
Another process may take a subnet meanwhile: the engine refuses it
("overlaps"), the caller reports it with ``refused``, and the next
``reserve`` (with ``relist``) lists the engine's networks again.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Sequence

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


class SubnetBook:
    """Free subnets of ``pool`` of a given prefix, minus what the engine and this process hold."""

    def __init__(self, pool: ipaddress.IPv4Network, prefix: int) -> None:
        self.pool = pool
        self._prefix = prefix
        self._lock = threading.Lock()
        self._listed: list[Subnet] | None = None  # the engine's, as last listed, ours left out
        self._ours: set[Subnet] = set()  # reserved or held by this process
        self._held: dict[str, Subnet] = {}  # network name -> its subnet

    def reserve(
        self, listing: Callable[[], Sequence[Subnet]], *, relist: bool
    ) -> ipaddress.IPv4Network | None:
        """A subnet no known network holds, now this process's; None if the pool is full.

        ``listing`` gives the engine's subnets; it is called the first time and
        with ``relist``.
        """
        with self._lock:
            if self._listed is None or relist:
                self._listed = [s for s in listing() if s not in self._ours]
            for subnet in self.pool.subnets(new_prefix=self._prefix):
                if subnet in self._ours or any(subnet.overlaps(o) for o in self._listed):
                    continue
                self._ours.add(subnet)
                return subnet
            return None

    def hold(self, name: str, subnet: Subnet) -> None:
        """``subnet`` is now network ``name``'s."""
        with self._lock:
            self._held[name] = subnet

    def refused(self, subnet: Subnet) -> None:
        """The engine refused ``subnet``: another process holds it."""
        with self._lock:
            self._ours.discard(subnet)
            if self._listed is not None:
                self._listed.append(subnet)

    def release(self, subnet: Subnet) -> None:
        """A reserved subnet that was not used after all."""
        with self._lock:
            self._ours.discard(subnet)

    def removed(self, name: str) -> None:
        """Network ``name`` is gone: its subnet is free again (no-op for others' networks)."""
        with self._lock:
            subnet = self._held.pop(name, None)
            if subnet is not None:
                self._ours.discard(subnet)
                if self._listed is not None and subnet in self._listed:
                    self._listed.remove(subnet)
