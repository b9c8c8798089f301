#!/usr/bin/env python3
"""Capture what `runner run -j 2` over 50 workspaces looks like in a terminal.

    .venv/bin/python scripts/capture_display.py OUT_DIR [--runner PATH] [--workspaces N]

Makes N small repositories (default 50; one of them fails on purpose), runs
`runner run -j 2` in a 120x30 pseudo-terminal with a fresh RUNNER_HOME, and
writes text captures of the screen to OUT_DIR: early, middle and late in the
run, and the end (with what scrolled off). ``--runner`` runs another build of
runner (say, a previous commit's .venv/bin/runner) for a before/after
comparison; captures at 5, 30 and 60 seconds are taken too, so builds whose
count does not move compare at the same moments. Needs Docker and the test
image (scripts/ensure-images.sh).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DONE = re.compile(r"(\d+)/(\d+)")
TIMES_S = (5, 30, 60)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.display_support import (
        Terminal,
        display_repos,
        display_spec,
        screen_text,
        state_env,
    )
    from tests.helpers import RUNNER

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--runner", help="the runner executable (default: this checkout's)")
    parser.add_argument("--workspaces", type=int, default=50)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    total = args.workspaces
    marks = {"1-early": total // 10, "2-middle": total // 2, "3-late": total * 9 // 10}

    with tempfile.TemporaryDirectory(prefix="runner-capture-") as tmp:
        base = Path(tmp)
        display_repos(base / "repos", total, failing="github.com/acme/repo-07")
        display_spec(base / "spec" / "batch.yaml", sleep_s=1)
        env = state_env(base)
        env.update({k: v for k, v in os.environ.items() if k.startswith("DOCKER_")})
        # A first command creates the state folder, so its notice is not in the captures.
        subprocess.run(
            [args.runner or RUNNER, "secret", "list"], env=env, capture_output=True, check=False
        )
        term = Terminal(
            [
                "run",
                "spec/batch.yaml",
                "--repos-root",
                "repos",
                "--out",
                "out",
                "-j",
                "2",
                "--no-cache",
            ],
            env,
            cwd=base,
            program=args.runner,
        )
        began = time.monotonic()
        taken: set[str] = set()
        while term.pump(0.1):
            done = _done(term.lines(), total)
            elapsed = time.monotonic() - began
            for name, at in marks.items():
                if name not in taken and done is not None and done >= at:
                    _write(args.out / f"{name}.txt", screen_text(term.lines()))
                    taken.add(name)
            # The same moments by the clock, for a build whose count does not move.
            for at_s in TIMES_S:
                name = f"at-{at_s:02d}s"
                if name not in taken and elapsed >= at_s:
                    _write(args.out / f"{name}.txt", screen_text(term.lines()))
                    taken.add(name)
        code = term.wait()
        _write(args.out / "4-end.txt", screen_text(term.all_lines()) + f"\n[exit code {code}]")
    for path in sorted(args.out.glob("*.txt")):
        print(path)
    return 0


def _done(lines: list[str], total: int) -> int | None:
    """The done count of the overall line (any line showing N/total), if drawn."""
    for line in reversed(lines):
        for match in DONE.finditer(line):
            if int(match[2]) == total:
                return int(match[1])
    return None


def _write(path: Path, text: str) -> None:
    path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
