"""The seam of job networks, without the machinery behind it.

``JobNetworkSeam`` is what the workspace job opens around its steps;
``StepNetwork`` what the steps get; ``NoJobNetworks`` serves runtimes without
networks. The real seam (``network.JobNetworks``: the engine's networks, the
firewall, the proxy and the shelf of ready networks) is built behind
``lazy.LazyJobNetworks`` only when a network is opened: this module imports
none of that machinery, so the step loop and the job can import it freely.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from runner.errors import ExecutionError
from runner.records import Frozen
from runner.sandbox import SandboxPolicy

if TYPE_CHECKING:
    from runner.egress.broker import BrokerSession
    from runner.egress.proxy import OnDenied


def _no_entries() -> Mapping[str, str]:
    return MappingProxyType({})


# A frozen record (runner.records): a full cache hit loads it without generating code.
@dataclass(init=False, repr=False, eq=False)
class StepNetwork(Frozen):
    """What a workspace job's steps get: the network to join, /etc/hosts, proxy variables."""

    # The network's name, "container:ID" (its holder's namespace), or None: the
    # engine's default (runtimes without job networks).
    network: str | None = None
    extra_hosts: Mapping[str, str] = field(default_factory=_no_entries)
    proxy_env: Mapping[str, str] = field(default_factory=_no_entries)
    # The job CA's certificate (PEM) when the proxy brokers secrets: steps must trust it.
    ca_cert: str | None = None

    def __init__(
        self,
        network: str | None = None,
        extra_hosts: Mapping[str, str] | None = None,
        proxy_env: Mapping[str, str] | None = None,
        ca_cert: str | None = None,
    ) -> None:
        self._fill(
            network,
            _no_entries() if extra_hosts is None else extra_hosts,
            _no_entries() if proxy_env is None else proxy_env,
            ca_cert,
        )


class JobNetworkSeam(Protocol):
    def open(
        self,
        job_id: str,
        policy: SandboxPolicy,
        on_denied: OnDenied,
        broker: BrokerSession | None = None,
        holder_image: str | None = None,
    ) -> AbstractContextManager[StepNetwork]:
        """The job's network for its steps, taken down when the block ends (never raises then).

        With ``broker``, the steps' HTTP(S) goes through the job's proxy, which brokers.
        With ``holder_image`` (an image of the job's, already present), runc steps
        join the namespace of a holder made from it (``ContainerRuntime.hold_network``).
        """
        ...

    def sweep(self, job_id: str | None = None) -> int:
        """Remove what killed runs of ``job_id`` (all if None) left; return how many."""
        ...

    def drain(self, job_id: str) -> None:
        """Remove the networks the job's ended workspaces left for its next ones, and
        each one handed back from now on (no workspace of the job is left to start)."""
        ...

    def sweep_ready(self, *, everything: bool = False) -> int:
        """Remove kept networks whose run is gone (``everything``: every free one too)."""
        ...


class NoJobNetworks:
    """For runtimes without job networks: steps on the engine's default network.

    ``none`` still takes the network away; ``allow`` cannot be kept and is refused.
    """

    @contextmanager
    def open(
        self,
        job_id: str,
        policy: SandboxPolicy,
        on_denied: OnDenied,
        broker: BrokerSession | None = None,
        holder_image: str | None = None,
    ) -> Iterator[StepNetwork]:
        if policy.network == "allow" or (broker is not None and policy.network != "none"):
            raise ExecutionError(
                "this runner has no job networks, so it cannot enforce --network allow "
                "or broker secrets",
                hint="run with the Docker engine, or use --network none",
            )
        yield without_job_network(policy)

    def sweep(self, job_id: str | None = None) -> int:
        return 0

    def drain(self, job_id: str) -> None:
        pass

    def sweep_ready(self, *, everything: bool = False) -> int:
        return 0


def without_job_network(policy: SandboxPolicy) -> StepNetwork:
    """``none``: no network at all; otherwise the engine's default network."""
    return StepNetwork(
        network="none" if policy.network == "none" else None,
        extra_hosts=MappingProxyType(dict(policy.add_hosts)),
    )
