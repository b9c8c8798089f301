"""Egress: a network per workspace job, a fence around it, and a proxy for ``allow``.

The job opens ``JobNetworkSeam.open`` around its steps and hands the
``StepNetwork`` it yields to the step loop, which only copies it into each
step's ``StepSandbox``; the loop never knows networks, firewalls or proxies.
``JobNetworks`` is the real seam (a ``ContainerRuntime``'s networks, the host
firewall, mitmproxy); ``NoJobNetworks`` serves runtimes without networks.
The seam itself lives in ``seam`` and loads none of the machinery: ``JobNetworks``
is imported from ``network`` only when asked for, and ``lazy.LazyJobNetworks``
builds it only when a network is opened, so a run that opens none (a fully
cached one) never loads it. See docs/egress.md.
"""

from typing import TYPE_CHECKING, Any

from runner.egress.policy import NetworkChoice, parse_add_host
from runner.egress.seam import JobNetworkSeam, NoJobNetworks, StepNetwork

if TYPE_CHECKING:
    from runner.egress.network import JobNetworks

__all__ = [
    "JobNetworkSeam",
    "JobNetworks",
    "NetworkChoice",
    "NoJobNetworks",
    "StepNetwork",
    "parse_add_host",
]


def __getattr__(name: str) -> Any:
    # The real seam and what it loads (proxy, rules, broker), on first use only.
    if name == "JobNetworks":
        from runner.egress.network import JobNetworks

        return JobNetworks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
