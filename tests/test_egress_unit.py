"""Egress without an engine: the proxy's rules, the flags, the firewall's rules, the job's seam.

The job's side runs ``run_job`` on the fake runtime with the real
``JobNetworks`` (no host firewall, a proxy that only records): every step
joins its workspace job's own network, gets the proxy's variables under
``allow``, and every refused connection becomes ``step.egress_denied``,
counted in the workspace's result; the network goes when the job does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.egress import JobNetworks, NetworkChoice, NoJobNetworks, parse_add_host
from runner.egress.broker import BrokerSession
from runner.egress.firewall import NoFirewall, docker_user_rules, forward_rules, rules_for
from runner.egress.proxy import OnDenied, RunningProxy
from runner.egress.rules import EgressRules
from runner.env import SecretRef
from runner.errors import ExecutionError, UsageError
from runner.execute.job import run_job
from runner.execute.runtime import NetworkInfo
from runner.redact.active import ActiveRedactor
from runner.sandbox import HostPort, SandboxPolicy
from runner.secrets.value import Secret
from runner.testing import FakeRuntime, FakeStepRun
from tests.test_job import IMAGE, IMAGE_ID, Recorder, _job, _services, step

POOL = "10.213.0.0/16"


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such name")
        return table[host]

    return resolve


# The proxy's rules -----------------------------------------------------------------------------


def rules(*allow: str, **extra: object) -> EgressRules:
    entries = tuple((h.host, h.port) for h in map(HostPort.parse, allow))
    return EgressRules(allow=entries, blocked_networks=(POOL,), **extra)  # type: ignore[arg-type]


def test_only_listed_hosts_and_ports_pass() -> None:
    r = rules("example.com:443", "pypi.org")
    dns = resolver({"example.com": ["93.184.215.14"], "pypi.org": ["151.101.0.223"]})
    assert r.check("example.com", 443, dns).allowed
    assert r.check("EXAMPLE.com.", 443, dns).address == "93.184.215.14"
    assert not r.check("example.com", 80, dns).allowed
    assert r.check("pypi.org", 8080, dns).allowed  # no port listed: any port
    assert not r.check("evil.example", 443, dns).allowed


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.213.0.1",
        "172.17.0.1",
        "192.168.1.1",
        "::1",
        "::ffff:127.0.0.1",
        "fe80::1",
        "0.0.0.0",  # noqa: S104 (an address a name resolves to, not a bind)
        "100.64.0.1",
    ],
)
def test_a_listed_name_pointing_at_a_refused_address_is_refused(address: str) -> None:
    r = rules("sneaky.example:80")
    verdict = r.check("sneaky.example", 80, resolver({"sneaky.example": [address]}))
    assert not verdict.allowed
    assert "refuses" in verdict.reason


def test_a_refused_address_passes_only_when_listed_itself() -> None:
    dns = resolver({"internal.example": ["10.1.2.3"]})
    assert not rules("internal.example:80").check("internal.example", 80, dns).allowed
    allowed = rules("internal.example:80", "10.1.2.3:80").check("internal.example", 80, dns)
    assert (allowed.allowed, allowed.address) == (True, "10.1.2.3")
    assert rules("127.0.0.1:8080").check("127.0.0.1", 8080).allowed
    assert not rules("127.0.0.1:8080").check("127.0.0.1", 8081).allowed


def test_of_several_addresses_only_an_accepted_one_is_used() -> None:
    dns = resolver({"mixed.example": ["127.0.0.1", "93.184.215.14"]})
    verdict = rules("mixed.example").check("mixed.example", 443, dns)
    assert (verdict.allowed, verdict.address) == (True, "93.184.215.14")


def test_the_hosts_own_addresses_are_refused_and_add_host_names_are_vetted() -> None:
    host_own = rules("me.example", host_addresses=frozenset({"93.184.215.14"}))
    assert not host_own.check("me.example", 80, resolver({"me.example": ["93.184.215.14"]})).allowed
    mapped = rules("git.internal:22", add_hosts={"git.internal": "10.0.0.5"})
    verdict = mapped.check("git.internal", 22, resolver({}))
    assert (verdict.allowed, verdict.address) == (True, "10.0.0.5")
    assert not rules("nowhere.example").check("nowhere.example", 80, resolver({})).allowed


def test_rules_travel_as_json_unchanged() -> None:
    r = EgressRules(
        allow=(("example.com", 443), ("pypi.org", None)),
        add_hosts={"git.internal": "10.0.0.5"},
        host_addresses=frozenset({"192.0.2.1"}),
        blocked_networks=(POOL,),
    )
    assert EgressRules.from_json(r.to_json()) == r


# Flags -----------------------------------------------------------------------------------------


def test_flags_parse_into_a_policy() -> None:
    choice = NetworkChoice.parse(
        "allow", ["example.com:443", "[::1]:8080"], ["git.internal:10.0.0.5"]
    )
    policy = choice.apply(SandboxPolicy())
    assert policy.network == "allow"
    assert policy.allow_hosts == (HostPort("example.com", 443), HostPort("::1", 8080))
    assert policy.add_hosts == (("git.internal", "10.0.0.5"),)
    assert parse_add_host("v6.example:[fd00::1]") == ("v6.example", "fd00::1")


@pytest.mark.parametrize("bad", ["nocolon", "name:not-an-ip", ":10.0.0.1", "bad name:10.0.0.1"])
def test_a_malformed_add_host_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="NAME:ADDRESS"):
        parse_add_host(bad)


def test_an_unknown_network_policy_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown network policy"):
        NetworkChoice.parse("wide-open", [], [])


# The firewall's rules --------------------------------------------------------------------------


def test_firewall_rules_refuse_the_host_and_link_local_with_listed_exceptions_first() -> None:
    net = NetworkInfo(name="n", subnet="10.213.0.0/28", gateway="10.213.0.1", bridge="rnrx")
    policy = SandboxPolicy(allow_hosts=(HostPort("169.254.77.1", 8080), HostPort("example.com")))
    found = [" ".join(r) for r in rules_for(net, policy, None)]
    assert found[0].startswith("INPUT -i rnrx -d 169.254.77.1 -p tcp --dport 8080")
    assert found[0].endswith("-j ACCEPT")
    assert "INPUT -i rnrx -p tcp" in found[1] and found[1].endswith(
        "REJECT --reject-with tcp-reset"
    )
    assert found[2].startswith("INPUT -i rnrx -m comment") and found[2].endswith("-j REJECT")
    assert all("--comment runner:rnrx" in r for r in found)
    assert len(found) == 3  # a name (example.com) is the proxy's to check, not the firewall's
    forward = forward_rules(net, policy)
    assert forward[0] == (
        'iifname "rnrx" ip daddr 169.254.77.1 tcp dport 8080 accept comment "runner:rnrx"'
    )
    assert forward[1] == (
        'iifname "rnrx" ip daddr 169.254.0.0/16 meta l4proto tcp reject with tcp reset'
        ' comment "runner:rnrx"'
    )
    assert forward[2] == 'iifname "rnrx" ip daddr 169.254.0.0/16 reject comment "runner:rnrx"'
    assert not any("example.com" in r for r in forward)


def test_an_open_network_forwards_to_no_other_runner_bridge_nor_docker0_either_way() -> None:
    # Not left to Docker's isolation chains: Docker lifts them for a moment each time any
    # network is made (firewall's docstring); runner's own table is never touched.
    net = NetworkInfo(name="n", subnet="10.213.0.0/28", gateway="10.213.0.1", bridge="rnrx")
    found = [r.removesuffix(' comment "runner:rnrx"') for r in forward_rules(net, SandboxPolicy())]
    # each refusal twice: TCP with a reset (fails at once, under gVisor too), then the rest
    assert found[::2] == [
        f"{match} meta l4proto tcp reject with tcp reset"
        for match in (
            'iifname "rnrx" ip daddr 169.254.0.0/16',
            'iifname "rnrx" oifname != "rnrx" oifname "rnr*"',
            'oifname "rnrx" iifname != "rnrx" iifname "rnr*"',
            'iifname "rnrx" oifname != "rnrx" oifname "docker0"',
            'oifname "rnrx" iifname != "rnrx" iifname "docker0"',
        )
    ]
    assert found[1::2] == [
        r.removesuffix(" meta l4proto tcp reject with tcp reset") + " reject" for r in found[::2]
    ]


def test_under_allow_the_proxy_port_is_the_one_way_into_the_host() -> None:
    net = NetworkInfo(
        name="n", subnet="10.213.0.0/28", gateway="10.213.0.1", bridge="rnrx", internal=True
    )
    found = [" ".join(r) for r in rules_for(net, SandboxPolicy(network="allow"), 3128)]
    assert found[0].startswith("INPUT -i rnrx -d 10.213.0.1 -p tcp --dport 3128")
    # internal: nothing is forwarded into or out of its bridge, whatever Docker's chains do
    forward = forward_rules(net, SandboxPolicy(network="allow"))
    assert [r.removesuffix(' comment "runner:rnrx"') for r in forward] == [
        'iifname "rnrx" oifname != "rnrx" meta l4proto tcp reject with tcp reset',
        'iifname "rnrx" oifname != "rnrx" reject',
        'oifname "rnrx" iifname != "rnrx" meta l4proto tcp reject with tcp reset',
        'oifname "rnrx" iifname != "rnrx" reject',
    ]


# The job's seam, on the fake runtime -----------------------------------------------------------


@dataclass
class FakeProxy:
    """Records its starts; ``deny`` plays a refused connection while it runs."""

    started: list[tuple[str, int, EgressRules]] = field(default_factory=list)
    stopped: int = 0
    on_denied: OnDenied | None = None
    broker: BrokerSession | None = None
    ca_cert: str | None = None

    def check(self) -> None:
        pass

    def start(
        self,
        *,
        listen: str,
        port: int,
        rules: EgressRules,
        on_denied: OnDenied,
        broker: BrokerSession | None = None,
    ) -> RunningProxy:
        self.started.append((listen, port, rules))
        self.on_denied = on_denied
        self.broker = broker
        self.ca_cert = "-----BEGIN CERTIFICATE-----\nfake job CA\n" if broker else None
        return self

    def stop(self) -> None:
        self.stopped += 1

    def deny(self, host: str, port: int) -> None:
        assert self.on_denied is not None
        self.on_denied(host, port)


def _no_secrets(ref: SecretRef, first_step: int) -> Secret:
    raise AssertionError("these steps use no secret")


def _networks(runtime: FakeRuntime, proxy: FakeProxy) -> JobNetworks:
    return JobNetworks(runtime, firewall=NoFirewall(), proxy=proxy, pool=POOL, addresses=frozenset)


def test_each_workspace_job_gets_its_own_network_removed_after_it(tmp_path: Path) -> None:
    job, _ = _job(tmp_path, step("a") + step("b"), ["github.com/acme/app", "github.com/acme/lib"])
    runtime = FakeRuntime(images={IMAGE: IMAGE_ID})
    rec = Recorder(ActiveRedactor())
    services = _services(
        tmp_path, runtime, rec, networks=_networks(runtime, FakeProxy()), parallelism=2
    )
    outcomes = run_job(job, _no_secrets, services)
    assert [o.status for o in outcomes] == ["unchanged", "unchanged"]
    made = runtime.networks_made
    assert len(made) == 2 and len({n.subnet for n in made}) == 2
    assert not any(n.internal for n in made)
    # Both steps of a workspace join the namespace of one holder on its own network.
    holders = {holder: network for holder, network, _ in runtime.holders_made}
    assert sorted(holders.values()) == sorted(n.name for n in made)
    for holder in holders:
        joined = [s for s in runtime.steps if s.sandbox.network == f"container:{holder}"]
        assert len(joined) == 2 and len({s.mounts[0].source for s in joined}) == 1
    assert runtime.networks == {} and runtime.holders == {}  # all gone with their jobs
    assert all("HTTP_PROXY" not in s.env for s in runtime.steps)


def test_allow_proxies_every_step_and_reports_refusals_per_step(tmp_path: Path) -> None:
    proxy = FakeProxy()

    def refuse_on_step_two(run: FakeStepRun) -> int:
        if run.step.script.startswith("second"):
            proxy.deny("evil.example", 443)
        return 0

    job, _ = _job(tmp_path, step("first") + step("second"), ["github.com/acme/app"])
    runtime = FakeRuntime(handler=refuse_on_step_two, images={IMAGE: IMAGE_ID})
    rec = Recorder(ActiveRedactor())
    policy = SandboxPolicy(
        network="allow",
        allow_hosts=(HostPort("pypi.org", 443),),
        add_hosts=(("git.internal", "10.0.0.5"),),
    )
    services = _services(tmp_path, runtime, rec, networks=_networks(runtime, proxy), sandbox=policy)
    (outcome,) = run_job(job, _no_secrets, services)
    (net,) = runtime.networks_made
    assert net.internal
    assert proxy.started == [(net.gateway, 3128, proxy.started[0][2])]
    assert proxy.started[0][2].allow == (("pypi.org", 443),)
    assert proxy.stopped == 1 and runtime.networks == {}
    # The names are in the holder's /etc/hosts, which its steps share.
    ((holder, held, hosts),) = runtime.holders_made
    assert held == net.name and hosts == {"git.internal": "10.0.0.5"}
    for s in runtime.steps:
        assert s.env["HTTPS_PROXY"] == f"http://{net.gateway}:3128" == s.env["http_proxy"]
        assert s.env["NO_PROXY"] == "localhost,127.0.0.1"
        assert s.sandbox.network == f"container:{holder}" and not s.sandbox.extra_hosts
    denied = [e for e in rec.events if e["event"] == "step.egress_denied"]
    assert [(e["step"], e["host"], e["port"]) for e in denied] == [(2, "evil.example", 443)]
    assert outcome.result.egress_denied == 1


def test_none_takes_the_network_away_without_making_one(tmp_path: Path) -> None:
    job, _ = _job(tmp_path, step("a"), ["github.com/acme/app"])
    runtime = FakeRuntime(images={IMAGE: IMAGE_ID})
    services = _services(
        tmp_path,
        runtime,
        Recorder(ActiveRedactor()),
        networks=_networks(runtime, FakeProxy()),
        sandbox=SandboxPolicy(network="none"),
    )
    run_job(job, _no_secrets, services)
    assert [s.sandbox.network for s in runtime.steps] == ["none"]
    assert runtime.networks_made == []


def test_the_network_goes_when_a_step_fails_or_the_job_is_canceled(tmp_path: Path) -> None:
    cancel = threading.Event()

    def fail_then_cancel(run: FakeStepRun) -> int:
        cancel.set()
        return 3

    job, _ = _job(tmp_path, step("a") + step("b"), ["github.com/acme/app"])
    runtime = FakeRuntime(handler=fail_then_cancel, images={IMAGE: IMAGE_ID})
    proxy = FakeProxy()
    services = _services(
        tmp_path,
        runtime,
        Recorder(ActiveRedactor()),
        networks=_networks(runtime, proxy),
        sandbox=SandboxPolicy(network="allow"),
    )
    object.__setattr__(services, "cancel", cancel)
    (outcome,) = run_job(job, _no_secrets, services)
    assert outcome.status in ("failed", "canceled")
    assert len(runtime.networks_made) == 1 and runtime.networks == {}
    assert proxy.stopped == 1


def test_a_network_that_cannot_be_made_fails_the_workspace_not_the_run(tmp_path: Path) -> None:
    job, _ = _job(tmp_path, step("a"), ["github.com/acme/app"])
    runtime = FakeRuntime(images={IMAGE: IMAGE_ID}, network_pool="10.213.0.0/28")
    runtime.create_network("someone-else", internal=False)  # the whole (tiny) pool is taken
    rec = Recorder(ActiveRedactor())
    services = _services(tmp_path, runtime, rec, networks=_networks(runtime, FakeProxy()))
    (outcome,) = run_job(job, _no_secrets, services)
    assert outcome.status == "failed"
    assert outcome.result.infrastructure_failure
    assert "no free subnet" in (outcome.result.error or "")
    assert runtime.steps == []
    assert [e["event"] for e in rec.events][-1] == "workspace.finished"


def test_without_job_networks_allow_is_refused_rather_than_pretended() -> None:
    opening = NoJobNetworks().open("j", SandboxPolicy(network="allow"), lambda h, p: None)
    with pytest.raises(ExecutionError, match="cannot enforce --network allow"), opening:
        pass


class _NoRoot(NoFirewall):
    def available(self) -> bool:
        return False


def test_allow_without_root_is_refused_before_anything_runs() -> None:
    runtime = FakeRuntime()
    networks = JobNetworks(runtime, firewall=_NoRoot(), proxy=FakeProxy(), pool=POOL)
    with pytest.raises(ExecutionError, match="needs root and iptables"):
        networks.preflight(SandboxPolicy(network="allow"))
    networks.preflight(SandboxPolicy(network="open"))  # a warning, not a refusal
    assert runtime.networks_made == []


class _RecordingFirewall(NoFirewall):
    def __init__(self) -> None:
        self.guarded: list[str] = []
        self.released: list[str] = []

    def guard(self, net: NetworkInfo, policy: SandboxPolicy, *, proxy_port: int | None) -> None:
        self.guarded.append(net.name)

    def release(self, net: NetworkInfo) -> None:
        self.released.append(net.name)


def test_a_workspace_hands_its_network_to_the_next_of_the_same_job_only() -> None:
    """Making and removing a network costs the engine more than a step: an ended
    workspace's network (rules and all) serves the job's next workspace of the same
    policy; another job, another policy, or a workspace that ended in an error gets
    a new one; the job's end removes what is left, rules too."""
    runtime = FakeRuntime(images={IMAGE: IMAGE_ID})
    firewall, proxy = _RecordingFirewall(), FakeProxy()
    networks = JobNetworks(runtime, firewall=firewall, proxy=proxy, pool=POOL, addresses=frozenset)
    open_policy, allow = SandboxPolicy(), SandboxPolicy(network="allow")

    def use(job: str, policy: SandboxPolicy) -> str | None:
        with networks.open(job, policy, lambda h, p: None) as net:
            return net.network

    first = use("job-1", open_policy)
    assert use("job-1", open_policy) == first  # handed on, not made again
    assert firewall.guarded == [first]  # and fenced once
    assert use("job-2", open_policy) != first  # never to another job
    allowed = use("job-1", allow)  # nor under another policy
    assert allowed not in (first, None)
    assert use("job-1", allow) == allowed
    assert proxy.stopped == 2 and len(proxy.started) == 2  # a proxy per workspace all the same
    with pytest.raises(RuntimeError), networks.open("job-1", open_policy, lambda h, p: None):
        raise RuntimeError("the workspace ended in an error")
    assert len(runtime.networks_made) == 3  # that one was the spare, and it is gone
    assert first not in runtime.networks and first in firewall.released
    assert use("job-1", open_policy) not in (first, allowed)

    networks.drain("job-1")
    assert [job for job, _ in runtime.networks.values()] == ["job-2"]
    assert set(firewall.released) >= {allowed, first}
    # Drained: no workspace of job-1 is left to start, so one that ends removes its own.
    last = use("job-1", open_policy)
    assert last not in runtime.networks and last in firewall.released
    networks.drain("job-2")
    assert runtime.networks == {}


def test_a_job_leaves_no_network_behind_when_its_workspaces_share_them(tmp_path: Path) -> None:
    repos = [f"github.com/acme/r{i}" for i in range(5)]
    job, _ = _job(tmp_path, step("a"), repos)
    runtime = FakeRuntime(images={IMAGE: IMAGE_ID})
    services = _services(
        tmp_path,
        runtime,
        Recorder(ActiveRedactor()),
        networks=_networks(runtime, FakeProxy()),
        parallelism=1,
    )
    outcomes = run_job(job, _no_secrets, services)
    assert [o.status for o in outcomes] == ["unchanged"] * 5
    # One running, one getting ready: two at once at most; every one gone at the end.
    assert 2 <= len(runtime.networks_made) <= 5
    assert runtime.networks == {}


def test_without_nft_an_open_network_keeps_its_link_local_rule_in_docker_user() -> None:
    net = NetworkInfo(name="n", subnet="10.213.0.0/28", gateway="10.213.0.1", bridge="rnrx")
    policy = SandboxPolicy(allow_hosts=(HostPort("169.254.77.1", 8080),))
    found = [" ".join(r) for r in docker_user_rules(net, policy)]
    assert found[0].startswith("DOCKER-USER -i rnrx -d 169.254.77.1 -p tcp --dport 8080")
    assert found[0].endswith("-j ACCEPT")
    assert found[1].startswith("DOCKER-USER -i rnrx -d 169.254.0.0/16") and found[1].endswith(
        "-j REJECT"
    )
    assert len(found) == 2
    internal = NetworkInfo(
        name="n", subnet="10.213.0.0/28", gateway="10.213.0.1", bridge="rnrx", internal=True
    )
    assert docker_user_rules(internal, SandboxPolicy(network="allow")) == []
