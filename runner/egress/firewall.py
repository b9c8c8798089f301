"""Host firewall rules for a job network: the host and link-local addresses stay out of reach.

Docker already keeps job networks apart (its isolation chains drop traffic
between bridges) and an ``internal`` network has no route out. What Docker
leaves open is the host itself: a step reaches every service the host
listens on through its network's gateway, and under ``open`` its traffic is
forwarded to link-local addresses (169.254.0.0/16, where clouds serve
instance metadata and credentials). So for each job network runner adds:

* in ``INPUT``: connections from the job's bridge to any of the host's
  addresses are refused, except the job's proxy port on the gateway (under
  ``allow``) and addresses ``--allow-host`` lists;
* in ``DOCKER-USER`` (forwarded traffic, ``open`` only): link-local
  destinations are refused unless ``--allow-host`` lists them.

Every rule carries the comment ``runner:<bridge>`` and is removed with its
network; ``sweep`` removes those whose bridge is gone (a run that was killed).
This needs root and iptables; ``available`` says whether runner has them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from runner.errors import ExecutionError
from runner.execute.runtime import NetworkInfo
from runner.log import get_logger
from runner.sandbox import HostPort, SandboxPolicy

log = get_logger("runner.egress.firewall")

LINK_LOCAL = "169.254.0.0/16"
COMMENT_PREFIX = "runner:"
_CHAINS = ("INPUT", "DOCKER-USER")


class Firewall(Protocol):
    def available(self) -> bool:
        """Whether rules can be added here (root, iptables)."""
        ...

    def guard(self, net: NetworkInfo, policy: SandboxPolicy, *, proxy_port: int | None) -> None:
        """Add the job network's rules; ``ExecutionError`` if they cannot be added."""
        ...

    def fenced(self, net: NetworkInfo, policy: SandboxPolicy, proxy_port: int | None) -> bool:
        """Whether every rule ``guard`` would add is in place (a network kept ready by an
        earlier run for the same rules: runner.egress.ready); never raises."""
        ...

    def release(self, net: NetworkInfo) -> None:
        """Remove the job network's rules; never raises."""
        ...

    def sweep(self) -> int:
        """Remove rules of bridges that no longer exist; return how many."""
        ...


class NoFirewall:
    """For runtimes without host bridges (the fake): nothing to add."""

    def available(self) -> bool:
        return True

    def guard(self, net: NetworkInfo, policy: SandboxPolicy, *, proxy_port: int | None) -> None:
        pass

    def fenced(self, net: NetworkInfo, policy: SandboxPolicy, proxy_port: int | None) -> bool:
        return False  # as if made anew: guard is asked again (and adds nothing)

    def release(self, net: NetworkInfo) -> None:
        pass

    def sweep(self) -> int:
        return 0


def _listed_addresses(hosts: tuple[HostPort, ...]) -> list[HostPort]:
    """The ``--allow-host`` entries that are addresses: only those a firewall can name."""
    found = []
    for entry in hosts:
        try:
            ip = ipaddress.ip_address(entry.host)
        except ValueError:
            continue
        if ip.version == 4:
            found.append(entry)
    return found


def rules_for(net: NetworkInfo, policy: SandboxPolicy, proxy_port: int | None) -> list[list[str]]:
    """The iptables rules of one job network, in order, each as (chain, args...)."""
    bridge = net.bridge or ""
    tag = ["-m", "comment", "--comment", f"{COMMENT_PREFIX}{bridge}"]
    listed = _listed_addresses(policy.allow_hosts)

    def accept(chain: str, entry: HostPort) -> list[str]:
        port = ["-p", "tcp", "--dport", str(entry.port)] if entry.port else []
        return [chain, "-i", bridge, "-d", entry.host, *port, *tag, "-j", "ACCEPT"]

    rules: list[list[str]] = []
    if proxy_port is not None:
        to_proxy = ["-d", net.gateway, "-p", "tcp", "--dport", str(proxy_port)]
        rules.append(["INPUT", "-i", bridge, *to_proxy, *tag, "-j", "ACCEPT"])
    rules += [accept("INPUT", entry) for entry in listed]
    rules += [
        ["INPUT", "-i", bridge, "-p", "tcp", *tag, "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["INPUT", "-i", bridge, *tag, "-j", "REJECT"],
    ]
    if not net.internal:
        link_local = ipaddress.ip_network(LINK_LOCAL)
        rules += [
            accept("DOCKER-USER", e) for e in listed if ipaddress.ip_address(e.host) in link_local
        ]
        rules.append(["DOCKER-USER", "-i", bridge, "-d", LINK_LOCAL, *tag, "-j", "REJECT"])
    return rules


class Iptables:
    """The rules through ``iptables`` (waiting for its lock, as Docker's own calls do)."""

    def __init__(self, binary: str = "iptables") -> None:
        self._binary = binary

    def available(self) -> bool:
        return os.geteuid() == 0 and shutil.which(self._binary) is not None

    def guard(self, net: NetworkInfo, policy: SandboxPolicy, *, proxy_port: int | None) -> None:
        if net.bridge is None:
            return
        try:
            # Inserted at the top, last first, so they keep their order ahead of
            # every other rule (Docker's own included).
            for chain, *args in reversed(rules_for(net, policy, proxy_port)):
                self._run(["-I", chain, "1", *args])
        except ExecutionError:
            self.release(net)
            raise

    def release(self, net: NetworkInfo) -> None:
        if net.bridge is None:
            return
        try:
            self._delete(lambda bridge: bridge == net.bridge)
        except ExecutionError as exc:
            log.warning("could not remove a job network's firewall rules", error=str(exc))

    def sweep(self) -> int:
        return self._delete(lambda bridge: not Path("/sys/class/net", bridge).exists())

    def _delete(self, matches: Callable[[str], bool]) -> int:
        removed = 0
        for chain in _CHAINS:
            try:
                listing = self._run(["-S", chain])
            except ExecutionError:
                continue  # no such chain: Docker does not manage iptables here
            for line in listing.splitlines():
                words = shlex.split(line)
                bridge = _bridge_of(words)
                if bridge is None or not matches(bridge) or words[:1] != ["-A"]:
                    continue
                self._run(["-D", *words[1:]])
                removed += 1
        return removed

    def fenced(self, net: NetworkInfo, policy: SandboxPolicy, proxy_port: int | None) -> bool:
        # Checking a rule costs what adding it does; removing and adding all of them,
        # several times that (two listings, a deletion each).
        return net.bridge is None or all(
            self._has(rule) for rule in rules_for(net, policy, proxy_port)
        )

    def _has(self, rule: list[str]) -> bool:
        """Whether ``rule`` (chain, args...) is in place (``iptables -C``)."""
        try:
            done = subprocess.run(
                [self._binary, "-w", "10", "-C", *rule],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def _run(self, args: list[str]) -> str:
        try:
            done = subprocess.run(
                [self._binary, "-w", "10", *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExecutionError(
                f"iptables could not run: {exc}",
                hint="runner needs root and iptables to fence a job's network",
            ) from None
        if done.returncode != 0:
            raise ExecutionError(
                f"iptables {' '.join(args[:2])} failed: {done.stderr.strip()[:300]}",
                hint="runner needs root and iptables to fence a job's network",
            )
        return done.stdout


def _bridge_of(words: list[str]) -> str | None:
    for index, word in enumerate(words[:-1]):
        if word == "--comment" and words[index + 1].startswith(COMMENT_PREFIX):
            return words[index + 1].removeprefix(COMMENT_PREFIX)
    return None


def host_addresses() -> frozenset[str]:
    """This host's own addresses (``ip -j addr``), which steps' proxy never reaches."""
    try:
        done = subprocess.run(
            ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True
        )
        interfaces = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return frozenset()
    found = set()
    for interface in interfaces:
        for info in interface.get("addr_info", []):
            if info.get("local"):
                found.add(str(info["local"]))
    return frozenset(found)
