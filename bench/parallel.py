"""Parallel efficiency: 8 workspaces of one ``sleep 2`` step with ``-j 4``.

The ideal is two waves of 2 s, 4 s; the figure is that over the measured wall
time of the whole `runner run` (start-up, checks and results included). For
reference, each round also times the same work done by the docker CLI alone
(8 ``docker run --rm IMAGE sleep 2``, 4 at a time): what the engine allows on
this machine.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import (
    IMAGE,
    Sandbox,
    load_average,
    median,
    one_round,
    progress,
    steady_rounds,
)

WORKSPACES, JOBS, SLEEP_S = 8, 4, 2
IDEAL_S = -(-WORKSPACES // JOBS) * SLEEP_S


def docker_cli_wall() -> float:
    """Seconds for the docker CLI to run the same 8 sleeps, 4 at a time."""

    def one(_: int) -> None:
        subprocess.run(
            ["docker", "run", "--rm", IMAGE, "sleep", str(SLEEP_S)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        list(pool.map(one, range(WORKSPACES)))
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, Any]:
    min_rounds, max_rounds = (2, 2) if quick else (3, 5)
    raw: list[list[float]] = [[], []]
    with Sandbox("parallel") as box:
        repos = [box.repo(f"github.com/bench/p-{i}") for i in range(WORKSPACES)]
        spec = box.spec("parallel", repos, [f"sleep {SLEEP_S}"])
        args = box.run_args(spec, "--no-cache", "--json", "-j", str(JOBS))

        def measure_round(index: int) -> float:
            one_round(index, (lambda: box.runner(args).seconds, docker_cli_wall), raw)
            return IDEAL_S / raw[0][-1]

        progress(f"parallel: rounds of {WORKSPACES} × sleep {SLEEP_S} with -j {JOBS}")
        load = load_average()
        efficiency = steady_rounds(measure_round, min_rounds=min_rounds, max_rounds=max_rounds)
    walls, docker_walls = raw
    return {
        "parallel_efficiency": round(median(efficiency), 3),
        "details": {
            "ideal_s": IDEAL_S,
            "wall_s": [round(w, 3) for w in walls],
            "docker_cli_wall_s": [round(w, 3) for w in docker_walls],
            "docker_cli_efficiency": round(IDEAL_S / median(docker_walls), 3),
            "load_before": load,
            "load_after": load_average(),
        },
    }
