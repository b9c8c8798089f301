"""Parallel efficiency: 8 workspaces of one ``sleep 2`` step with ``-j 4``.

The ideal is two waves of 2 s, 4 s; ``parallel_efficiency`` is that over the
measured wall time of the whole `runner run` (start-up, checks and results
included). Each round also times the same work done by the docker CLI alone
(8 ``docker run --rm IMAGE sleep 2``, 4 at a time, each on a network created
and removed for it, as runner gives each workspace job its own):
``parallel_vs_docker_cli`` is runner's efficiency over the CLI's in the same
round (the CLI's wall time over runner's), the median of the rounds. The CLI
on the default bridge is timed too, for reference. One round of each first is
not counted (a warm-up).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
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


def docker_cli_wall(*, networks: bool = True) -> float:
    """Seconds for the docker CLI to run the same 8 sleeps, 4 at a time.

    ``networks``: each on a bridge network made for it and removed after, as
    a user scripting runner's isolation would; else on the default bridge.
    """

    def one(index: int) -> None:
        name = f"runner-bench-{os.getpid()}-{index}"
        flags = ["--network", name] if networks else []
        if networks:
            _docker("network", "create", name)
        try:
            _docker("run", "--rm", *flags, IMAGE, "sleep", str(SLEEP_S))
        finally:
            if networks:
                _docker("network", "rm", name)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        list(pool.map(one, range(WORKSPACES)))
    return time.perf_counter() - start


def _docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=120)


def run(quick: bool = False) -> dict[str, Any]:
    min_rounds, max_rounds = (2, 2) if quick else (3, 5)
    raw: list[list[float]] = [[], [], []]
    with Sandbox("parallel") as box:
        repos = [box.repo(f"github.com/bench/p-{i}") for i in range(WORKSPACES)]
        spec = box.spec("parallel", repos, [f"sleep {SLEEP_S}"])
        args = box.run_args(spec, "--no-cache", "--json", "-j", str(JOBS))

        measures: tuple[Callable[[], float], ...] = (
            lambda: box.runner(args).seconds,
            docker_cli_wall,
            lambda: docker_cli_wall(networks=False),
        )

        def measure_round(index: int) -> float:
            one_round(index, measures, raw)
            return IDEAL_S / raw[0][-1]

        progress(f"parallel: rounds of {WORKSPACES} × sleep {SLEEP_S} with -j {JOBS}")
        # Warm-up, as the other modules do: the page cache, the engine's first
        # containers of the image, and the networks runner keeps ready between runs
        # (as any earlier run on the machine leaves them). The first round was the
        # slowest of every run, runner's by 0.6-0.8 s and the CLI's by 0.2.
        for measure in measures:
            measure()
        load = load_average()
        efficiency = steady_rounds(measure_round, min_rounds=min_rounds, max_rounds=max_rounds)
    walls, docker_walls, bridge_walls = raw
    versus = [d / w for w, d in zip(walls, docker_walls, strict=True)]
    return {
        "parallel_efficiency": round(median(efficiency), 3),
        "parallel_vs_docker_cli": round(median(versus), 3),
        "details": {
            "ideal_s": IDEAL_S,
            "wall_s": [round(w, 3) for w in walls],
            "docker_cli_wall_s": [round(w, 3) for w in docker_walls],
            "docker_cli_efficiency": round(IDEAL_S / median(docker_walls), 3),
            "vs_docker_cli_per_round": [round(v, 3) for v in versus],
            "docker_cli_default_bridge_wall_s": [round(w, 3) for w in bridge_walls],
            "docker_cli_default_bridge_efficiency": round(IDEAL_S / median(bridge_walls), 3),
            "vs_docker_cli_default_bridge": round(
                median(b / w for w, b in zip(walls, bridge_walls, strict=True)), 3
            ),
            "load_before": load,
            "load_after": load_average(),
        },
    }
