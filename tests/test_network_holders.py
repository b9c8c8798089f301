"""Network holders (``ContainerRuntime.hold_network``) on the real engine.

A workspace job's runc steps join the network namespace of one holder on the
job's network instead of joining the network each: every step of a workspace
sees the holder's interface, each workspace its own. The holder is confined
(nobody, no capability, read-only, no secret in its configuration), kept with
its network between runs, frozen (nothing of the image it runs goes on
running), replaced when it stopped, and gone with its network. gVisor steps join the network themselves: no holder runs the
image's shell outside the sandbox they ask for. An image whose shell cannot
idle as nobody gets no holder: its steps join the network, as before.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner.egress.ready import ReadyNetworks
from tests.helpers import TEST_IMAGE, make_repo, run_runner, runner_env, set_secret

pytestmark = pytest.mark.docker

SECRET = "holder-secret-4d1c9e7a"

STEPS = """\
steps:
  - run: cat /sys/class/net/eth0/address > mac-1.txt && hostname > host-1.txt
    container: {image}
    env:
      - HOLDER_TOKEN
  - run: cat /sys/class/net/eth0/address > mac-2.txt && grep -c git.internal /etc/hosts > hosts.txt
    container: {image}
"""


# gVisor's sandbox has no /sys/class/net: only the names.
GVISOR_STEPS = """\
steps:
  - run: grep -c git.internal /etc/hosts > hosts.txt
    container: {image}
"""


def _spec(path: Path, steps: str = STEPS) -> Path:
    path.write_text(
        "name: holders\non:\n  - repository: github.com/acme/app\n"
        "  - repository: github.com/acme/lib\n"
        + steps.format(image=TEST_IMAGE)
        + "changesetTemplate:\n  title: t\n  body: b\n  branch: holders\n"
        "  commit:\n    message: m\n"
    )
    return path


def _added(out: Path, repo: str) -> dict[str, str]:
    """The files the run's patch for ``repo`` adds, with their one line."""
    patch = (out / repo / "_root" / "holders.patch").read_text()
    files: dict[str, str] = {}
    name = ""
    for line in patch.splitlines():
        if line.startswith("+++ b/"):
            name = line.removeprefix("+++ b/")
        elif line.startswith("+") and not line.startswith("+++"):
            files[name] = line[1:]
    return files


def _holders(docker_client: Any, label: str) -> list[dict[str, Any]]:
    found = docker_client.api.containers(all=True, filters={"label": label})
    return [docker_client.api.inspect_container(c["Id"]) for c in found]


def _created_holders(since: float, until: float, label: str) -> list[str]:
    """Holders made on networks labelled ``label`` between the two times (``docker events``)."""
    window = ["--since", f"{since:.3f}", "--until", f"{until:.3f}"]
    only = ["--filter", "type=container", "--filter", "event=create"]
    only += ["--filter", "label=org.runner.holds", "--filter", f"label={label}"]
    return subprocess.run(
        ["docker", "events", *window, *only, "--format", "{{.Actor.ID}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()


def test_steps_share_their_workspace_holder_which_is_confined_kept_and_replaced(
    tmp_path: Path, docker_client: Any, gvisor: None
) -> None:
    home = tmp_path / "home"
    env = runner_env(home, RUNNER_READY_NETWORKS="2")
    repos = tmp_path / "repos"
    for name in ("app", "lib"):
        make_repo(repos, f"github.com/acme/{name}", {"README.md": f"{name}\n"})
    set_secret(env, "HOLDER_TOKEN", SECRET, "--user=alice")
    spec = _spec(tmp_path / "batch.yaml")
    out = tmp_path / "out"
    args = ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--no-cache"]
    args += ["-j", "2", "--add-host", "git.internal:10.0.0.5"]
    label = "org.runner.network=" + ReadyNetworks(home / "ready-networks", pool="").label
    try:
        proc = run_runner(args, env)
        assert proc.returncode == 0, proc.stderr
        holders = _holders(docker_client, label)
        assert len(holders) == 2
        macs = {}
        for repo in ("github.com/acme/app", "github.com/acme/lib"):
            added = _added(out, repo)
            # Both steps in one namespace, with the names --add-host gave (once).
            assert added["mac-1.txt"] == added["mac-2.txt"]
            assert added["hosts.txt"] == "1"
            macs[repo] = added["mac-1.txt"]
        assert len(set(macs.values())) == 2  # each workspace its own holder
        held = {
            next(iter(h["NetworkSettings"]["Networks"].values()))["MacAddress"]: h for h in holders
        }
        assert set(held) == set(macs.values())
        for holder in holders:
            # Frozen: the image's shell it runs does nothing while it is kept.
            assert holder["State"]["Running"] and holder["State"]["Paused"]
            assert holder["Config"]["User"] == "65534:65534"
            assert holder["HostConfig"]["CapDrop"] == ["ALL"]
            assert holder["HostConfig"]["ReadonlyRootfs"] is True
            assert holder["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
            assert "git.internal:10.0.0.5" in holder["HostConfig"]["ExtraHosts"]
            assert SECRET not in json.dumps(holder)

        # Kept with their networks: the next run makes none; one that stopped (an
        # engine restart, say) is replaced and removed.
        stopped = holders[0]["Id"]
        subprocess.run(["docker", "kill", stopped], check=True, capture_output=True)
        since = time.time()
        proc = run_runner(args, env)
        assert proc.returncode == 0, proc.stderr
        made = _created_holders(since, time.time() + 1, label)
        assert len(made) == 1
        now = {h["Id"] for h in _holders(docker_client, label)}
        assert now == {holders[1]["Id"], made[0]}
        assert all(h["State"]["Running"] for h in _holders(docker_client, label))

        # gVisor's steps join the network itself: no holder made for them.
        _spec(spec, GVISOR_STEPS)
        since = time.time()
        proc = run_runner([*args, "--isolation", "gvisor"], env)
        assert proc.returncode == 0, proc.stderr
        assert _created_holders(since, time.time() + 1, label) == []
        assert _added(out, "github.com/acme/app")["hosts.txt"] == "1"
    finally:
        cleanup = run_runner(["cleanup"], env)
        assert cleanup.returncode == 0, cleanup.stderr
    assert _holders(docker_client, label) == []


def test_an_image_whose_shell_nobody_may_run_gets_no_holder_and_its_steps_still_run(
    tmp_path: Path, docker_client: Any
) -> None:
    tag = f"runner-test/holderless-{uuid.uuid4().hex[:8]}:latest"
    dockerfile = f"FROM {TEST_IMAGE}\nRUN chmod 700 /bin/busybox\n"
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False
    )
    try:
        env = runner_env(tmp_path / "home")
        repos = tmp_path / "repos"
        make_repo(repos, "github.com/acme/app", {"README.md": "app\n"})
        make_repo(repos, "github.com/acme/lib", {"README.md": "lib\n"})
        spec = tmp_path / "batch.yaml"
        spec.write_text(
            "name: holders\non:\n  - repository: github.com/acme/app\n"
            "  - repository: github.com/acme/lib\n"
            + GVISOR_STEPS.format(image=tag)
            + "changesetTemplate:\n  title: t\n  body: b\n  branch: holders\n"
            "  commit:\n    message: m\n"
        )
        out = tmp_path / "out"
        args = ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--no-cache"]
        proc = run_runner([*args, "--add-host", "git.internal:10.0.0.5"], env)
        assert proc.returncode == 0, proc.stderr
        # Its steps had the names all the same, given to them directly.
        assert _added(out, "github.com/acme/app")["hosts.txt"] == "1"
        # The holders that could not start are gone (and none of the image runs).
        made = docker_client.api.containers(all=True, filters={"ancestor": image.id})
        assert made == []
    finally:
        docker_client.images.remove(image.id, force=True)


def test_a_holder_is_named_after_its_network_and_replaces_one_a_killed_run_left(
    docker_client: Any,
) -> None:
    from runner.execute.docker_runtime import DockerRuntime

    runtime = DockerRuntime(docker_client.api)
    job = f"test-holders-{uuid.uuid4().hex[:8]}"
    image = str(docker_client.images.get(TEST_IMAGE).id)
    try:
        net = runtime.create_network(job, internal=False)
        # What a run killed between starting a holder and recording it leaves.
        orphan = docker_client.api.create_container(
            image,
            ["sleep", "600"],
            name=f"{net.name}-holder",
            labels={"org.runner.network": job, "org.runner.holds": net.name},
        )["Id"]
        holder = runtime.hold_network(net, job_id=job, image=image, extra_hosts={})
        assert holder != orphan and runtime.holder_alive(holder)
        assert docker_client.api.inspect_container(holder)["Name"] == f"/{net.name}-holder"
        assert docker_client.api.containers(all=True, filters={"id": orphan}) == []
    finally:
        runtime.sweep_networks(job)
    assert (
        docker_client.api.containers(all=True, filters={"label": f"org.runner.network={job}"}) == []
    )
