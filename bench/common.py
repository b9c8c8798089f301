"""What the benchmarks share: a sandbox, git repositories, specs, timed subprocesses.

``runner`` is always driven through its real CLI, as a subprocess with its
own ``RUNNER_HOME`` in a temporary folder. Nothing here reads the process
environment except to build the environment of those subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

RUNNER = str(Path(sys.executable).with_name("runner"))
IMAGE = "runner-test/busybox:latest"
RUN_LABEL = "org.runner.run-id"
USER = "bench"

_GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}

_TEMPLATE_TAIL = """changesetTemplate:
  title: Benchmark
  body: Made by runner's benchmarks
  branch: bench/run
  commit:
    message: Benchmark
"""


class BenchError(RuntimeError):
    """A benchmark could not measure what it set out to (a command failed)."""


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=_GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path, name: str, files: Mapping[str, str]) -> Path:
    """A git repository at root/name with one commit holding ``files``."""
    repo = root / name
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    for rel, content in files.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def step_yaml(run: str, *, image: str = IMAGE) -> str:
    return f"  - run: {json.dumps(run)}\n    container: {image}\n"


def spec_text(name: str, repositories: Sequence[str], steps: Sequence[str]) -> str:
    on = "".join(f"  - repository: {repo}\n" for repo in repositories)
    body = "steps:\n" + "".join(step_yaml(run) for run in steps) if steps else "steps: []\n"
    return f"name: {name}\non:\n{on}{body}{_TEMPLATE_TAIL}"


@dataclass(frozen=True)
class Timed:
    seconds: float
    proc: subprocess.CompletedProcess[str]


class Sandbox:
    """A temporary folder holding a RUNNER_HOME, repositories, specs and outputs."""

    def __init__(self, label: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"runner-bench-{label}-"))
        self.home = self.root / "home"
        self.repos = self.root / "repos"
        self.specs = self.root / "specs"
        self.tmp = self.root / "tmp"
        for folder in (self.home, self.repos, self.specs, self.tmp):
            folder.mkdir()
        self.env = runner_env(self.home, TMPDIR=str(self.tmp))

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        # Sweep what an interrupted run may have left (its containers), then the folder.
        subprocess.run(
            [RUNNER, "cleanup"], env=self.env, capture_output=True, timeout=120, check=False
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def repo(self, name: str, files: Mapping[str, str] | None = None) -> str:
        make_repo(self.repos, name, files or {"README.md": f"# {name}\n"})
        return name

    def spec(self, name: str, repositories: Sequence[str], steps: Sequence[str]) -> Path:
        path = self.specs / f"{name}.batch.yaml"
        path.write_text(spec_text(name, repositories, steps))
        return path

    def run_args(self, spec: Path, *extra: str) -> list[str]:
        out = self.root / "out" / spec.stem
        return ["run", str(spec), "--repos-root", str(self.repos), "--out", str(out), *extra]

    def runner(self, args: Sequence[str], *, timeout: float = 600) -> Timed:
        return timed([RUNNER, *args], self.env, timeout=timeout)


def runner_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment for a `runner` subprocess with its own state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    # An installed runner has its bytecode compiled; without it (PYTHONDONTWRITEBYTECODE
    # set in a checkout) every edited module is compiled again at each start, which the
    # rounds would measure. The warm-up runs write it, as an install would have.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({"RUNNER_HOME": str(home), "RUNNER_USER": USER, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def timed(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 600,
    ok: Callable[[int], bool] = lambda code: code == 0,
) -> Timed:
    """Run ``cmd`` to completion, capturing its output; its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(cmd),
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - start
    if not ok(proc.returncode):
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise BenchError(f"{' '.join(cmd[:3])} … exited {proc.returncode}: {tail}")
    return Timed(seconds, proc)


def events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON-lines events of a `runner run --json`."""
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def docker_run_true(count: int, *, image: str = IMAGE) -> list[float]:
    """Seconds of each of ``count`` sequential ``docker run --rm IMAGE true``."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", image, "true"], check=True, capture_output=True, timeout=120
        )
        times.append(time.perf_counter() - start)
    return times


def event_time(event: Mapping[str, Any]) -> float:
    """An event's RFC 3339 time as a POSIX timestamp."""
    return datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00")).timestamp()


def container_events(run_id: str, since: float, until: float, event: str = "start") -> list[str]:
    """The IDs of one run's containers (by its label) the engine reported ``event`` for."""
    proc = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{until:.3f}",
            "--filter",
            "type=container",
            "--filter",
            f"event={event}",
            "--filter",
            f"label={RUN_LABEL}={run_id}",
            "--format",
            "{{.ID}}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [line for line in proc.stdout.splitlines() if line.strip()]


def container_starts(run_id: str, since: float, until: float) -> int:
    """How many containers the engine started for one run (by its label)."""
    return len(container_events(run_id, since, until))


def require_image(image: str = IMAGE) -> None:
    proc = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BenchError(
            f"the image {image} is not present — run scripts/ensure-images.sh (make bench does)"
        )


def one_round(
    index: int, measures: Sequence[Callable[[], float]], results: list[list[float]]
) -> None:
    """Round ``index``: every measure once, the first one rotating from round to round."""
    order = list(range(len(measures)))
    order = order[index % len(order) :] + order[: index % len(order)]
    for i in order:
        results[i].append(measures[i]())


def relative_spread(values: Sequence[float]) -> float:
    """The range of the middle values (a quarter dropped at each end) over the median."""
    ordered = sorted(values)
    if len(ordered) < 2:
        return 0.0
    cut = len(ordered) // 4
    middle = ordered[cut : len(ordered) - cut]
    mid = median(ordered)
    return (middle[-1] - middle[0]) / abs(mid) if mid else float("inf")


def steady_rounds(
    measure_round: Callable[[int], float],
    *,
    min_rounds: int,
    max_rounds: int,
    spread: float = 0.15,
) -> list[float]:
    """Per-round figures: ``min_rounds``, then more while they disagree, up to ``max_rounds``.

    A burst of load from elsewhere on a shared machine disturbs a round or two;
    re-running until the middle half of the rounds agrees keeps the median honest.
    """
    figures: list[float] = []
    while len(figures) < max_rounds:
        figures.append(measure_round(len(figures)))
        if len(figures) >= min_rounds and relative_spread(figures) <= spread:
            break
    return figures


def load_average() -> float:
    """The 1-minute load average (how busy the shared machine was)."""
    return round(os.getloadavg()[0], 2)


def progress(message: str) -> None:
    """Progress goes to stderr; stdout carries only the results table."""
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()
