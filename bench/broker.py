"""What brokering costs an HTTPS request: ``brokered_request_overhead_ratio``.

One step in ``runner-test/debian-tools`` makes small HTTPS requests to a
local server (its own CA, given to the proxy with ``--broker-ca-file``)
through the job's proxy, and as many through the same proxy as plain CONNECT
tunnels, each a new ``curl`` process, and prints how long each took (``date
+%s%N`` around it, so process start and the TLS handshakes count):

* brokered: ``BROKERED`` is bound to the server's name ``HOST``, so the
  proxy intercepts TLS and puts the real value into each request;
* tunnelled: the same server under another name, ``TUNNEL_HOST``, bound to no
  secret, so the request (carrying ``TUNNELLED``, bound elsewhere) passes
  untouched.

The two kinds alternate request by request, the first of each pair rotating
from round to round, so both see the same machine at the same moment and a
round is one run (one container, one proxy) rather than two. A round makes
100 of each; 2 rounds, a third only when their ratios disagree by more than
15 %. The figure is the median of every brokered request (200 or 300) over
the median of every tunnelled one. Goal: 1.5 or less.
"""

from __future__ import annotations

import secrets
import string
import subprocess
from pathlib import Path
from typing import Any

from bench.common import (
    RUNNER,
    USER,
    BenchError,
    Sandbox,
    events,
    load_average,
    median,
    progress,
    require_image,
    steady_rounds,
)
from runner.testing.tls import LocalCA, https_recorder

IMAGE = "runner-test/debian-tools:latest"
HOST = "bench.test.example"
TUNNEL_HOST = "tunnel.test.example"  # the same server, intercepted for no secret
ELSEWHERE = "elsewhere.test.example"
KINDS = {"b": ("BROKERED", HOST), "t": ("TUNNELLED", TUNNEL_HOST)}
PER_ROUND = 100  # requests of each kind per round; 2 rounds make the 200 the key is about


def _request(kind: str, port: int) -> str:
    variable, host = KINDS[kind]
    return (
        f'  a=$(date +%s%N); curl -sS -o /dev/null --cacert /tmp/roots.pem -H "Authorization: '
        f'Bearer ${variable}" https://{host}:{port}/ || exit 1; b=$(date +%s%N); '
        f'echo "{kind} $((b - a))"\n'
    )


def _script(port: int, requests: int, first: str) -> str:
    """``requests`` pairs of one brokered and one tunnelled request, ``first`` of each first."""
    second = "t" if first == "b" else "b"
    return (
        'cat "$CURL_CA_BUNDLE" bench-ca.pem > /tmp/roots.pem\n'
        "i=0\n"
        f"while [ $i -lt {requests} ]; do\n"
        f"{_request(first, port)}{_request(second, port)}"
        "  i=$((i + 1))\n"
        "done\n"
    )


def _spec(box: Sandbox, name: str, script: str) -> Path:
    path = box.specs / f"{name}.batch.yaml"
    indented = "".join(f"      {line}\n" for line in script.splitlines())
    path.write_text(
        f"name: {name}\non:\n  - repository: github.com/bench/broker\nsteps:\n"
        f"  - run: |\n{indented}    container: {IMAGE}\n    env: [BROKERED, TUNNELLED]\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: bench/broker\n"
        "  commit:\n    message: m\n"
    )
    return path


def _set_secret(box: Sandbox, name: str, value: str, host: str) -> None:
    proc = subprocess.run(
        [RUNNER, "secret", "set", name, "--user", USER, "--broker-host", host],
        env=box.env,
        input=value,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"runner secret set failed: {proc.stderr.strip()[-300:]}")


def _request_times(box: Sandbox, spec: Path, flags: list[str]) -> dict[str, list[float]]:
    """Each kind's request times (seconds) of one run."""
    done = box.runner(box.run_args(spec, "--json", "--no-cache", *flags))
    lines = [str(e.get("line", "")) for e in events(done.proc) if e["event"] == "step.output"]
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for line in lines:
        kind, _, took = line.partition(" ")
        if kind in times and took.isdigit():
            times[kind].append(int(took) / 1e9)
    if not all(times.values()):
        raise BenchError(f"the brokered bench step printed no timings: {lines[-3:]}")
    return times


def run(quick: bool = False) -> dict[str, Any]:
    require_image(IMAGE)
    requests = 25 if quick else PER_ROUND
    loads = [load_average()]
    with Sandbox("broker") as box:
        ca = LocalCA(box.root / "ca")
        box.repo("github.com/bench/broker", {"bench-ca.pem": ca.path.read_text()})
        alphabet = string.ascii_letters + string.digits
        values = {}
        for name, host in (("BROKERED", HOST), ("TUNNELLED", ELSEWHERE)):
            values[name] = "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))
            _set_secret(box, name, values[name], host)
        with https_recorder(ca.issue(HOST, TUNNEL_HOST)) as server:
            specs = [
                _spec(box, f"broker-{first}", _script(server.port, requests, first))
                for first in ("b", "t")
            ]
            flags = ["--broker-ca-file", str(ca.path)]
            flags += [f"--add-host={host}:127.0.0.1" for host in (HOST, TUNNEL_HOST)]
            medians: dict[str, list[float]] = {"b": [], "t": []}
            every: dict[str, list[float]] = {"b": [], "t": []}

            def measure_round(index: int) -> float:
                times = _request_times(box, specs[index % 2], flags)
                for kind in KINDS:
                    medians[kind].append(median(times[kind]))
                    every[kind] += times[kind]
                ratio = medians["b"][-1] / medians["t"][-1]
                progress(f"broker: round {index + 1}: ratio {ratio:.2f}")
                return ratio

            ratios = steady_rounds(measure_round, min_rounds=2, max_rounds=2 if quick else 3)
            # The brokered requests really were brokered, the tunnelled ones never were.
            real = server.authorizations.count(f"Bearer {values['BROKERED']}")
            if real < requests * len(ratios):
                raise BenchError("the brokered requests did not reach the server with the value")
            if f"Bearer {values['TUNNELLED']}" in server.authorizations:
                raise BenchError("a tunnelled request was brokered: the comparison is void")
    loads.append(load_average())
    return {
        "brokered_request_overhead_ratio": round(median(every["b"]) / median(every["t"]), 3),
        "details": {
            "requests_per_kind": len(every["b"]),
            "rounds": len(ratios),
            "ratio_per_round": [round(r, 3) for r in ratios],
            "brokered_request_s": [round(v, 4) for v in medians["b"]],
            "tunnelled_request_s": [round(v, 4) for v in medians["t"]],
            "load_before": loads[0],
            "load_after": loads[1],
        },
    }
