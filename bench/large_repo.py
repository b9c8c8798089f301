"""A workspace's cost on a large repository, and over many small ones, beside the floor.

The large repository is built here from a copy of Python's standard library
(thousands of files; ``site-packages``, ``dist-packages`` and ``__pycache__``
left out): every machine has one. The floor is what any runner must pay for
the same work, measured in the same round: ``git archive | tar -x`` of the
tree, the same ``docker run`` on a network created and removed for it (as
runner's default makes one per job), ``git diff`` of the result against the
commit (a scratch index read from its tree: nothing tells git what changed),
and the folder removed.

- ``large_repo_noop_vs_floor``, ``large_repo_sed_vs_floor``: a one-step
  ``runner run --no-cache`` (a no-op; a ``sed`` over every ``.py`` file) over
  the floor doing the same.
- ``large_repo_rss_growth_mib``: runner's peak RSS (its own and its gits',
  from ``getrusage(RUSAGE_CHILDREN)`` of a wrapper) on that repository minus
  on a repository of a few files.
- ``large_repo_cached_rerun_vs_validate``: the ``sed`` run re-run fully
  cached, over ``runner validate`` of the same spec.
- ``many_workspaces_vs_floor``: 50 one-step workspaces at ``-j 2`` over the
  floor doing the same 50, two at a time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import (
    IMAGE,
    RUNNER,
    BenchError,
    Sandbox,
    events,
    git,
    load_average,
    median,
    one_round,
    progress,
    steady_rounds,
)

SED = "find . -name '*.py' -exec sed -i 's/Copyright/COPYRIGHT/' {} +"
NOOP = "true"
MANY_STEP = "echo done > result.txt"
_SKIP = {"site-packages", "dist-packages", "__pycache__"}
_DOCKER_RUN = ("docker", "run", "--rm", "-w", "/work")


def stdlib_folder() -> Path:
    """The standard library with the most files among this Python's and the system's."""
    candidates = [Path(sysconfig.get_paths()["stdlib"]), Path("/usr/lib/python3.11")]
    existing = [c for c in candidates if c.is_dir()]
    if not existing:
        raise BenchError("no standard library folder found to build the large repository")
    return max(existing, key=lambda c: sum(1 for _ in _files(c)))


def _files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP]
        found += [Path(folder, n) for n in names if not os.path.islink(os.path.join(folder, n))]
    return found


def build_large_repo(box: Sandbox, name: str) -> tuple[Path, int]:
    """A git repository of the standard library's files, one commit; its path and file count."""
    source = stdlib_folder()
    repo = box.repos / name
    files = _files(source)
    for path in files:
        target = repo / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A", "-f")
    git(repo, "commit", "-q", "-m", "the standard library")
    return repo, len(files)


def floor(repo: Path, script: str, scratch: Path) -> float:
    """Seconds for the floor: archive and unpack, one container on a new network, diff, remove."""
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(dir=scratch))
    archive = subprocess.Popen(["git", "archive", "HEAD"], cwd=repo, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(work)], stdin=archive.stdout, check=True)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0:
        raise BenchError(f"git archive failed in {repo}")
    network = f"bench-floor-{uuid.uuid4().hex[:12]}"
    docker = ["docker", "network", "create", network]
    subprocess.run(docker, check=True, capture_output=True, timeout=120)
    try:
        subprocess.run(
            [*_DOCKER_RUN, "--network", network, "-v", f"{work}:/work", IMAGE, "sh", "-c", script],
            check=True,
            capture_output=True,
            timeout=600,
        )
    finally:
        subprocess.run(["docker", "network", "rm", network], capture_output=True, timeout=120)
    index = work.with_name(work.name + ".index")
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "read-tree", "HEAD"], cwd=repo, env=env, check=True)
    subprocess.run(
        ["git", "--work-tree", str(work), "diff", "--binary"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )
    index.unlink()
    shutil.rmtree(work)
    return time.perf_counter() - start


_PEAK = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], capture_output=True).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_rss_mib(box: Sandbox, args: list[str]) -> float:
    """runner's peak RSS (it and the gits it waited for), in MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, RUNNER, *args],
        env=box.env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    code, kib = proc.stdout.split()
    if code != "0":
        raise BenchError(f"runner {' '.join(args[:2])} exited {code} while measuring its memory")
    return int(kib) / 1024


def run(quick: bool = False) -> dict[str, Any]:
    min_rounds, max_rounds = (2, 2) if quick else (3, 6)
    many = 10 if quick else 50
    with Sandbox("large") as box:
        progress("large_repo: building the repository from the standard library")
        repo, count = build_large_repo(box, "github.com/bench/stdlib")
        box.repo("github.com/bench/small")
        specs = {
            "noop": box.spec("noop", ["github.com/bench/stdlib"], [NOOP]),
            "sed": box.spec("sed", ["github.com/bench/stdlib"], [SED]),
            "small": box.spec("small", ["github.com/bench/small"], [NOOP]),
        }
        uncached = {k: box.run_args(v, "--no-cache") for k, v in specs.items()}
        box.runner(["validate", str(specs["sed"])])  # warm-up: imports and page cache
        box.runner(uncached["noop"])

        raw: list[list[float]] = [[], [], [], []]

        def large_round(index: int) -> float:
            one_round(
                index,
                (
                    lambda: box.runner(uncached["noop"]).seconds,
                    lambda: floor(repo, NOOP, box.tmp),
                    lambda: box.runner(uncached["sed"]).seconds,
                    lambda: floor(repo, SED, box.tmp),
                ),
                raw,
            )
            return raw[2][-1] / raw[3][-1]

        progress(f"large_repo: rounds of runner and the floor over {count} files")
        load = load_average()
        steady_rounds(large_round, min_rounds=min_rounds, max_rounds=max_rounds)
        noop = [r / f for r, f in zip(raw[0], raw[1], strict=True)]
        sed = [r / f for r, f in zip(raw[2], raw[3], strict=True)]

        progress("large_repo: peak memory, large and small repository")
        rss_large = median(peak_rss_mib(box, uncached["noop"]) for _ in range(2))
        rss_small = median(peak_rss_mib(box, uncached["small"]) for _ in range(2))

        progress("large_repo: a fully cached re-run against `runner validate`")
        cached_args = box.run_args(specs["sed"], "--json")
        box.runner(cached_args)  # fills the cache
        cached_raw: list[list[float]] = [[], []]
        started: list[int] = []

        def rerun() -> float:
            result = box.runner(cached_args)
            started.append(sum(1 for e in events(result.proc) if e["event"] == "step.started"))
            return result.seconds

        def cached_round(index: int) -> float:
            validate = lambda: box.runner(["validate", str(specs["sed"])]).seconds  # noqa: E731
            one_round(index, (rerun, validate), cached_raw)
            return cached_raw[0][-1] / cached_raw[1][-1]

        cached = steady_rounds(cached_round, min_rounds=min_rounds, max_rounds=max_rounds)

        progress(f"large_repo: {many} one-step workspaces at -j 2 against the floor")
        names = [box.repo(f"github.com/bench/many-{i}") for i in range(many)]
        many_spec = box.spec("many", names, [MANY_STEP])
        many_args = box.run_args(many_spec, "--no-cache", "-j", "2")
        many_raw: list[list[float]] = [[], []]

        def floor_many() -> float:
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda n: floor(box.repos / n, MANY_STEP, box.tmp), names))
            return time.perf_counter() - start

        def many_round(index: int) -> float:
            one_round(index, (lambda: box.runner(many_args).seconds, floor_many), many_raw)
            return many_raw[0][-1] / many_raw[1][-1]

        many_ratios = steady_rounds(
            many_round, min_rounds=min_rounds, max_rounds=max(min_rounds, max_rounds - 2)
        )
    return {
        "large_repo_noop_vs_floor": round(median(noop), 3),
        "large_repo_sed_vs_floor": round(median(sed), 3),
        "large_repo_rss_growth_mib": round(rss_large - rss_small, 1),
        "large_repo_cached_rerun_vs_validate": round(median(cached), 3),
        "many_workspaces_vs_floor": round(median(many_ratios), 3),
        "details": {
            "files": count,
            "rounds": len(noop),
            "noop_runner_s": [round(t, 3) for t in raw[0]],
            "noop_floor_s": [round(t, 3) for t in raw[1]],
            "sed_runner_s": [round(t, 3) for t in raw[2]],
            "sed_floor_s": [round(t, 3) for t in raw[3]],
            "rss_large_mib": round(rss_large, 1),
            "rss_small_mib": round(rss_small, 1),
            "cached_rerun_s": [round(t, 3) for t in cached_raw[0]],
            "validate_s": [round(t, 3) for t in cached_raw[1]],
            "cached_rerun_steps_started": started,
            "many_workspaces": many,
            "many_runner_s": [round(t, 3) for t in many_raw[0]],
            "many_floor_s": [round(t, 3) for t in many_raw[1]],
            "load_before": load,
            "load_after": load_average(),
        },
    }
