"""What brokering costs an HTTPS request: ``brokered_request_overhead_ratio``.

One step in ``runner-test/debian-tools`` makes N small HTTPS requests to a
local server (its own CA, given to the proxy with ``--broker-ca-file``),
each a new ``curl`` process, and prints how long each took (``date +%s%N``
around it, so process start and the TLS handshakes count). Two runs per
round, back to back, rotating which goes first:

* brokered: the step's token is bound to the server's host, so the job's
  proxy intercepts TLS and puts the real value into each request;
* tunnelled: the same step and proxy, with the token bound to another host,
  so the request passes as a plain CONNECT tunnel.

The figure is the median request time brokered over tunnelled, per round;
the result is the median round. Goal: 1.5 or less.
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
    one_round,
    progress,
    require_image,
    steady_rounds,
)
from runner.testing.tls import LocalCA, https_recorder

IMAGE = "runner-test/debian-tools:latest"
HOST = "bench.test.example"
ELSEWHERE = "elsewhere.test.example"


def _script(port: int, requests: int, variable: str) -> str:
    return (
        'cat "$CURL_CA_BUNDLE" bench-ca.pem > /tmp/roots.pem\n'
        "i=0\n"
        f"while [ $i -lt {requests} ]; do\n"
        "  a=$(date +%s%N)\n"
        f'  curl -sS -o /dev/null --cacert /tmp/roots.pem -H "Authorization: Bearer ${variable}" '
        f"https://{HOST}:{port}/ || exit 1\n"
        "  b=$(date +%s%N)\n"
        '  echo "took $((b - a))"\n'
        "  i=$((i + 1))\n"
        "done\n"
    )


def _spec(box: Sandbox, name: str, secret: str, script: str) -> Path:
    path = box.specs / f"{name}.batch.yaml"
    indented = "".join(f"      {line}\n" for line in script.splitlines())
    path.write_text(
        f"name: {name}\non:\n  - repository: github.com/bench/broker\nsteps:\n"
        f"  - run: |\n{indented}    container: {IMAGE}\n    env: [{secret}]\n"
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


def _request_times(box: Sandbox, spec: Path, flags: list[str]) -> list[float]:
    done = box.runner(box.run_args(spec, "--json", "--no-cache", *flags))
    lines = [str(e.get("line", "")) for e in events(done.proc) if e["event"] == "step.output"]
    times = [int(line.split()[1]) / 1e9 for line in lines if line.startswith("took ")]
    if not times:
        raise BenchError(f"the brokered bench step printed no timings: {lines[-3:]}")
    return times


def run(quick: bool = False) -> dict[str, Any]:
    require_image(IMAGE)
    requests = 50 if quick else 200
    loads = [load_average()]
    with Sandbox("broker") as box:
        ca = LocalCA(box.root / "ca")
        box.repo("github.com/bench/broker", {"bench-ca.pem": ca.path.read_text()})
        alphabet = string.ascii_letters + string.digits
        values = {}
        for name, host in (("BROKERED", HOST), ("TUNNELLED", ELSEWHERE)):
            values[name] = "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))
            _set_secret(box, name, values[name], host)
        with https_recorder(ca.issue(HOST)) as server:
            specs = {
                kind: _spec(box, kind, name, _script(server.port, requests, name))
                for kind, name in (("brokered", "BROKERED"), ("tunnelled", "TUNNELLED"))
            }
            flags = ["--broker-ca-file", str(ca.path), "--add-host", f"{HOST}:127.0.0.1"]
            medians: dict[str, list[float]] = {"brokered": [], "tunnelled": []}

            def measure_round(index: int) -> float:
                found: list[list[float]] = [[], []]
                one_round(
                    index,
                    [
                        lambda: median(_request_times(box, specs["brokered"], flags)),
                        lambda: median(_request_times(box, specs["tunnelled"], flags)),
                    ],
                    found,
                )
                medians["brokered"].append(found[0][0])
                medians["tunnelled"].append(found[1][0])
                ratio = found[0][0] / found[1][0]
                progress(f"broker: round {index + 1}: ratio {ratio:.2f}")
                return ratio

            ratios = steady_rounds(
                measure_round, min_rounds=1 if quick else 3, max_rounds=1 if quick else 5
            )
            # The brokered runs really brokered: the server got the real value each time.
            real = server.authorizations.count(f"Bearer {values['BROKERED']}")
            if real < requests * len(ratios):
                raise BenchError("the brokered requests did not reach the server with the value")
    loads.append(load_average())
    return {
        "brokered_request_overhead_ratio": round(median(ratios), 3),
        "details": {
            "requests_per_run": requests,
            "rounds": len(ratios),
            "ratio_per_round": [round(r, 3) for r in ratios],
            "brokered_request_s": [round(v, 4) for v in medians["brokered"]],
            "tunnelled_request_s": [round(v, 4) for v in medians["tunnelled"]],
            "load_before": loads[0],
            "load_after": loads[1],
        },
    }
