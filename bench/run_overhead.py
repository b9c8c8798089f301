"""Per-step and fixed overhead of `runner run` against bare `docker run`.

``step_overhead_ratio``: one workspace with 20 trivial steps minus one with
10, divided by 10 (the marginal step), over one ``docker run --rm IMAGE true``
(10 sequential runs, divided by 10). ``fixed_overhead_runs``: what remains of
the 10-step run beyond 10 marginal steps, in ``docker run`` durations.

Each round runs the three measurements back to back, rotating which goes
first, and yields its own figures; the result is the median round. Rounds are
added (up to a limit) while they disagree, which is what a burst of load from
elsewhere on the machine looks like. As a cross-check that needs no
subtraction, the details also give the median interval between consecutive
``step.started`` events of the 20-step runs over the median single
``docker run``.

Steps run hardened (runner's defaults); ``bench.gvisor`` measures the same
way with ``--isolation gvisor`` (``measure``'s ``flags``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from bench.common import (
    Sandbox,
    docker_run_true,
    event_time,
    events,
    load_average,
    median,
    one_round,
    progress,
    relative_spread,
    steady_rounds,
)

SHORT, LONG, DOCKER_RUNS = 10, 20, 10


def run(quick: bool = False) -> dict[str, Any]:
    raw, docker_each, intervals, loads = measure(quick)
    result = figures(*raw)
    result["details"].update(
        {
            "step_interval_s": round(median(intervals), 4),
            "docker_run_median_s": round(median(docker_each), 4),
            "interval_vs_docker_run": round(median(intervals) / median(docker_each), 3),
            "load_before": loads[0],
            "load_after": loads[1],
        }
    )
    return result


def measure(
    quick: bool, *flags: str, name: str = "overhead"
) -> tuple[list[list[float]], list[float], list[float], tuple[Any, Any]]:
    """Rounds of (10-step run, 20-step run, 10 docker runs), each `runner run` with ``flags``.

    Returns the raw times per measurement, every single ``docker run``'s time,
    the intervals between steps of the 20-step runs, and the load before and after.
    """
    min_rounds, max_rounds = (3, 3) if quick else (7, 11)
    raw: list[list[float]] = [[], [], []]
    docker_each: list[float] = []
    intervals: list[float] = []
    with Sandbox(name) as box:
        repo = box.repo("github.com/bench/app")
        short = box.spec("steps-10", [repo], ["true"] * SHORT)
        long = box.spec("steps-20", [repo], ["true"] * LONG)
        args_short = box.run_args(short, "--no-cache", "--json", *flags)
        args_long = box.run_args(long, "--no-cache", "--json", *flags)
        # Warm-up: creates the master key and database, pages in runner and the image.
        box.runner(args_short)
        docker_run_true(2)

        def run_long() -> float:
            result = box.runner(args_long)
            starts = [event_time(e) for e in events(result.proc) if e["event"] == "step.started"]
            intervals.extend(b - a for a, b in pairwise(starts))
            return result.seconds

        def run_docker() -> float:
            times = docker_run_true(DOCKER_RUNS)
            docker_each.extend(times)
            return sum(times)

        def measure_round(index: int) -> float:
            one_round(index, (lambda: box.runner(args_short).seconds, run_long, run_docker), raw)
            return per_round(raw[0][-1], raw[1][-1], raw[2][-1])[0]

        shown = " ".join(flags) or "defaults"
        progress(f"{name} ({shown}): rounds of {SHORT} steps, {LONG} steps, 10 docker runs")
        load = load_average()
        # A difference of two runs is noisier than a ratio: more rounds, a tighter agreement.
        steady_rounds(measure_round, min_rounds=min_rounds, max_rounds=max_rounds, spread=0.10)
    return raw, docker_each, intervals, (load, load_average())


def per_round(short: float, long: float, docker_x10: float) -> tuple[float, float]:
    """(step overhead ratio, fixed overhead in docker runs) of one round."""
    docker = docker_x10 / DOCKER_RUNS
    marginal = (long - short) / (LONG - SHORT)
    return marginal / docker, (short - SHORT * marginal) / docker


def figures(
    t_short: Sequence[float], t_long: Sequence[float], t_docker: Sequence[float]
) -> dict[str, Any]:
    rounds = [per_round(*r) for r in zip(t_short, t_long, t_docker, strict=True)]
    ratios = [r[0] for r in rounds]
    fixed = [r[1] for r in rounds]
    short, long = median(t_short), median(t_long)
    marginal = (long - short) / (LONG - SHORT)
    return {
        "step_overhead_ratio": round(median(ratios), 3),
        "fixed_overhead_runs": round(median(fixed), 2),
        "details": {
            "rounds": len(rounds),
            "ratio_per_round": _rounded(ratios),
            "fixed_runs_per_round": _rounded(fixed),
            "ratio_spread": round(relative_spread(ratios), 3),
            "run_10_steps_s": _rounded(t_short),
            "run_20_steps_s": _rounded(t_long),
            "docker_run_x10_s": _rounded(t_docker),
            "marginal_step_s": round(marginal, 4),
            "docker_run_s": round(median(t_docker) / DOCKER_RUNS, 4),
            "fixed_overhead_s": round(short - SHORT * marginal, 3),
        },
    }


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 3) for v in values]
