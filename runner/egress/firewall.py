"""Host firewall rules for a job network: the host, link-local addresses and other
networks stay out of reach.

Docker keeps bridge networks apart with its ``DOCKER-ISOLATION`` chains, and an
``internal`` network has no route out. That fence has a gap. Each time any
network is made on the engine, Docker 20.10 inserts the new bridge's
``ACCEPT`` rules at the top of ``FORWARD``, then deletes its jumps to
``DOCKER-USER`` and ``DOCKER-ISOLATION-STAGE-1`` and inserts them again
above, one ``iptables`` call after another. In between, every bridge's own
``ACCEPT`` rules apply alone: a step reaches a container on another network,
or a link-local address that a rule in ``DOCKER-USER`` refused. With plain
Docker, a container probing another network every 20 ms got through 14 to 20
times while networks were made for 10 seconds. And since the new rules go on
top, no rule of runner's in ``FORWARD`` stays ahead of them.

So the forwarding rules are not iptables rules. They live in an nftables
table of runner's own, ``inet runner``, whose ``forward`` chain Docker never
touches; a packet it rejects is rejected whatever ``FORWARD`` says. The rules
for the host stay in iptables ``INPUT``, which Docker leaves alone, where an
``ACCEPT`` for the proxy port stays ahead of a host's own refusals. For each
job network runner adds:

* in ``INPUT``: connections from the job's bridge to any of the host's
  addresses are refused, except the job's proxy port on the gateway (under
  ``allow``) and addresses ``--allow-host`` lists;
* in ``inet runner forward``, under ``open``: link-local destinations are
  refused unless ``--allow-host`` lists them, and so is traffic between the
  job's bridge and any other runner bridge (``rnr*``) or Docker's default
  bridge ``docker0``, either way;
* in ``inet runner forward``, for an ``internal`` network (``allow``):
  nothing is forwarded into or out of its bridge (its proxy is on the host).

Every rule carries the comment ``runner:<bridge>`` and is removed with its
network; ``sweep`` removes those whose bridge is gone (a run that was
killed), and rules an older runner put in ``DOCKER-USER``. The table stays:
empty, it matches nothing. This needs root and iptables (``available``); without
``nft``, ``allow`` is refused and ``open`` gets the ``INPUT`` rules and its
link-local rule in ``DOCKER-USER``, as before the table, with a warning.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Protocol

from runner.errors import ExecutionError
from runner.execute.runtime import NetworkInfo
from runner.log import get_logger
from runner.sandbox import HostPort, SandboxPolicy

log = get_logger("runner.egress.firewall")

LINK_LOCAL = "169.254.0.0/16"
COMMENT_PREFIX = "runner:"
# Every runner job network's bridge is named ``rnr`` + 12 hex digits (docker_runtime).
RUNNER_BRIDGES = "rnr*"
# Docker's default bridge, where plain ``docker run`` containers are.
DEFAULT_BRIDGE = "docker0"
# DOCKER-USER: where runner's forwarding rules were before its nftables table; swept.
_IPTABLES_CHAINS = ("INPUT", "DOCKER-USER")
# How old a listing of the rules may be to serve ``fenced`` (see ``_rule_counts``).
_COUNTS_FRESH_S = 1.0


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


def _listed_link_local(policy: SandboxPolicy) -> list[HostPort]:
    """The ``--allow-host`` addresses that are link-local: the forwarded exceptions."""
    link_local = ipaddress.ip_network(LINK_LOCAL)
    listed = _listed_addresses(policy.allow_hosts)
    return [entry for entry in listed if ipaddress.ip_address(entry.host) in link_local]


def rules_for(net: NetworkInfo, policy: SandboxPolicy, proxy_port: int | None) -> list[list[str]]:
    """The iptables rules of one job network, in order, each as (chain, args...): ``INPUT``."""
    bridge = net.bridge or ""
    tag = ["-m", "comment", "--comment", f"{COMMENT_PREFIX}{bridge}"]
    rules: list[list[str]] = []
    if proxy_port is not None:
        to_proxy = ["-d", net.gateway, "-p", "tcp", "--dport", str(proxy_port)]
        rules.append(["INPUT", "-i", bridge, *to_proxy, *tag, "-j", "ACCEPT"])
    for entry in _listed_addresses(policy.allow_hosts):
        port = ["-p", "tcp", "--dport", str(entry.port)] if entry.port else []
        rules.append(["INPUT", "-i", bridge, "-d", entry.host, *port, *tag, "-j", "ACCEPT"])
    rules += [
        ["INPUT", "-i", bridge, "-p", "tcp", *tag, "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["INPUT", "-i", bridge, *tag, "-j", "REJECT"],
    ]
    return rules


def forward_rules(net: NetworkInfo, policy: SandboxPolicy) -> list[str]:
    """The nftables rules of one job network in runner's ``forward`` chain, in order."""
    bridge = net.bridge or ""
    tag = f'comment "{COMMENT_PREFIX}{bridge}"'
    me, other = f'"{bridge}"', f'!= "{bridge}"'

    def refuse(match: str) -> list[str]:
        # TCP with a reset, so a connection fails at once: under gVisor an ICMP error
        # leaves it waiting out its timeout (and a step making many waits on threads).
        return [
            f"{match} meta l4proto tcp reject with tcp reset {tag}",
            f"{match} reject {tag}",
        ]

    if net.internal:
        # Nothing leaves or enters an internal network's bridge but through the host.
        return [*refuse(f"iifname {me} oifname {other}"), *refuse(f"oifname {me} iifname {other}")]
    rules = []
    for entry in _listed_link_local(policy):
        port = f" tcp dport {entry.port}" if entry.port else ""
        rules.append(f"iifname {me} ip daddr {entry.host}{port} accept {tag}")
    rules += refuse(f"iifname {me} ip daddr {LINK_LOCAL}")
    for bridges in (RUNNER_BRIDGES, DEFAULT_BRIDGE):
        rules += refuse(f'iifname {me} oifname {other} oifname "{bridges}"')
        rules += refuse(f'oifname {me} iifname {other} iifname "{bridges}"')
    return rules


def docker_user_rules(net: NetworkInfo, policy: SandboxPolicy) -> list[list[str]]:
    """Where there is no ``nft``: the link-local rules of an ``open`` network in Docker's
    ``DOCKER-USER``, as runner had them before its table (with Docker's gap)."""
    if net.internal:
        return []
    bridge = net.bridge or ""
    tag = ["-m", "comment", "--comment", f"{COMMENT_PREFIX}{bridge}"]
    rules = []
    for entry in _listed_link_local(policy):
        port = ["-p", "tcp", "--dport", str(entry.port)] if entry.port else []
        rules.append(["DOCKER-USER", "-i", bridge, "-d", entry.host, *port, *tag, "-j", "ACCEPT"])
    rules.append(["DOCKER-USER", "-i", bridge, "-d", LINK_LOCAL, *tag, "-j", "REJECT"])
    return rules


class HostFirewall:
    """``INPUT`` rules through ``iptables`` (waiting for its lock, as Docker's own calls
    do); forwarding rules through ``nft``, in runner's own table.

    A host with iptables and no ``nft`` still gets the ``INPUT`` rules and the
    link-local rule in ``DOCKER-USER`` (``docker_user_rules``), with a warning:
    Docker lifts that chain, and its isolation chains, for a moment each time
    a network is made.
    """

    def __init__(self, iptables: str = "iptables", nft: str = "nft") -> None:
        self._iptables_bin = iptables
        self._nft_bin = nft
        self._warned = False
        # The rule counts ``fenced`` last listed, and when that listing began.
        self._counted: tuple[float, Counter[str], Counter[str]] | None = None
        self._counting = threading.Lock()

    def available(self) -> bool:
        return os.geteuid() == 0 and shutil.which(self._iptables_bin) is not None

    @cached_property
    def has_nft(self) -> bool:
        # Once: guard, fenced and release each ask, per network.
        return shutil.which(self._nft_bin) is not None

    def _host_rules(
        self, net: NetworkInfo, policy: SandboxPolicy, port: int | None
    ) -> list[list[str]]:
        """The iptables rules ``guard`` adds here: ``INPUT``, and without nft DOCKER-USER's."""
        extra = [] if self.has_nft else docker_user_rules(net, policy)
        return [*rules_for(net, policy, port), *extra]

    def _warn_without_nft(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "nft is not installed: runner's fence between job networks and against "
                "link-local addresses falls back to Docker's chains, which Docker lifts for "
                "a moment each time a network is made; install nftables",
            )

    def guard(self, net: NetworkInfo, policy: SandboxPolicy, *, proxy_port: int | None) -> None:
        if net.bridge is None:
            return
        self._counted = None  # the counts change
        try:
            if self.has_nft:
                # One transaction: the table and chain if they are not there yet, and the
                # network's rules, all or none.
                self._nft_script(
                    [*_TABLE, *(f"add rule {_CHAIN} {r}" for r in forward_rules(net, policy))]
                )
            elif net.internal:
                # Under `allow` the proxy is the only way out; with Docker's gap it is not.
                raise ExecutionError(
                    "runner cannot keep --network allow's network closed without nft: "
                    "Docker opens it for a moment each time a network is made",
                    hint="install nftables (apt-get install nftables), or use --network none",
                )
            else:
                self._warn_without_nft()
            # Inserted at the top, last first, so they keep their order ahead of
            # every other rule (the host's own included).
            for chain, *args in reversed(self._host_rules(net, policy, proxy_port)):
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
        self._counted = None  # the counts change
        removed = self._delete_forward(matches)
        for chain in _IPTABLES_CHAINS:
            for bridge, rule in self._listed(chain):
                if matches(bridge):
                    self._run(["-D", *rule])
                    removed += 1
        return removed

    def _listed(self, chain: str) -> list[tuple[str, list[str]]]:
        """runner's rules in ``chain`` (iptables): the bridge each fences, and the rule
        (chain, args...); none if there is no such chain (``DOCKER-USER`` where Docker
        leaves iptables be)."""
        try:
            listing = self._run(["-S", chain])
        except ExecutionError:
            return []
        found = []
        for line in listing.splitlines():
            words = shlex.split(line)
            bridge = _bridge_of(words)
            if bridge is not None and words[:1] == ["-A"]:
                found.append((bridge, words[1:]))
        return found

    def _delete_forward(self, matches: Callable[[str], bool]) -> int:
        if not self.has_nft:
            return 0
        handles = [h for h, bridge in self._forward_listing() if matches(bridge)]
        if not handles:
            return 0
        deletions = [f"delete rule {_CHAIN} handle {h}" for h in handles]
        try:
            self._nft_script(deletions)
        except ExecutionError:
            # Another run removed one meanwhile (a sweep): the rest one by one.
            for line in deletions:
                with contextlib.suppress(ExecutionError):
                    self._nft_script([line])
        return len(handles)

    def _forward_listing(self) -> list[tuple[int, str]]:
        """(handle, bridge) of each rule of runner's in its forward chain."""
        try:
            listing = self._nft(["-j", "-a", "list", "chain", *_CHAIN.split()])
        except ExecutionError:
            return []  # no table yet: no rule
        found = []
        for item in json.loads(listing).get("nftables", []):
            rule = item.get("rule") if isinstance(item, dict) else None
            if not isinstance(rule, dict):
                continue
            comment = rule.get("comment")
            if isinstance(comment, str) and comment.startswith(COMMENT_PREFIX):
                found.append((int(rule["handle"]), comment.removeprefix(COMMENT_PREFIX)))
        return found

    def fenced(self, net: NetworkInfo, policy: SandboxPolicy, proxy_port: int | None) -> bool:
        # Counted from listings rather than checked rule by rule (``iptables -C``
        # each): a run's first workspaces take their kept networks at once, and wait
        # for this before their containers are made. Only runner adds rules carrying
        # its comment with a bridge's name, and only for the rules a kept network was
        # taken for: the right count is the right rules; one missing is noticed.
        if net.bridge is None:
            return True
        try:
            forward, host = self._rule_counts()
        except ExecutionError:
            return False
        if self.has_nft and forward[net.bridge] != len(forward_rules(net, policy)):
            return False
        return host[net.bridge] == len(self._host_rules(net, policy, proxy_port))

    def _rule_counts(self) -> tuple[Counter[str], Counter[str]]:
        """How many rules of runner's each bridge has: forward (nft), then iptables.

        From listings at most ``_COUNTS_FRESH_S`` older than the ask: the
        networks a run's first workspaces take at once share one. The check
        is against rules gone since an earlier run kept the network (a
        reboot, a flush), not a race; this process's own changes drop them.
        """
        asked = time.monotonic()
        with self._counting:
            if self._counted is not None and self._counted[0] >= asked - _COUNTS_FRESH_S:
                return self._counted[1], self._counted[2]
            began = time.monotonic()
            forward: Counter[str] = Counter()
            if self.has_nft:
                try:
                    forward.update(bridge for _, bridge in self._forward_listing())
                except ValueError as exc:  # not the listing nft gives
                    raise ExecutionError(f"could not read nft's listing: {exc}") from exc
            host: Counter[str] = Counter()
            for chain in _IPTABLES_CHAINS if not self.has_nft else ("INPUT",):
                host.update(bridge for bridge, _ in self._listed(chain))
            self._counted = (began, forward, host)
            return forward, host

    def _run(self, args: list[str]) -> str:
        return _tool([self._iptables_bin, "-w", "10", *args])

    def _nft(self, args: list[str]) -> str:
        return _tool([self._nft_bin, *args])

    def _nft_script(self, lines: list[str]) -> None:
        _tool([self._nft_bin, "-f", "-"], stdin="\n".join(lines) + "\n")


_CHAIN = "inet runner forward"
# `add` leaves a table or chain that is there as it is.
_TABLE = [
    "add table inet runner",
    f"add chain {_CHAIN} {{ type filter hook forward priority filter - 1; policy accept; }}",
]


def _tool(command: list[str], stdin: str | None = None) -> str:
    name = Path(command[0]).name
    try:
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExecutionError(
            f"{name} could not run: {exc}",
            hint="runner needs root, iptables and nft to fence a job's network",
        ) from None
    if done.returncode != 0:
        raise ExecutionError(
            f"{name} {' '.join(command[1:3])} failed: {done.stderr.strip()[:300]}",
            hint="runner needs root, iptables and nft to fence a job's network",
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
