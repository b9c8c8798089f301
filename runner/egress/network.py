"""A network per workspace job: the seam the job opens around its steps.

``JobNetworks.open`` gives each workspace job what its steps' containers
join, as a ``StepNetwork``, and takes it all down when the job ends, failed
or canceled too:

* ``none``: no network at all (Docker's network mode ``none``: loopback only);
* ``open``: a bridge network of the job's own, from runner's address pool,
  fenced by the host firewall (``firewall.py``): no neighbour job, no host
  service, no link-local address;
* ``allow``: the same network made ``internal`` (no route out), and the
  job's proxy (``proxy.py``) on its gateway as the only way out, letting
  through the hosts ``--allow-host`` lists (``rules.py``).

A job with brokered secrets (``broker.py``) gets the proxy under ``open``
too, letting through every name but the addresses it refuses under
``allow``; it intercepts TLS for the bound hosts only, and the steps get its
certificate authority (``StepNetwork.ca_cert``). Under ``none`` there is no
proxy, and a brokered secret's placeholder reaches nothing.

An ended workspace job's network (its containers gone, the caller's promise)
serves the next workspace of the same job and policy, fence included; the
job's ``drain`` removes what is left, or keeps it for the next run on the
shelf of networks kept ready (``ready.py``, `runner run` only: ``open``
networks without a proxy, fenced afresh when taken). The proxy is started
anew for each.

Refused connections reach ``on_denied(host, port)``; the caller turns them
into ``step.egress_denied`` events. Leftovers of a killed run (networks,
rules) are swept by the job's id; a proxy ends with its runner by itself.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from runner.egress.broker import BrokerSession
from runner.egress.firewall import Firewall, host_addresses
from runner.egress.proxy import PROXY_PORT, OnDenied, ProxyLauncher, RunningProxy, sweep_confdirs
from runner.egress.ready import ReadyNetworks, abandoned
from runner.egress.rules import EgressRules
from runner.egress.seam import StepNetwork, without_job_network
from runner.errors import ContainerRuntimeError, ExecutionError
from runner.execute.runtime import ContainerRuntime, NetworkInfo
from runner.log import get_logger
from runner.sandbox import SandboxPolicy

log = get_logger("runner.egress")

NO_PROXY = "localhost,127.0.0.1"


_SpareKey = tuple[str, SandboxPolicy, bool]
"""A spare network's job, policy and whether its rules let steps reach a proxy."""


def proxy_env(gateway: str, port: int) -> dict[str, str]:
    """Both spellings, since tools differ in which they read."""
    url = f"http://{gateway}:{port}"
    return {
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "http_proxy": url,
        "https_proxy": url,
        "NO_PROXY": NO_PROXY,
        "no_proxy": NO_PROXY,
    }


@dataclass
class JobNetworks:
    """Job networks of a ``ContainerRuntime``, fenced by the firewall, proxied under ``allow``.

    ``pool`` is runner's address pool (the proxy refuses it); ``addresses``
    lists this host's own addresses (the proxy refuses them too).
    """

    runtime: ContainerRuntime
    firewall: Firewall
    proxy: ProxyLauncher
    pool: str
    addresses: Callable[[], frozenset[str]] = host_addresses
    _warned: bool = field(default=False, init=False, repr=False)
    # Networks a finished workspace handed back, for the next workspace of the same job
    # with the same policy: making and removing one costs the engine more than a step.
    _spare: dict[_SpareKey, list[NetworkInfo]] = field(default_factory=dict, init=False)
    _spare_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Jobs with no workspace left to start: a network handed back is removed at once.
    _drained: deque[str] = field(default_factory=lambda: deque(maxlen=64), init=False)
    # Networks kept ready between runs (`runner run`): drained ones go there if they may.
    ready: ReadyNetworks | None = None

    @contextmanager
    def open(
        self,
        job_id: str,
        policy: SandboxPolicy,
        on_denied: OnDenied,
        broker: BrokerSession | None = None,
        holder_image: str | None = None,
    ) -> Iterator[StepNetwork]:
        if policy.network == "none":
            yield without_job_network(policy)
            return
        hosts = MappingProxyType(dict(policy.add_hosts))
        self._check_firewall(policy)
        allow = policy.network == "allow"
        proxied = allow or broker is not None
        key = (job_id, policy, proxied)
        net = self._take(key)
        fenced = net is not None  # a spare keeps the rules its first workspace got
        shelf = self.ready if policy.network == "open" and not proxied else None
        fence = _fence(policy)
        adopted = False
        if net is None and shelf is not None:
            net = self._adopt(shelf, fence)
            adopted = net is not None
        if net is None and shelf is not None:
            net = self.runtime.create_network(shelf.new_label(), internal=False)
            shelf.claimed(net, fence)
        elif net is None:
            net = self.runtime.create_network(job_id, internal=allow)
        proxy: RunningProxy | None = None
        ended = False
        # gVisor's steps keep joining the network itself: a holder runs the image's own
        # shell, which must not run outside the sandbox the policy asks for.
        held = holder_image is not None and policy.isolation == "runc"
        try:
            if adopted and self.firewall.fenced(net, policy, None):
                fenced = True  # kept by an earlier run for these rules, and they are all there
            elif adopted and self.firewall.available():
                self.firewall.release(net)  # some went (a reboot, a flush): all made afresh
            if not fenced:
                self.firewall.guard(net, policy, proxy_port=PROXY_PORT if proxied else None)
            # After the fence: the holder runs the image's shell, and nothing of the job's
            # runs on a network before its rules are all in place.
            if held and net.holder is None:
                assert holder_image is not None
                holder = self._hold(
                    net, shelf.label if shelf is not None else job_id, holder_image, hosts
                )
                held = holder is not None
                if holder is not None:
                    net = replace(net, holder=holder)
                    if shelf is not None:
                        shelf.claimed(net, fence)  # kept with the network from now on
            env: dict[str, str] = {}
            if proxied:
                proxy = self.proxy.start(
                    listen=net.gateway,
                    port=PROXY_PORT,
                    rules=self.rules(policy),
                    on_denied=on_denied,
                    broker=broker,
                )
                env = proxy_env(net.gateway, PROXY_PORT)
            yield StepNetwork(
                network=net.joined if held else net.name,
                # A step joining the holder's namespace shares its /etc/hosts.
                extra_hosts=MappingProxyType({}) if held else hosts,
                proxy_env=env,
                ca_cert=proxy.ca_cert if proxy is not None else None,
            )
            ended = True
        finally:
            if proxy is not None:
                proxy.stop()
            if ended:  # its containers are gone (the caller's promise): the next may use it
                self._give_back(key, net)
            else:
                self._close(net)

    def _hold(
        self, net: NetworkInfo, job_id: str, image: str, hosts: Mapping[str, str]
    ) -> str | None:
        """A holder for ``net``, or None: its steps then join the network itself, as
        they would without holders (an image whose shell cannot idle as nobody, say)."""
        try:
            return self.runtime.hold_network(net, job_id=job_id, image=image, extra_hosts=hosts)
        except ContainerRuntimeError as exc:
            log.info("steps join the job network itself: no holder", reason=exc.message)
            return None

    def drain(self, job_id: str) -> None:
        """Remove the job's spare networks (side by side) or keep them ready, and from
        now on each one handed back; the job calls it once no workspace is left to
        start, and as it ends."""
        with self._spare_lock:
            if job_id not in self._drained:
                self._drained.append(job_id)
            keys = [key for key in self._spare if key[0] == job_id]
            spare = [net for key in keys for net in self._spare.pop(key)]
        spare = [net for net in spare if not self._keep(net)]
        closing = [
            threading.Thread(target=self._close, args=(net,), name="network-drain", daemon=True)
            for net in spare
        ]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()

    def _take(self, key: _SpareKey) -> NetworkInfo | None:
        with self._spare_lock:
            spare = self._spare.get(key)
            return spare.pop() if spare else None

    def _give_back(self, key: _SpareKey, net: NetworkInfo) -> None:
        with self._spare_lock:
            wanted = key[0] not in self._drained
            if wanted:
                self._spare.setdefault(key, []).append(net)
        if not wanted and not self._keep(net):
            self._close(net)

    def _adopt(self, shelf: ReadyNetworks, fence: str) -> NetworkInfo | None:
        """A network an earlier run kept ready for the same rules (``open`` checks them)."""
        busy: list[NetworkInfo] = []
        found = None
        while found is None and (net := shelf.take(fence)) is not None:
            bridge = Path("/sys/class/net", net.bridge) if net.bridge else None
            if bridge is not None and not bridge.exists():
                if net.holder is not None:
                    self.runtime.release_holder(net.holder)
                shelf.drop(net)  # removed meanwhile (`docker network prune`): forgotten
                continue
            if net.holder is not None and not self.runtime.holder_alive(net.holder):
                self.runtime.release_holder(net.holder)  # stopped (an engine restart): anew
                net = replace(net, holder=None)
            own = 0 if net.holder is None else 1  # the holder's own port on the bridge
            if bridge is not None and sum(1 for _ in (bridge / "brif").iterdir()) > own:
                busy.append(net)  # a container is on it (one not removed yet): not ours
            else:
                found = net
        for net in busy:  # for a later run, once it is empty; if the shelf is full, the
            shelf.park(net)  # claim stays, and the sweep after this run removes it
        return found

    def _keep(self, net: NetworkInfo) -> bool:
        """Keep ``net`` (empty now) ready for the next run, if it is a shelf's and there is room."""
        return self.ready is not None and self.ready.park(net)

    def sweep_ready(self, *, everything: bool = False) -> int:
        if self.ready is None:
            return 0
        gone = self.ready.stale() + (self.ready.take_all() if everything else [])
        for net in gone:
            self._close(net)
        return len(gone)

    def preflight(self, policy: SandboxPolicy) -> None:
        """Refuse, before any container starts, a policy this host cannot keep."""
        self._check_firewall(policy)
        if policy.network == "allow":
            self.proxy.check()

    def rules(self, policy: SandboxPolicy) -> EgressRules:
        return EgressRules(
            allow=tuple((entry.host, entry.port) for entry in policy.allow_hosts),
            add_hosts=dict(policy.add_hosts),
            host_addresses=self.addresses(),
            blocked_networks=(self.pool,),
            any_host=policy.network != "allow",
        )

    def _check_firewall(self, policy: SandboxPolicy) -> None:
        if self.firewall.available():
            return
        if policy.network == "allow":
            raise ExecutionError(
                "runner cannot fence the job's network here (it needs root and iptables), "
                "so it will not pretend to enforce --network allow",
                hint="run runner as root on a host with iptables and nftables, "
                "or use --network none",
            )
        if not self._warned:
            self._warned = True
            log.warning(
                "runner is not root or has no iptables: steps on job networks can reach "
                "this host's services, link-local addresses and, for a moment each time "
                "the engine makes a network, other networks",
            )

    def _close(self, net: NetworkInfo) -> None:
        # Side by side: the rules name the bridge only, which the removal deletes (a
        # new network gets a new name), so neither waits for the other.
        rules = threading.Thread(
            target=self.firewall.release, args=(net,), name="firewall-release", daemon=True
        )
        rules.start()
        try:
            if net.holder is not None:
                self.runtime.release_holder(net.holder)  # the network cannot go before it
            self.runtime.remove_network(net.name)
        finally:
            rules.join()
            if self.ready is not None:
                self.ready.drop(net)

    def sweep_abandoned(self) -> int:
        """Remove the kept networks (holders first) of every shelf whose folder is gone
        from this machine, whichever ``RUNNER_HOME`` it was (``ready.abandoned``); their
        rules then match nothing, for ``sweep_stale_rules``. Return how many went.

        A deleted home leaves its networks on the engine, where no shelf takes or
        removes them again, and each one's rules slow every network the engine makes
        (17 of them took `parallel_efficiency` from 0.83 to 0.78, issue 21).
        """
        return sum(
            self.runtime.sweep_networks(job)
            for job in sorted(self.runtime.network_jobs())
            if abandoned(job)
        )

    def sweep_stale_rules(self) -> int:
        """Remove firewall rules whose bridge is gone, whichever run left them.

        A run killed with SIGKILL leaves its rules; once its network is gone
        (removed by any sweep) they match nothing, but they should not pile up.
        """
        if not self.firewall.available():
            return 0
        try:
            return self.firewall.sweep()
        except ExecutionError as exc:
            log.warning("could not sweep leftover firewall rules", error=str(exc))
            return 0

    def sweep(self, job_id: str | None = None) -> int:
        removed = self.runtime.sweep_networks(job_id) + sweep_confdirs()
        if self.firewall.available():
            try:
                removed += self.firewall.sweep()
            except ExecutionError as exc:
                log.warning("could not sweep leftover firewall rules", error=str(exc))
        return removed


def _fence(policy: SandboxPolicy) -> str:
    """What a kept network's rules and holder depend on beyond itself (``open``, no
    proxy): the ``--allow-host`` entries, and the ``--add-host`` ones its holder's
    /etc/hosts has. A network is taken only for what it was kept with, so none of
    another policy's rules or names can linger on it."""
    allowed = ",".join(sorted(f"{entry.host}:{entry.port or ''}" for entry in policy.allow_hosts))
    hosts = ",".join(sorted(f"{name}={address}" for name, address in policy.add_hosts))
    return f"{allowed};{hosts}" if hosts else allowed
