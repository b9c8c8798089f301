"""How long `runner run` takes to exit after Ctrl-C, in the slow phases of a large workspace.

``interrupt_latency_s``: ``{"preparing": s, "cleaning": s}``. One generated
repository of 20,000 small files (one commit, made with ``git fast-import``);
`runner run --json --no-cache` of one `true` step on it; SIGINT as soon as
the run reports the phase (its `workspace.phase` event); the figure is the
time from the signal to the process's exit, which includes removing what was
written. Median of 3 rounds, the phases alternating which goes first. Lower
is better; there is no goal. A round fails unless runner exits 130 and leaves
no temporary folder behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import RUNNER, BenchError, Sandbox, git, load_average, median, progress

FILES = 20_000
ROUNDS = 3
PHASES = ("preparing", "cleaning")
REPOSITORY = "github.com/bench/large"


def generated_repo(root: Path, name: str, count: int) -> Path:
    """A repository at root/name whose one commit holds ``count`` small files.

    ``git fast-import`` writes them as one pack and no work tree: quick to
    make, and runner reads only the commit.
    """
    repo = root / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    stream = bytearray(
        b"commit refs/heads/main\ncommitter Bench <bench@example.com> 946684800 +0000\n"
        b"data 9\ngenerated\n"
    )
    for i in range(count):
        content = f"line {i}\n".encode()
        stream += f"M 100644 inline d{i // 200:03d}/f{i}.txt\ndata {len(content)}\n".encode()
        stream += content + b"\n"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=bytes(stream), check=True)
    return repo


def run(quick: bool = False) -> dict[str, Any]:
    files, rounds = (5_000, 1) if quick else (FILES, ROUNDS)
    seconds: dict[str, list[float]] = {phase: [] for phase in PHASES}
    with Sandbox("interrupts") as box:
        generated_repo(box.repos, REPOSITORY, files)
        spec = box.spec("interrupt", [REPOSITORY], ["true"])
        args = box.run_args(spec, "--no-cache", "--json")
        load = load_average()
        for index in range(rounds):
            order = PHASES[index % 2 :] + PHASES[: index % 2]
            for phase in order:
                progress(f"interrupts: round {index + 1}, Ctrl-C while {phase}")
                seconds[phase].append(latency(box, args, phase))
    return {
        "interrupt_latency_s": {phase: round(median(v), 3) for phase, v in seconds.items()},
        "details": {
            "files": files,
            "rounds": rounds,
            "latency_s": {phase: [round(s, 3) for s in v] for phase, v in seconds.items()},
            "load_before": load,
            "load_after": load_average(),
        },
    }


def latency(box: Sandbox, args: list[str], phase: str) -> float:
    """Seconds from SIGINT, sent when the run reports ``phase``, to runner's exit."""
    stderr = box.root / "interrupt.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [RUNNER, *args], env=box.env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                event = json.loads(line)
                if event["event"] == "workspace.phase" and event.get("phase") == phase:
                    break
            else:
                raise BenchError(f"the run ended before it reported {phase}")
            began = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            proc.stdout.read()  # what it still prints, so that it never blocks on a full pipe
            code = proc.wait(timeout=600)
            took = time.perf_counter() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code != 130:
        tail = "\n".join(stderr.read_text().strip().splitlines()[-5:])
        raise BenchError(f"runner exited {code}, not 130, after Ctrl-C while {phase}: {tail}")
    if list(box.tmp.glob("runner-ws-*")):
        raise BenchError(f"Ctrl-C while {phase} left a workspace folder behind")
    return took
