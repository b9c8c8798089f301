"""Per-step and fixed overhead of `runner run` against bare `docker run`.

``step_overhead_ratio``: one workspace with 20 trivial steps minus one with
10, divided by 10 (the marginal step), over one ``docker run --rm IMAGE true``
(10 sequential runs, divided by 10). ``fixed_overhead_runs``: what remains of
the 10-step run beyond 10 marginal steps, in ``docker run`` durations. The
three measurements alternate within each round, rotating which goes first;
each figure comes from the medians.
"""

from __future__ import annotations

from typing import Any

from bench.common import Sandbox, alternate, docker_run_true, median, progress

SHORT, LONG, DOCKER_RUNS = 10, 20, 10


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 3 if quick else 5
    with Sandbox("overhead") as box:
        repo = box.repo("github.com/bench/app")
        short = box.spec("steps-10", [repo], ["true"] * SHORT)
        long = box.spec("steps-20", [repo], ["true"] * LONG)
        args_short = box.run_args(short, "--no-cache", "--json")
        args_long = box.run_args(long, "--no-cache", "--json")
        # Warm-up: creates the master key and database, pages in runner and the image.
        box.runner(args_short)
        docker_run_true(2)
        progress(f"step overhead: {rounds} rounds of {SHORT} steps, {LONG} steps, 10 docker runs")
        t_short, t_long, t_docker = alternate(
            rounds,
            lambda: box.runner(args_short).seconds,
            lambda: box.runner(args_long).seconds,
            lambda: docker_run_true(DOCKER_RUNS),
        )
    return figures(t_short, t_long, t_docker)


def figures(t_short: list[float], t_long: list[float], t_docker: list[float]) -> dict[str, Any]:
    short, long = median(t_short), median(t_long)
    docker = median(t_docker) / DOCKER_RUNS
    marginal = (long - short) / (LONG - SHORT)
    fixed = short - SHORT * marginal
    return {
        "step_overhead_ratio": round(marginal / docker, 3),
        "fixed_overhead_runs": round(fixed / docker, 2),
        "details": {
            "run_10_steps_s": _rounded(t_short),
            "run_20_steps_s": _rounded(t_long),
            "docker_run_x10_s": _rounded(t_docker),
            "marginal_step_s": round(marginal, 4),
            "docker_run_s": round(docker, 4),
            "fixed_overhead_s": round(fixed, 3),
        },
    }


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]
