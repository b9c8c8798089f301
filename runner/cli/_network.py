"""The network flags of `runner run` and `runner executor`, and the job networks they use.

``network_options`` adds ``--network``, ``--allow-host``, ``--add-host`` and
``--broker-ca-file``; the command gets them as one ``NetworkChoice`` (flags
over settings over defaults: ``RUNNER_NETWORK``, ``RUNNER_ALLOW_HOSTS``,
``RUNNER_ADD_HOSTS``, ``RUNNER_BROKER_CA_FILE``),
which it applies to its ``SandboxPolicy``. ``job_networks`` wires the real
seam: the engine's networks, the host firewall and the mitmproxy proxy.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli._options import option_group
from runner.config import NETWORK_POLICIES, Settings
from runner.egress import NetworkChoice
from runner.egress.firewall import HostFirewall
from runner.egress.lazy import LazyJobNetworks
from runner.execute.runtime import ContainerRuntime

if TYPE_CHECKING:
    from runner.egress.network import JobNetworks

__all__ = ["NetworkChoice", "job_networks", "network_choice", "network_options", "proxy_binary"]


def network_choice(
    settings: Settings,
    network: str | None,
    allow_hosts: tuple[str, ...],
    add_hosts: tuple[str, ...],
    broker_ca_file: Path | None = None,
) -> NetworkChoice:
    """Flags over settings over defaults."""
    return NetworkChoice.parse(
        network or settings.network,
        allow_hosts or settings.allow_hosts,
        add_hosts or settings.add_hosts,
        broker_ca_file or settings.broker_ca_file,
    )


def proxy_binary(settings: Settings) -> Path:
    """``RUNNER_PROXY_BIN``, else the proxy's own environment beside runner's, else PATH."""
    if settings.proxy_bin is not None:
        return settings.proxy_bin
    beside = Path(sys.prefix) / "proxy" / "bin" / "mitmdump"
    if beside.exists():
        return beside
    found = shutil.which("mitmdump")
    return Path(found) if found else beside


def job_networks(
    settings: Settings,
    runtime: ContainerRuntime,
    broker_ca_file: Path | None = None,
    *,
    keep_ready: bool = False,
) -> LazyJobNetworks:
    """``broker_ca_file``: ``NetworkChoice.broker_ca_file`` (else the setting).

    ``keep_ready``: networks are kept ready between runs of this ``RUNNER_HOME``
    (`runner run`, and `runner cleanup`, which removes them).

    The real seam (``JobNetworks``, with the proxy, its rules and the shelf) is
    built when a network is first opened or something must be removed: a fully
    cached run never loads it.
    """
    firewall = HostFirewall()
    shelf = settings.home / "ready-networks" if keep_ready and settings.ready_networks > 0 else None

    def make() -> JobNetworks:
        from runner.egress.network import JobNetworks
        from runner.egress.proxy import MitmProxy
        from runner.egress.ready import ReadyNetworks

        ready = None
        if shelf is not None:
            ready = ReadyNetworks(shelf, pool=settings.network_pool, limit=settings.ready_networks)
        return JobNetworks(
            runtime,
            firewall=firewall,
            proxy=MitmProxy(
                proxy_binary(settings), upstream_ca=broker_ca_file or settings.broker_ca_file
            ),
            pool=settings.network_pool,
            ready=ready,
        )

    return LazyJobNetworks(make, firewall=firewall, ready=shelf)


def _chosen(**flags: Any) -> NetworkChoice:
    from runner.cli._app import app

    return network_choice(app().settings, **flags)


network_options = option_group(
    {
        "network": click.option(
            "--network",
            type=click.Choice(NETWORK_POLICIES),
            help="open (a network of the job's own), none (no network) or allow (only "
            "--allow-host entries, through a proxy); default RUNNER_NETWORK or open.",
        ),
        "allow_hosts": click.option(
            "--allow-host",
            "allow_hosts",
            metavar="HOST[:PORT]",
            multiple=True,
            help="A host steps may reach under --network allow, or a link-local or host "
            "address they may reach under open (repeatable; default RUNNER_ALLOW_HOSTS).",
        ),
        "add_hosts": click.option(
            "--add-host",
            "add_hosts",
            metavar="NAME:ADDRESS",
            multiple=True,
            help="Map NAME to ADDRESS for the steps and the proxy alike (repeatable; "
            "default RUNNER_ADD_HOSTS).",
        ),
        "broker_ca_file": click.option(
            "--broker-ca-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="The roots the job's proxy trusts for the real servers of brokered hosts "
            "(a private code host's CA); default RUNNER_BROKER_CA_FILE, else the system's.",
        ),
    },
    into="network_choice",
    pack=_chosen,
)
"""``--network``, ``--allow-host``, ``--add-host``; the command gets ``network_choice``."""
