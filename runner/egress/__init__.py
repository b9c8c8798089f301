"""Egress: a network per workspace job, a fence around it, and a proxy for ``allow``.

The job opens ``JobNetworkSeam.open`` around its steps and hands the
``StepNetwork`` it yields to the step loop, which only copies it into each
step's ``StepSandbox``; the loop never knows networks, firewalls or proxies.
``JobNetworks`` is the real seam (a ``ContainerRuntime``'s networks, the host
firewall, mitmproxy); ``NoJobNetworks`` serves runtimes without networks.
See docs/egress.md.
"""

from runner.egress.network import JobNetworks, JobNetworkSeam, NoJobNetworks, StepNetwork
from runner.egress.policy import NetworkChoice, parse_add_host

__all__ = [
    "JobNetworkSeam",
    "JobNetworks",
    "NetworkChoice",
    "NoJobNetworks",
    "StepNetwork",
    "parse_add_host",
]
