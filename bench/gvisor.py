"""What a step under gVisor costs: ``gvisor_step_overhead_ratio``.

The marginal step of `runner run --isolation gvisor` (a workspace with 20
trivial steps minus one with 10, divided by 10), over one plain
``docker run --rm IMAGE true`` (runc, no hardening): what choosing gVisor
costs a step, all told. Measured as ``bench.run_overhead`` measures the runc
figure, in rounds that alternate the three measurements.
"""

from __future__ import annotations

from typing import Any

from bench.common import BenchError, median, timed
from bench.run_overhead import figures, measure


def run(quick: bool = False) -> dict[str, Any]:
    _require_runsc()
    raw, docker_each, intervals, loads = measure(quick, "--isolation", "gvisor", name="gvisor")
    measured = figures(*raw)
    details = measured["details"]
    return {
        "gvisor_step_overhead_ratio": measured["step_overhead_ratio"],
        "details": {
            "rounds": details["rounds"],
            "ratio_per_round": details["ratio_per_round"],
            "ratio_spread": details["ratio_spread"],
            "run_10_steps_s": details["run_10_steps_s"],
            "run_20_steps_s": details["run_20_steps_s"],
            "docker_run_x10_s": details["docker_run_x10_s"],
            "marginal_step_s": details["marginal_step_s"],
            "docker_run_s": details["docker_run_s"],
            "step_interval_s": round(median(intervals), 4),
            "interval_vs_docker_run": round(median(intervals) / median(docker_each), 3),
            "load_before": loads[0],
            "load_after": loads[1],
        },
    }


def _require_runsc() -> None:
    runtimes = timed(["docker", "info", "--format", "{{json .Runtimes}}"], ok=lambda _: True)
    if '"runsc"' not in runtimes.proc.stdout:
        raise BenchError("the Docker engine has no runsc runtime; run scripts/ensure-runsc.sh")
