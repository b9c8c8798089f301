"""Parallel efficiency: 8 workspaces of one ``sleep 2`` step with ``-j 4``.

The ideal is two waves of 2 s, 4 s; the figure is that over the measured wall
time of the whole `runner run` (start-up, checks and results included).
"""

from __future__ import annotations

from typing import Any

from bench.common import Sandbox, median, progress

WORKSPACES, JOBS, SLEEP_S = 8, 4, 2


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 3
    ideal = -(-WORKSPACES // JOBS) * SLEEP_S
    with Sandbox("parallel") as box:
        repos = [box.repo(f"github.com/bench/p-{i}") for i in range(WORKSPACES)]
        spec = box.spec("parallel", repos, [f"sleep {SLEEP_S}"])
        args = box.run_args(spec, "--no-cache", "--json", "-j", str(JOBS))
        progress(f"parallel: {rounds} runs of {WORKSPACES} × sleep {SLEEP_S} with -j {JOBS}")
        walls = [box.runner(args).seconds for _ in range(rounds)]
    return {
        "parallel_efficiency": round(ideal / median(walls), 3),
        "details": {"ideal_s": ideal, "wall_s": [round(w, 3) for w in walls]},
    }
