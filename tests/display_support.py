"""`runner run` in a real pseudo-terminal, read as a user sees the screen.

``Terminal`` starts a command in a pty (pexpect) and feeds what it draws to a
terminal emulator (pyte), so tests and scripts/capture_display.py read the
screen itself: rows that were overwritten are gone, lines that scrolled off
are kept in ``history``. Also the repositories and spec those runs use.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pexpect
import pyte

from tests.helpers import RUNNER, TEST_IMAGE, make_repo, runner_env

SPEC_TAIL = """
changesetTemplate:
  title: Add a file
  body: Made by runner
  branch: runner/display
  commit:
    message: Add a file
"""


def state_env(base: Path) -> dict[str, str]:
    """An environment for `runner` with its state in base/home and temporary files in base/tmp."""
    (base / "tmp").mkdir(exist_ok=True)
    return runner_env(base / "home", TMPDIR=str(base / "tmp"))


def display_repos(root: Path, count: int, *, failing: str | None = None) -> list[str]:
    """``count`` small repositories ``github.com/acme/repo-NN``; ``failing`` holds fail.txt."""
    names = []
    for i in range(1, count + 1):
        name = f"github.com/acme/repo-{i:02d}"
        files = {"README.md": f"# repo {i}\n"}
        if name == failing:
            files["fail.txt"] = "this workspace's step fails\n"
        make_repo(root, name, files)
        names.append(name)
    return names


def display_spec(path: Path, *, sleep_s: float = 1) -> Path:
    """A spec over every repository: a step that takes a moment, failing where fail.txt is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "name: display\non:\n  - repositoriesMatchingQuery: repo:acme/repo-\nsteps:\n"
        "  - run: |\n"
        "      if [ -f fail.txt ]; then echo 'the tests asked this one to fail' >&2; exit 3; fi\n"
        f"      sleep {sleep_s:g}\n"
        "      echo done > done.txt\n"
        f"    container: {TEST_IMAGE}\n" + SPEC_TAIL
    )
    return path


class Terminal:
    """A command running in a ``columns`` x ``rows`` pseudo-terminal, and its screen."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        *,
        columns: int = 120,
        rows: int = 30,
        cwd: Path | None = None,
        program: str | None = None,
    ) -> None:
        self.screen = pyte.HistoryScreen(columns, rows, history=10_000)
        self._stream = pyte.ByteStream(self.screen)
        self.transcript = b""  # every byte drawn, for leak scans
        self.child = pexpect.spawn(
            program or RUNNER,
            args,
            env={**env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)},
            cwd=str(cwd) if cwd else None,
            dimensions=(rows, columns),
            timeout=None,
        )

    def pump(self, wait_s: float = 0.1) -> bool:
        """Draw what the command printed within ``wait_s``; False once it has exited."""
        try:
            data = self.child.read_nonblocking(1 << 16, timeout=wait_s)
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        assert isinstance(data, bytes)  # spawned without an encoding: bytes
        self.transcript += data
        self._stream.feed(data)
        return True

    def lines(self) -> list[str]:
        """The screen now, a string per row, trailing blanks cut."""
        return [line.rstrip() for line in self.screen.display]

    def all_lines(self) -> list[str]:
        """What scrolled off the top, then the screen to its last line drawn."""
        width = self.screen.columns
        scrolled = [
            "".join(row[x].data for x in range(width)).rstrip() for row in self.screen.history.top
        ]
        lines = scrolled + self.lines()
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def wait(self, timeout_s: float = 300) -> int:
        """Read until the command exits; its exit code."""
        deadline = time.monotonic() + timeout_s
        while self.pump() and time.monotonic() < deadline:
            pass
        self.child.close()
        code = self.child.exitstatus
        return code if code is not None else 128 + (self.child.signalstatus or 0)


def screen_text(lines: list[str]) -> str:
    """A screen as text, without the blank rows below the last line drawn."""
    while lines and not lines[-1]:
        lines = lines[:-1]
    return "\n".join(lines)
