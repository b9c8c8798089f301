"""A network per job and egress policies, on the real engine (`runner run`).

No probe leaves this machine: the servers are the test's own, on this
host's addresses (the docker bridge, loopback) and on a link-local address
the test puts on ``lo`` itself (never 169.254.169.254). Every refusal is shown
against a control that reaches the same server from a plain container on
Docker's default bridge, so the test fails if the fence is what is missing.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RUNNER, TEST_IMAGE, make_repo, run_runner, runner_env

pytestmark = pytest.mark.docker

LINK_LOCAL = "169.254.77.1"
GREETING = "hello-from-the-test-server"
NEIGHBOUR = "hello-from-the-neighbour"
NETWORK_LABEL = "org.runner.network"
TAIL = """
changesetTemplate:
  title: t
  body: b
  branch: egress
  commit:
    message: m
"""


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{GREETING}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(address: str) -> Iterator[int]:
    """An HTTP server answering GREETING on ``address``; yields its port."""
    server = http.server.ThreadingHTTPServer((address, 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _addresses(device: str) -> list[str]:
    done = subprocess.run(
        ["ip", "-j", "addr", "show", "dev", device], capture_output=True, text=True, check=True
    )
    return [a["local"] for i in json.loads(done.stdout) for a in i.get("addr_info", [])]


@pytest.fixture
def link_local() -> Iterator[str]:
    """169.254.77.1 on this machine's loopback, there before any probe and gone after."""
    added = LINK_LOCAL not in _addresses("lo")
    if added:
        subprocess.run(["ip", "addr", "add", f"{LINK_LOCAL}/32", "dev", "lo"], check=True)
    try:
        assert LINK_LOCAL in _addresses("lo")
        yield LINK_LOCAL
    finally:
        if added:
            subprocess.run(["ip", "addr", "del", f"{LINK_LOCAL}/32", "dev", "lo"], check=False)


@pytest.fixture
def docker0() -> str:
    """This host's own address on Docker's default bridge."""
    return next(a for a in _addresses("docker0") if ":" not in a)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return runner_env(tmp_path / "home", TMPDIR=str(tmp))


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    root = tmp_path / "repos"
    make_repo(root, "github.com/acme/app", {"README.md": "# app\n"})
    return root


def probe(host: str, port: int | str) -> str:
    """A shell line: one HTTP request straight to host:port, ignoring any proxy."""
    return f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>&1; echo probe-done"


def spec_of(tmp_path: Path, script: str) -> Path:
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir(exist_ok=True)
    indented = "".join(f"      {line}\n" for line in script.splitlines())
    spec.write_text(
        "name: egress\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: |\n{indented}    container: {TEST_IMAGE}\n" + TAIL
    )
    return spec


@pytest.fixture(params=["runc", pytest.param("gvisor", marks=pytest.mark.slow)])
def isolation(request: pytest.FixtureRequest) -> str:
    """Each fence holds at both isolation levels."""
    if request.param == "gvisor":
        request.getfixturevalue("gvisor")
    return str(request.param)


def run(
    tmp_path: Path, env: dict[str, str], repos: Path, script: str, *flags: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], str]:
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    spec = spec_of(tmp_path, script)
    _ORPHANS_BEFORE.clear()
    _ORPHANS_BEFORE.update(orphan_rules())
    proc = run_runner(
        ["run", str(spec), "--repos-root", str(repos), "--out", str(out), "--json", *flags], env
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    output = "\n".join(e["line"] for e in events if e["event"] == "step.output")
    return proc, events, output


def through_proxy(url: str, host: str) -> str:
    """A shell line: one HTTP request for ``url`` to the proxy at ``$p`` (HOST:PORT)."""
    request = f"GET {url} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"
    # stdin stays open a while: the proxy drops a client that hangs up before the answer.
    send = f"{{ printf '{request}'; sleep 2; }}"
    return f"{send} | nc -w 5 ${{p%:*}} ${{p##*:}} 2>&1; echo proxied-done"


def plain_container(script: str, *docker_args: str) -> str:
    """What a container on Docker's default bridge (no runner) sees: the control."""
    done = subprocess.run(
        ["docker", "run", "--rm", *docker_args, TEST_IMAGE, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def networks_of(run_id: str) -> list[str]:
    """The job networks of one run still on the engine."""
    return subprocess.run(
        [
            "docker",
            "network",
            "ls",
            "--filter",
            f"label={NETWORK_LABEL}={run_id}",
            "--format",
            "{{.Name}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def rules() -> dict[str, list[str]]:
    """runner's firewall rules on this machine, by the bridge they fence."""
    listings = [
        subprocess.run(command, capture_output=True, text=True, check=False).stdout
        for command in (
            ["iptables", "-S", "INPUT"],
            ["iptables", "-S", "DOCKER-USER"],
            # runner's own table, there once a run has fenced a network on this machine
            ["nft", "list", "table", "inet", "runner"],
        )
    ]
    found: dict[str, list[str]] = {}
    for line in "\n".join(listings).splitlines():
        match = re.search(r"runner:(rnr[0-9a-f]+)", line)
        if match:
            found.setdefault(match.group(1), []).append(line.strip())
    return found


def orphan_rules() -> list[str]:
    """Rules whose network is gone: what a run that cleaned up after itself never leaves."""
    return [
        line
        for bridge, lines in rules().items()
        if not Path("/sys/class/net", bridge).exists()
        for line in lines
    ]


def bridge_of(network: str) -> str:
    return subprocess.run(
        [
            "docker",
            "network",
            "inspect",
            "-f",
            '{{index .Options "com.docker.network.bridge.name"}}',
            network,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_id_of(events: list[dict[str, Any]]) -> str:
    return str(next(e["run_id"] for e in events if e["event"] == "run.started"))


# Orphaned rules there before the last `run` (other tests' killed runs): not this run's.
_ORPHANS_BEFORE: set[str] = set()


def assert_nothing_left(events: list[dict[str, Any]]) -> None:
    assert networks_of(run_id_of(events)) == []
    # Another test running at the same time (pytest-xdist) may be between removing its
    # network and its rules, which go side by side: wait that moment out.
    deadline = time.monotonic() + 10
    while (left := set(orphan_rules()) - _ORPHANS_BEFORE) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(left) == []


def proxies(of: int | None = None) -> list[int]:
    """Processes running runner's proxy addon: of the runner process ``of``, or else those
    whose runner process is gone (other tests' runs, alive at the same time under
    pytest-xdist, keep theirs)."""
    from runner.egress.proxy import CONFDIR_PREFIX

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"mitm_addon.py" not in cmdline:
                continue
            # The proxy's folder is named after the runner process that started it.
            owner = re.search(rb"%s(\d+)-" % re.escape(CONFDIR_PREFIX.encode()), cmdline)
            pid = int(owner.group(1)) if owner else None
            # Gone: the same test sweep_confdirs makes of a proxy folder's runner.
            gone = pid is None or not Path("/proc", str(pid)).exists()
            if (pid == of) if of is not None else gone:
                found.append(int(entry.name))
    return found


@pytest.fixture
def neighbour(docker_client: Any) -> Iterator[str]:
    """A listening container on another job's network (made as runner makes one); its address."""
    from runner.execute.docker_runtime import DockerRuntime

    runtime = DockerRuntime(docker_client.api)
    job = f"test-neighbour-{uuid.uuid4().hex[:8]}"
    net = runtime.create_network(job, internal=False)
    name = f"runner-test-neighbour-{uuid.uuid4().hex[:8]}"
    serve_page = f"mkdir /www && echo {NEIGHBOUR} > /www/index.html && httpd -f -p 8080 -h /www"
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net.name,
            TEST_IMAGE,
            "sh",
            "-c",
            serve_page,
        ],
        check=True,
        capture_output=True,
    )
    try:
        address = subprocess.run(
            [
                "docker",
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                name,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # The control: a container of the same job reaches it.
        deadline = time.monotonic() + 20
        while NEIGHBOUR not in plain_container(probe(address, 8080), "--network", net.name):
            assert time.monotonic() < deadline, "the neighbour never served"
            time.sleep(0.5)
        yield address
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        runtime.sweep_networks(job)


def test_open_steps_reach_neither_the_host_nor_link_local_nor_another_job(
    tmp_path: Path,
    env: dict[str, str],
    repos: Path,
    link_local: str,
    docker0: str,
    neighbour: str,
    isolation: str,
) -> None:
    with serve("0.0.0.0") as host_port, serve(link_local) as ll_port:  # noqa: S104
        # The controls: without runner's fence, a container reaches both servers.
        assert GREETING in plain_container(probe(docker0, host_port))
        assert GREETING in plain_container(probe(link_local, ll_port))
        script = "\n".join(
            [
                "gw=$(ip route | awk '/default/ {print $3}')",
                "echo gateway=$gw",
                probe("$gw", host_port),
                probe(docker0, host_port),
                probe(link_local, ll_port),
                probe(neighbour, 8080),
            ]
        )
        proc, events, output = run(tmp_path, env, repos, script, "--isolation", isolation)
        assert proc.returncode == 0, proc.stderr
        assert output.count("probe-done") == 4
        assert "gateway=10.213." in output  # its own network, from runner's pool
        assert GREETING not in output
        assert NEIGHBOUR not in output
        assert_nothing_left(events)

        # --allow-host opens exactly the link-local address it names.
        proc, events, output = run(
            tmp_path,
            env,
            repos,
            probe(link_local, ll_port),
            "--allow-host",
            f"{link_local}:{ll_port}",
            "--isolation",
            isolation,
        )
        assert proc.returncode == 0, proc.stderr
        assert GREETING in output
        assert_nothing_left(events)


@contextlib.contextmanager
def networks_made_and_removed(docker_client: Any) -> Iterator[list[int]]:
    """Another user's networks, made and removed in a loop; yields [how many so far].

    Each time a network is made, Docker deletes and inserts again the FORWARD jumps
    to its isolation chains and to DOCKER-USER: for a moment, a bridge's own ACCEPT
    rules stand alone.
    """
    from docker.types import IPAMConfig, IPAMPool

    made = [0]
    stop = threading.Event()
    label = {"org.runner.test": "churn"}

    def churn() -> None:
        name = f"runner-test-churn-{uuid.uuid4().hex[:8]}"
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet="10.98.9.0/28")])
        # Four a second, about the docker CLI's own pace here: the engine keeps only its
        # last 256 events for `docker events --since`, which other tests running at
        # the same time read back.
        while not stop.wait(0.25):
            net = docker_client.networks.create(name, driver="bridge", ipam=ipam, labels=label)
            net.remove()
            made[0] += 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        stop.set()
        thread.join(60)
        for net in docker_client.networks.list(filters={"label": "org.runner.test=churn"}):
            with contextlib.suppress(Exception):
                net.remove()


def probe_often(host: str, port: int, seconds: int) -> str:
    """A shell script: an HTTP request to host:port every 20 ms, each in the background;
    HIT for each answer. It ends without waiting for the last ones (under gVisor a
    dropped connection may outlive nc's timeout)."""
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
    return (
        f"i=0; while [ $i -lt {seconds * 40} ]; do "
        f"({request} | nc -w 1 {host} {port} 2>/dev/null | grep -q {NEIGHBOUR} && echo HIT) & "
        "usleep 20000; i=$((i+1)); done; sleep 2; echo probes=$i"
    )


def test_jobs_stay_apart_while_other_networks_are_made(
    tmp_path: Path,
    env: dict[str, str],
    repos: Path,
    neighbour: str,
    docker_client: Any,
    isolation: str,
) -> None:
    # The control: a container on a network runner made but did not fence, probing the
    # neighbour at the same time, gets through while networks are being made.
    from runner.execute.docker_runtime import DockerRuntime

    runtime = DockerRuntime(docker_client.api)
    job = f"test-control-{uuid.uuid4().hex[:8]}"
    control_net = runtime.create_network(job, internal=False)
    runtime_flag = ["--runtime", "runsc"] if isolation == "gvisor" else []
    script = probe_often(neighbour, 8080, seconds=8)
    control_args = [*runtime_flag, TEST_IMAGE, "sh", "-c", script]
    made_in_all = 0
    try:
        # Rounds until the control got through once (it does 3 to 10 times a round
        # here): each round, the step must not.
        for _ in range(3):
            with networks_made_and_removed(docker_client) as made:
                control = subprocess.Popen(
                    ["docker", "run", "--rm", "--network", control_net.name, *control_args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                proc, events, output = run(tmp_path, env, repos, script, "--isolation", isolation)
                control_output, _ = control.communicate(timeout=120)
            made_in_all += made[0]
            ends = [e for e in events if e["event"].endswith(".finished")]
            assert proc.returncode == 0, (proc.stderr, output[-2000:], ends)
            assert "probes=" in output and "probes=" in control_output
            assert output.count("HIT") == 0, output
            assert_nothing_left(events)
            if "HIT" in control_output:
                break
        else:
            raise AssertionError(
                f"the control never reached the neighbour while {made_in_all} networks were "
                "made: this test shows nothing on this engine"
            )
    finally:
        runtime.sweep_networks(job)


def test_none_leaves_only_loopback(
    tmp_path: Path, env: dict[str, str], repos: Path, isolation: str
) -> None:
    script = "ls /sys/class/net; ip -o addr | awk '{print \"addr\", $2, $4}'"
    proc, events, output = run(
        tmp_path, env, repos, script, "--network", "none", "--isolation", isolation
    )
    assert proc.returncode == 0, proc.stderr
    lines = output.splitlines()
    assert [line for line in lines if not line.startswith("addr")] == ["lo"]
    assert {line.split()[1] for line in lines if line.startswith("addr")} == {"lo"}
    assert_nothing_left(events)


def test_allow_lets_through_listed_hosts_only_and_reports_the_rest(
    tmp_path: Path, env: dict[str, str], repos: Path, docker0: str, isolation: str
) -> None:
    with serve("0.0.0.0") as allowed, serve("127.0.0.1") as refused:  # noqa: S104
        connect = (
            "{{ printf 'CONNECT testhost:{port} HTTP/1.1\\r\\nHost: testhost:{port}\\r\\n\\r\\n'; "
            "sleep 1; printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 2; }} | nc -w 5 $gw 3128; "
            "echo connect-done"
        )
        script = "\n".join(
            [
                "gw=$(ip route | awk '/default/ {print $3}')",
                "env | grep -i _proxy= | sort",
                # Through the proxy HTTP_PROXY names, as tools do: allowed, then refused.
                # (nc speaks the request: busybox wget fails under gVisor on any network.)
                "p=${HTTP_PROXY#http://}",
                through_proxy(f"http://testhost:{allowed}/fine", f"testhost:{allowed}"),
                through_proxy(
                    f"http://testhost:{refused}/secret-path?token=abc", f"testhost:{refused}"
                ),
                # CONNECT, as HTTPS goes: allowed, then refused.
                connect.format(port=allowed),
                connect.format(port=refused),
                # A step that ignores the proxy variables reaches nothing.
                probe("$gw", allowed),
                probe(docker0, allowed),
            ]
        )
        proc, events, output = run(
            tmp_path,
            env,
            repos,
            script,
            "--network",
            "allow",
            "--allow-host",
            f"testhost:{allowed}",
            "--add-host",
            "testhost:127.0.0.1",
            "--isolation",
            isolation,
        )
    assert proc.returncode == 0, proc.stderr
    assert "HTTPS_PROXY=http://" in output and "NO_PROXY=localhost,127.0.0.1" in output
    assert output.count("proxied-done") == 2
    assert "HTTP/1.1 403" in output
    # The plain fetch and the CONNECT tunnel reached the allowed server; nothing else did.
    assert output.count(GREETING) == 2
    assert output.count("probe-done") == 2
    denied = [e for e in events if e["event"] == "step.egress_denied"]
    assert [(e["step"], e["host"], e["port"]) for e in denied] == [
        (1, "testhost", refused),
        (1, "testhost", refused),
    ]
    # Host and port only: never the path, the query, or what the step sent.
    assert "secret-path" not in json.dumps(denied) and "token" not in json.dumps(denied)
    summary = json.loads(next((tmp_path).glob("out-*/summary.json")).read_text())
    assert summary["egress_denied"] == 2
    assert summary["workspaces"][0]["egress_denied"] == 2
    assert_nothing_left(events)
    assert proxies() == []


def _start(tmp_path: Path, env: dict[str, str], repos: Path, *flags: str) -> tuple[Any, str]:
    """A run whose one step sleeps, once that step has started; and the run's id."""
    spec = spec_of(tmp_path, "echo started; sleep 120")
    proc = subprocess.Popen(
        [
            RUNNER,
            "run",
            str(spec),
            "--repos-root",
            str(repos),
            "--out",
            str(tmp_path / "out"),
            "--json",
            *flags,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    run_id = ""
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "run.started":
            run_id = event["run_id"]
        if event["event"] == "step.started":
            return proc, run_id
    raise AssertionError("the step never started")


def _fenced(run_id: str) -> str:
    """The run's one network, checked to be fenced; its bridge."""
    (network,) = networks_of(run_id)
    bridge = bridge_of(network)
    mine = rules()[bridge]
    assert len([r for r in mine if r.startswith("-A INPUT")]) >= 3
    assert len([r for r in mine if "reject" in r]) >= 2  # runner's nftables table
    return bridge


def test_networks_rules_and_proxies_go_after_ctrl_c_and_after_cleanup(
    tmp_path: Path, env: dict[str, str], repos: Path
) -> None:
    proc, run_id = _start(tmp_path, env, repos, "--network", "allow")
    bridge = _fenced(run_id)
    assert len(proxies(of=proc.pid)) >= 1
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert networks_of(run_id) == [] and bridge not in rules()
    assert proxies(of=proc.pid) == []

    # Killed outright: nothing of runner cleans up, so its proxy ends by itself
    # and `runner cleanup` removes the network and its rules.
    proc, run_id = _start(tmp_path, env, repos, "--network", "allow")
    bridge = _fenced(run_id)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 20
    while proxies(of=proc.pid):
        assert time.monotonic() < deadline, "the proxy outlived its runner"
        time.sleep(0.2)
    assert networks_of(run_id) and bridge in rules()
    done = run_runner(["cleanup"], env)
    assert done.returncode == 0, done.stderr
    assert networks_of(run_id) == [] and bridge not in rules()
    assert not any(bridge in r for r in orphan_rules())


def test_cleanup_removes_rules_an_older_runner_left_in_docker_user(env: dict[str, str]) -> None:
    # Before runner's nftables table, its link-local rule was in DOCKER-USER: a host
    # upgraded with such a rule left behind (a killed run) gets it swept.
    bridge = f"rnr{uuid.uuid4().hex[:12]}"
    tag = ["-m", "comment", "--comment", f"runner:{bridge}"]
    rule = ["DOCKER-USER", "-i", bridge, "-d", "169.254.0.0/16", *tag, "-j", "REJECT"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        assert bridge in rules()
        done = run_runner(["cleanup"], env)
        assert done.returncode == 0, done.stderr
        assert bridge not in rules()
    finally:
        subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)


def test_without_nft_open_keeps_the_iptables_fence_and_allow_is_refused(
    docker_client: Any,
) -> None:
    from runner.egress.firewall import HostFirewall, docker_user_rules, rules_for
    from runner.errors import ExecutionError
    from runner.execute.docker_runtime import DockerRuntime
    from runner.sandbox import SandboxPolicy

    runtime = DockerRuntime(docker_client.api)
    job = f"test-no-nft-{uuid.uuid4().hex[:8]}"
    firewall = HostFirewall(nft="runner-test-no-such-nft")
    policy = SandboxPolicy()
    try:
        net = runtime.create_network(job, internal=False)
        assert net.bridge is not None
        firewall.guard(net, policy, proxy_port=None)
        mine = rules()[net.bridge]
        assert len(mine) == len(rules_for(net, policy, None)) + len(docker_user_rules(net, policy))
        assert any("DOCKER-USER" in r and "169.254.0.0/16" in r for r in mine)
        assert firewall.fenced(net, policy, None)
        firewall.release(net)
        assert net.bridge not in rules()

        closed = runtime.create_network(job, internal=True)
        with pytest.raises(ExecutionError, match="nftables"):
            firewall.guard(closed, SandboxPolicy(network="allow"), proxy_port=3128)
        assert closed.bridge not in rules()  # nothing half-made is left
    finally:
        runtime.sweep_networks(job)


def test_networks_taken_at_once_are_checked_from_one_listing_and_a_lost_rule_is_seen(
    docker_client: Any,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from runner.egress.firewall import HostFirewall
    from runner.execute.docker_runtime import DockerRuntime
    from runner.sandbox import SandboxPolicy

    class Counting(HostFirewall):
        """The next run's firewall, counting the listings it takes."""

        listings = 0

        def _run(self, args: list[str]) -> str:
            self.listings += args[:1] == ["-S"]
            return super()._run(args)

        def _nft(self, args: list[str]) -> str:
            self.listings += "list" in args
            return super()._nft(args)

    runtime = DockerRuntime(docker_client.api)
    job = f"test-counted-{uuid.uuid4().hex[:8]}"
    policy = SandboxPolicy()
    nets: list[Any] = []
    try:
        nets += [runtime.create_network(job, internal=False) for _ in range(4)]
        for net in nets:
            HostFirewall().guard(net, policy, proxy_port=None)
        checker = Counting()
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert all(pool.map(lambda n: checker.fenced(n, policy, None), nets))
        assert checker.listings == 2  # one of nft's table, one of INPUT, for all four
        # One rule gone (a flush, say): the next run sees it on that network alone.
        lost = next(r for r in rules()[str(nets[1].bridge)] if r.startswith("-A INPUT"))
        subprocess.run(["iptables", *shlex.split(lost.replace("-A ", "-D ", 1))], check=True)
        again = Counting()
        assert [again.fenced(n, policy, None) for n in nets] == [True, False, True, True]
    finally:
        for net in nets:
            HostFirewall().release(net)
        runtime.sweep_networks(job)
