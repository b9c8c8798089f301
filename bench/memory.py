"""Peak RSS growth of `runner run` while a step prints 1 GiB to stdout.

The step prints log-like lines of 1 KiB (``yes LINE | head -c 1G``) and the
run's log cap is raised to 2 GiB. runner runs without ``--json``, its stdout
and stderr to /dev/null, so every line takes the default non-terminal path
(redacted, split, logged as a structured line). The runner process's peak
(``VmHWM`` of /proc/PID/status, polled) is compared with the peak of the same
run whose step prints nothing: the difference is what printing 1 GiB costs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import RUNNER, BenchError, Sandbox, progress

MIB = 1024 * 1024
LINE_BYTES = 1024
_PREFIX = "2024-05-01T12:00:00Z INFO build: compiling module "


@dataclass(frozen=True)
class PeakRss:
    seconds: float
    returncode: int
    peak_kib: int  # VmHWM at the last reading before exit
    samples: int


def _status_kib(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_rss(
    cmd: Sequence[str], env: Mapping[str, str] | None = None, *, interval_s: float = 0.02
) -> PeakRss:
    """Run ``cmd`` (output discarded) and poll its own process's peak RSS until it ends."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    samples = 0
    while proc.poll() is None:
        hwm = _status_kib(proc.pid, "VmHWM")
        if hwm is not None:
            peak = max(peak, hwm)
            samples += 1
        time.sleep(interval_s)
    return PeakRss(time.perf_counter() - start, proc.returncode, peak, samples)


def log_line(width: int = LINE_BYTES) -> str:
    """One log-like line of ``width`` bytes with its newline (so ``width - 1`` here)."""
    body = _PREFIX
    i = 0
    while len(body) < width:
        body += f"src/pkg/module_{i:03d}.go ok "
        i += 1
    return body[: width - 1]


def run(quick: bool = False) -> dict[str, Any]:
    size = (64 if quick else 1024) * MIB
    with Sandbox("memory") as box:
        repo = box.repo("github.com/bench/loud")
        loud = box.spec("loud", [repo], [f"yes '{log_line()}' | head -c {size}"])
        quiet = box.spec("quiet", [repo], ["true"])
        flags = ("--no-cache", "--log-cap", "2g")
        box.runner([*box.run_args(quiet, *flags), "--json"])  # warm-up
        progress(f"memory: a step printing {size // MIB} MiB, and one printing nothing")
        base = _measure(box, [RUNNER, *box.run_args(quiet, *flags)])
        loud_run = _measure(box, [RUNNER, *box.run_args(loud, *flags)])
    growth = (loud_run.peak_kib - base.peak_kib) / 1024
    return {
        "stream_1gib_rss_growth_mib": round(max(growth, 0.0), 1),
        "details": {
            "printed_mib": size // MIB,
            "line_bytes": LINE_BYTES,
            "peak_rss_mib": round(loud_run.peak_kib / 1024, 1),
            "baseline_peak_rss_mib": round(base.peak_kib / 1024, 1),
            "wall_s": round(loud_run.seconds, 2),
            "throughput_mib_s": round(size / MIB / loud_run.seconds, 1),
            "rss_samples": loud_run.samples,
        },
    }


def _measure(box: Sandbox, cmd: list[str]) -> PeakRss:
    result = peak_rss(cmd, box.env)
    if result.returncode != 0:
        raise BenchError(f"`runner run` exited {result.returncode} in the memory benchmark")
    return result
