"""Log throughput: a step that prints 64 MiB in 100-byte lines, end to end.

The step ``cat``s a 64 MiB file of 100-byte log lines from its workspace.
Three measures per round, alternated: ``runner run --log-format text`` (one
human-readable log line per output line on stderr), ``runner run --json`` (one
``step.output`` event per line on stdout), both with stdout and stderr to
files, and ``docker run IMAGE cat FILE`` into a file, the floor a user's own
script would pay. Each figure is MiB printed over the whole command's wall
time (start-up, workspace and container included), the median of the rounds.
Every run is checked to have written one line per output line.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    IMAGE,
    RUNNER,
    BenchError,
    Sandbox,
    load_average,
    median,
    one_round,
    progress,
    steady_rounds,
)

MIB = 1024 * 1024
LINE_BYTES = 100


def log_text(size: int) -> str:
    """``size`` bytes of numbered log lines of ``LINE_BYTES`` bytes each."""
    lines = []
    for i in range(size // LINE_BYTES):
        head = f"2024-05-01T12:00:00Z INFO build: compiling module {i:010d} "
        lines.append(head + "x" * (LINE_BYTES - 1 - len(head)) + "\n")
    return "".join(lines)


def _to_files(cmd: Sequence[str], env: dict[str, str] | None, folder: Path) -> tuple[float, Path]:
    """Run ``cmd`` with stdout and stderr to files; its wall time and the folder."""
    stdout, stderr = folder / "stdout", folder / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.run(list(cmd), env=env, stdout=out, stderr=err, timeout=600, check=False)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = stderr.read_bytes()[-600:].decode("utf-8", "replace")
        raise BenchError(f"{' '.join(cmd[:3])} … exited {proc.returncode}: {tail}")
    return seconds, folder


def _check_lines(path: Path, marker: bytes, expected: int) -> None:
    found = path.read_bytes().count(marker)
    if found != expected:
        raise BenchError(f"{path.name} holds {found} output lines, not {expected}")


def run(quick: bool = False) -> dict[str, Any]:
    size = (16 if quick else 64) * MIB
    min_rounds, max_rounds = (1, 2) if quick else (3, 6)
    raw: list[list[float]] = [[], [], []]
    with Sandbox("logs") as box:
        lines = size // LINE_BYTES
        repo = box.repo("github.com/bench/logs", {"build.log": log_text(size)})
        source = box.repos / repo / "build.log"
        spec = box.spec("logs", [repo], ["cat build.log"])
        common = ("--no-cache", "--log-cap", "1g")
        text_args = [RUNNER, *box.run_args(spec, *common, "--log-format", "text")]
        json_args = [RUNNER, *box.run_args(spec, *common, "--json")]
        docker_args = ["docker", "run", "--rm", "-v", f"{source}:/build.log:ro", IMAGE]
        docker_args += ["cat", "/build.log"]
        out = box.tmp / "captured"
        out.mkdir()

        def text() -> float:
            seconds, folder = _to_files(text_args, box.env, out)
            _check_lines(folder / "stderr", b"] step.output ", lines)
            return seconds

        def json_lines() -> float:
            seconds, folder = _to_files(json_args, box.env, out)
            _check_lines(folder / "stdout", b'"event": "step.output"', lines)
            return seconds

        def docker_cli() -> float:
            seconds, folder = _to_files(docker_args, None, out)
            if (folder / "stdout").stat().st_size != lines * LINE_BYTES:
                raise BenchError("docker run … cat did not print the whole file")
            return seconds

        measures: list[Callable[[], float]] = [text, json_lines, docker_cli]
        for measure in measures:  # warm-up: page cache, image, first-run set-up
            measure()

        def measure_round(index: int) -> float:
            one_round(index, measures, raw)
            return raw[0][-1]

        progress(f"logs: rounds of a step printing {size // MIB} MiB in {LINE_BYTES}-byte lines")
        load = load_average()
        steady_rounds(measure_round, min_rounds=min_rounds, max_rounds=max_rounds)
    mib = size / MIB
    text_s, json_s, docker_s = (median(values) for values in raw)
    return {
        "log_mib_s": {"text": round(mib / text_s, 1), "json": round(mib / json_s, 1)},
        "log_mib_s_docker_cli": round(mib / docker_s, 1),
        "details": {
            "printed_mib": round(mib, 1),
            "lines": lines,
            "line_bytes": LINE_BYTES,
            "text_s": [round(s, 2) for s in raw[0]],
            "json_s": [round(s, 2) for s in raw[1]],
            "docker_cli_s": [round(s, 2) for s in raw[2]],
            "load_average": load,
        },
    }
