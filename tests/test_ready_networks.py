"""Job networks kept ready between runs (runner.egress.ready).

On the fake runtime: a run's drained networks serve the next run (fenced
again, for the same rules only), a full shelf removes the rest, a run that
died holding one has it removed by the next sweep, `runner cleanup` removes
every kept one. On the real engine: two `runner run`s in a row share their
networks, a kept network removed behind runner's back is skipped, and after
a killed run `runner cleanup` leaves no network, rule, container or claim.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runner.config import settings_from_env
from runner.egress import JobNetworks
from runner.egress.firewall import forward_rules, rules_for
from runner.egress.ready import LABEL_PREFIX, ReadyNetworks, abandoned
from runner.errors import ConfigError
from runner.execute.runtime import NetworkInfo
from runner.sandbox import HostPort, SandboxPolicy
from runner.testing import FakeRuntime
from tests.helpers import RUNNER, TEST_IMAGE, make_repo, run_runner, runner_env
from tests.test_egress_unit import POOL, FakeProxy, _RecordingFirewall

DEAD_PID = 999_999_999  # beyond pid_max: no such process


def _networks(runtime: FakeRuntime, shelf: ReadyNetworks) -> tuple[JobNetworks, Any]:
    firewall = _RecordingFirewall()
    nets = JobNetworks(
        runtime, firewall=firewall, proxy=FakeProxy(), pool=POOL, addresses=frozenset, ready=shelf
    )
    return nets, firewall


def _use(networks: JobNetworks, job: str, policy: SandboxPolicy, count: int = 1) -> list[str]:
    """``count`` workspaces of ``job`` at once, each on its network; the job then ends."""
    names: list[str] = []
    opened = [networks.open(job, policy, lambda h, p: None) for _ in range(count)]
    for cm in opened:
        names.append(str(cm.__enter__().network))
    for cm in opened:
        cm.__exit__(None, None, None)
    networks.drain(job)
    return names


def test_a_run_keeps_its_networks_for_the_next_one_which_fences_them_again(
    tmp_path: Path,
) -> None:
    runtime = FakeRuntime()
    shelf = ReadyNetworks(tmp_path / "ready", pool=POOL, limit=2)
    first, _ = _networks(runtime, shelf)
    made = _use(first, "run-1", SandboxPolicy(), count=3)
    # Two kept (the shelf's limit), the third removed as before.
    assert len(runtime.networks) == 2 and set(runtime.networks) < set(made)
    assert sorted(p.name for p in (tmp_path / "ready").iterdir()) == sorted(
        f"{name}.json" for name in runtime.networks
    )
    # Kept networks carry the shelf's label, not the run's: its sweeps leave them alone.
    assert {job for job, _ in runtime.networks.values()} == {shelf.label}
    assert runtime.sweep_networks("run-1") == 0

    second, firewall2 = _networks(runtime, ReadyNetworks(tmp_path / "ready", pool=POOL, limit=2))
    taken = _use(second, "run-2", SandboxPolicy(), count=2)
    assert sorted(taken) == sorted(runtime.networks)  # nothing made: both taken from the shelf
    assert len(runtime.networks_made) == 3
    assert sorted(firewall2.guarded) == sorted(taken)  # fenced for this run's policy

    # Other rules (an --allow-host entry) never get a network kept for these.
    other = SandboxPolicy(allow_hosts=(HostPort("10.9.9.9", 443),))
    third, _ = _networks(runtime, ReadyNetworks(tmp_path / "ready", pool=POOL, limit=3))
    [fresh] = _use(third, "run-3", other)
    assert fresh not in taken and len(runtime.networks_made) == 4
    # Nor a policy with a proxy or without a network: those are never kept.
    for policy in (SandboxPolicy(network="allow"), SandboxPolicy(network="none")):
        _use(third, "run-4", policy)
    assert len(runtime.networks) == 3

    # `runner cleanup`: every kept network goes, rules too, and the shelf is empty.
    cleanup, firewall3 = _networks(runtime, ReadyNetworks(tmp_path / "ready", pool=POOL))
    assert cleanup.sweep_ready(everything=True) == 3
    assert runtime.networks == {}
    assert sorted(firewall3.released) == sorted([*taken, fresh])
    assert list((tmp_path / "ready").iterdir()) == []


def test_a_kept_network_keeps_its_holder_which_is_replaced_once_gone(tmp_path: Path) -> None:
    runtime = FakeRuntime(images={"busybox": "sha256:b0"})
    hosts = SandboxPolicy(add_hosts=(("git.internal", "10.0.0.5"),))

    def use(networks: JobNetworks, job: str, policy: SandboxPolicy) -> str:
        with networks.open(job, policy, lambda h, p: None, holder_image="sha256:b0") as net:
            joined = str(net.network)
        networks.drain(job)
        return joined

    shelf = tmp_path / "ready"
    joined = use(_networks(runtime, ReadyNetworks(shelf, pool=POOL))[0], "run-1", hosts)
    ((holder, kept, given),) = runtime.holders_made
    assert joined == f"container:{holder}" and given == {"git.internal": "10.0.0.5"}
    assert list(runtime.networks) == [kept] and runtime.holders == {holder: kept}
    # The next run with the same names takes both: nothing made.
    assert use(_networks(runtime, ReadyNetworks(shelf, pool=POOL))[0], "run-2", hosts) == joined
    assert len(runtime.holders_made) == 1 and len(runtime.networks_made) == 1
    # Other names never get that holder's /etc/hosts: a network of their own.
    other = use(_networks(runtime, ReadyNetworks(shelf, pool=POOL))[0], "run-3", SandboxPolicy())
    assert other != joined and len(runtime.networks_made) == 2
    # A holder gone meanwhile (an engine restart) is replaced on its network.
    runtime.release_holder(holder)
    again = use(_networks(runtime, ReadyNetworks(shelf, pool=POOL))[0], "run-4", hosts)
    (new_holder, on, _) = runtime.holders_made[-1]
    assert again == f"container:{new_holder}" and new_holder != holder and on == kept
    # `runner cleanup` removes networks and holders alike.
    assert _networks(runtime, ReadyNetworks(shelf, pool=POOL))[0].sweep_ready(everything=True) == 2
    assert runtime.networks == {} and runtime.holders == {}


def test_a_network_held_by_a_run_that_died_is_removed_by_the_next_sweep(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    dead = ReadyNetworks(tmp_path / "ready", pool=POOL, pid=DEAD_PID)
    net = runtime.create_network(dead.label, internal=False)
    dead.claimed(net, "")  # made, then the run was killed
    held = ReadyNetworks(tmp_path / "ready", pool=POOL, pid=os.getpid())
    other = runtime.create_network(held.label, internal=False)
    held.claimed(other, "")  # a live run's: not touched
    networks, firewall = _networks(runtime, ReadyNetworks(tmp_path / "ready", pool=POOL))
    assert networks.sweep_ready() == 1
    assert list(runtime.networks) == [other.name] and firewall.released == [net.name]
    # A kept one whose network is gone (pruned) is forgotten, not used.
    gone = NetworkInfo(
        name="runner-gone", subnet="10.9.0.0/28", gateway="10.9.0.1", bridge="rnrgone0"
    )
    lost = ReadyNetworks(tmp_path / "ready", pool=POOL, pid=DEAD_PID)
    lost.claimed(gone, "")
    assert lost.park(gone)
    fresh, _ = _networks(runtime, ReadyNetworks(tmp_path / "ready", pool=POOL))
    [name] = _use(fresh, "run-2", SandboxPolicy())
    assert name != gone.name and not (tmp_path / "ready" / f"{gone.name}.json").exists()


def test_cleanup_removes_the_kept_networks_of_a_home_that_is_gone_and_only_those(
    tmp_path: Path,
) -> None:
    runtime = FakeRuntime()
    gone_home, live_home = tmp_path / "gone" / "ready", tmp_path / "live" / "ready"
    gone, _ = _networks(runtime, ReadyNetworks(gone_home, pool=POOL))
    live, _ = _networks(runtime, ReadyNetworks(live_home, pool=POOL))
    dead = _use(gone, "run-1", SandboxPolicy(), count=2)
    kept = _use(live, "run-2", SandboxPolicy())
    # Another machine's shelf on a shared engine, with a folder this one does not have.
    elsewhere = f"{LABEL_PREFIX}0123456789abcdef:{tmp_path / 'elsewhere'}"
    foreign = runtime.create_network(elsewhere, internal=False)
    assert sorted(runtime.networks) == sorted([*dead, *kept, foreign.name])

    assert live.sweep_abandoned() == 0  # every shelf is there
    shutil.rmtree(tmp_path / "gone")  # its RUNNER_HOME deleted by hand
    assert abandoned(ReadyNetworks(gone_home, pool=POOL).label)
    assert not abandoned(ReadyNetworks(live_home, pool=POOL).label)
    assert not abandoned(elsewhere) and not abandoned("run-2")
    assert live.sweep_abandoned() == 2
    assert sorted(runtime.networks) == sorted([*kept, foreign.name])
    assert live.sweep_abandoned() == 0


def test_a_shelf_has_its_folder_before_its_first_network_is_made(tmp_path: Path) -> None:
    # Else a cleanup of another home, between the two, would take it for an abandoned one.
    shelf = ReadyNetworks(tmp_path / "home" / "ready-networks", pool=POOL)
    label = shelf.new_label()
    assert shelf.folder.is_dir() and label == shelf.label and not abandoned(label)


# The real engine ---------------------------------------------------------------------------


def _kept(home: Path) -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in (home / "ready-networks").glob("*.json"))


def _engine_networks(label: str) -> list[str]:
    found = subprocess.run(
        ["docker", "network", "ls", "--format", "{{.Name}}", "--filter", f"label={label}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return sorted(found)


def _wait_for_claims(home: Path, tmp: Path, count: int) -> list[Path]:
    """The claims of a running run, once it holds ``count`` networks and its steps run."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        claims = sorted((home / "ready-networks").glob("*.claim"))
        started = list(tmp.glob("runner-ws-*/repo/started"))
        if len(claims) == count and len(started) == count:
            return claims
        time.sleep(0.1)
    raise AssertionError(f"the run never held {count} networks")


def _holders_of(docker_client: Any, network: str) -> list[str]:
    """The running holders of a network (``ContainerRuntime.hold_network``)."""
    found = docker_client.api.containers(filters={"label": f"org.runner.holds={network}"})
    return sorted(str(c["Id"]) for c in found)


def _joined(since: float, until: float) -> set[str]:
    """The networks containers joined between the two times (``docker events``)."""
    window = ["--since", f"{since:.3f}", "--until", f"{until:.3f}"]
    only = ["--filter", "type=network", "--filter", "event=connect"]
    found = subprocess.run(
        ["docker", "events", *window, *only, "--format", "{{.Actor.Attributes.name}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return set(found)


def _rules_of(bridge: str) -> list[str]:
    """The bridge's rules: iptables ``INPUT``, then runner's nftables forward chain."""
    listings = [
        subprocess.run(command, capture_output=True, text=True, check=False).stdout
        for command in (
            ["iptables", "-S"],
            ["nft", "-a", "list", "chain", "inet", "runner", "forward"],
        )
    ]
    lines = "\n".join(listings).splitlines()
    return [line.strip() for line in lines if f"runner:{bridge}" in line]


def _fence_size() -> int:
    """How many rules fence an ``open`` network with no host listed."""
    net = NetworkInfo(name="n", subnet="10.0.0.0/28", gateway="10.0.0.1", bridge="rnrx")
    return len(rules_for(net, SandboxPolicy(), None)) + len(forward_rules(net, SandboxPolicy()))


@pytest.mark.docker
def test_runs_share_kept_networks_and_cleanup_removes_them_after_a_kill(
    tmp_path: Path, docker_client: Any
) -> None:
    home = tmp_path / "home"
    env = runner_env(home, TMPDIR=str(tmp_path / "tmp"), RUNNER_READY_NETWORKS="2")
    (tmp_path / "tmp").mkdir()
    repos = tmp_path / "repos"
    for name in ("app", "lib"):
        make_repo(repos, f"github.com/acme/{name}", {"README.md": f"{name}\n"})
    spec = tmp_path / "batch.yaml"

    def run(step: str) -> list[str]:
        spec.write_text(
            "name: ready\non:\n  - repository: github.com/acme/app\n"
            "  - repository: github.com/acme/lib\n"
            f"steps:\n  - run: {step}\n    container: {TEST_IMAGE}\n"
            "changesetTemplate:\n  title: t\n  body: b\n  branch: ready\n"
            "  commit:\n    message: m\n"
        )
        return [
            "run",
            str(spec),
            "--repos-root",
            str(repos),
            "--out",
            str(tmp_path / "out"),
            "--no-cache",
        ]

    label = "org.runner.network=" + ReadyNetworks(home / "ready-networks", pool="").label
    try:
        proc = run_runner([*run("exit 0"), "-j", "2"], env)
        assert proc.returncode == 0, proc.stderr
        kept = _kept(home)
        assert len(kept) == 2 and _engine_networks(label) == kept
        # Each is kept with its holder, still running: the steps joined its namespace.
        holders = {name: _holders_of(docker_client, name) for name in kept}
        assert all(len(found) == 1 for found in holders.values())
        # The next run takes them: no network made, the same two kept again; one whose
        # rules went (a reboot, a flush) is fenced afresh.
        bridge = json.loads((home / "ready-networks" / f"{kept[1]}.json").read_text())["bridge"]
        if os.geteuid() == 0:
            assert len(_rules_of(bridge)) == _fence_size()
            flushed = _rules_of(bridge)[0].replace("-A ", "-D ", 1)
            subprocess.run(["iptables", *shlex.split(flushed)], check=True)
            handle = _rules_of(bridge)[-1].rsplit("# handle ", 1)[1]
            subprocess.run(
                ["nft", "delete", "rule", "inet", "runner", "forward", "handle", handle], check=True
            )
            assert len(_rules_of(bridge)) == _fence_size() - 2
        since = time.time()
        proc = run_runner([*run("exit 0"), "-j", "2"], env)
        assert proc.returncode == 0, proc.stderr
        assert _kept(home) == kept and _engine_networks(label) == kept
        if os.geteuid() == 0:
            assert len(_rules_of(bridge)) == _fence_size()
        # The same holders served it: no container joined them (the steps joined the
        # holders' namespaces).
        assert {name: _holders_of(docker_client, name) for name in kept} == holders
        assert not _joined(since, time.time() + 1) & set(kept)

        # One removed behind runner's back (its holder, then it): skipped, forgotten.
        for holder in holders[kept[0]]:
            subprocess.run(["docker", "rm", "-f", holder], check=True, capture_output=True)
        subprocess.run(["docker", "network", "rm", kept[0]], check=True, capture_output=True)
        proc = run_runner([*run("exit 0"), "-j", "1"], env)
        assert proc.returncode == 0, proc.stderr
        assert kept[0] not in _kept(home) and kept[1] in _kept(home)

        # One with a container on it (one not removed yet) is left to a later run.
        busy = docker_client.containers.run(
            TEST_IMAGE, ["sleep", "60"], detach=True, network=kept[1], labels={"test": "ready"}
        )
        try:
            since = time.time()
            proc = run_runner([*run("exit 0"), "-j", "2"], env)
            assert proc.returncode == 0, proc.stderr
            joined = _joined(since, time.time() + 1)
            assert joined and kept[1] not in joined and kept[1] in _kept(home)
        finally:
            busy.remove(force=True)

        # Killed while its steps run: the networks it holds, their rules and its
        # containers are gone after `runner cleanup`, and so are the kept ones.
        runner = subprocess.Popen(
            [RUNNER, *run("touch started; sleep 60"), "-j", "2", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert runner.stdout is not None
        run_id = json.loads(runner.stdout.readline())["run_id"]
        held = _wait_for_claims(home, tmp_path / "tmp", 2)
        bridges = [json.loads(p.read_text())["bridge"] for p in held]
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        if os.geteuid() == 0:
            assert all(_rules_of(bridge) for bridge in bridges)
        sweep = run_runner(["cleanup"], env)
        assert sweep.returncode == 0, sweep.stderr
        assert _engine_networks(label) == []
        assert list((home / "ready-networks").iterdir()) == []
        assert all(_rules_of(bridge) == [] for bridge in bridges)
        left = docker_client.api.containers(
            all=True, filters={"label": f"org.runner.run-id={run_id}"}
        )
        assert left == []
        assert docker_client.api.containers(all=True, filters={"label": label}) == []  # holders
    finally:
        run_runner(["cleanup"], env)


@pytest.mark.docker
def test_cleanup_of_any_home_removes_what_a_deleted_home_kept(
    tmp_path: Path, docker_client: Any
) -> None:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "app\n"})
    spec = tmp_path / "batch.yaml"
    spec.write_text(
        "name: abandoned\non:\n  - repository: github.com/acme/app\n"
        f"steps:\n  - run: exit 0\n    container: {TEST_IMAGE}\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: b\n  commit:\n    message: m\n"
    )
    gone, other = tmp_path / "gone", tmp_path / "other"
    env = runner_env(gone, TMPDIR=str(tmp_path / "tmp"), RUNNER_READY_NETWORKS="1")
    other_env = runner_env(other, TMPDIR=str(tmp_path / "tmp"), RUNNER_READY_NETWORKS="1")
    (tmp_path / "tmp").mkdir()
    label = "org.runner.network=" + ReadyNetworks(gone / "ready-networks", pool="").label
    other_label = "org.runner.network=" + ReadyNetworks(other / "ready-networks", pool="").label
    args = ["run", str(spec), "--repos-root", str(repos), "--no-cache"]
    try:
        for home, where in ((env, "out-gone"), (other_env, "out-other")):
            proc = run_runner([*args, "--out", str(tmp_path / where)], home)
            assert proc.returncode == 0, proc.stderr
        [kept] = _engine_networks(label)
        [holder] = _holders_of(docker_client, kept)
        bridge = json.loads((gone / "ready-networks" / f"{kept}.json").read_text())["bridge"]
        shutil.rmtree(gone)  # the home deleted by hand: no shelf will take or remove it

        sweep = run_runner(["cleanup"], other_env)
        assert sweep.returncode == 0, sweep.stderr
        assert "removed 1 network kept ready for a RUNNER_HOME that is gone" in sweep.stdout
        assert _engine_networks(label) == []
        assert docker_client.api.containers(all=True, filters={"id": holder}) == []
        if os.geteuid() == 0:
            assert _rules_of(bridge) == []
        # The other home's own kept network went the usual way (cleanup removes its own).
        assert _engine_networks(other_label) == []
    finally:
        run_runner(["cleanup"], other_env)
        for found in _engine_networks(label):  # the holder first: it keeps the network
            for left in _holders_of(docker_client, found):
                subprocess.run(["docker", "rm", "-f", left], check=False, capture_output=True)
            subprocess.run(["docker", "network", "rm", found], check=False, capture_output=True)


def test_how_many_networks_are_kept_is_a_setting() -> None:
    assert settings_from_env({}).ready_networks == 8
    assert settings_from_env({"RUNNER_READY_NETWORKS": "3"}).ready_networks == 3
    assert settings_from_env({"RUNNER_READY_NETWORKS": "0"}).ready_networks == 0  # none kept
    with pytest.raises(ConfigError):
        settings_from_env({"RUNNER_READY_NETWORKS": "some"})
