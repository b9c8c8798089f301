"""What the live display, the log lines and the phase events show, on a fake clock.

The live display draws into a terminal emulator (pyte), so these tests read
the screen a user would see, not the escape codes.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyte
import pytest

from runner.log import configure_logging
from runner.report import LiveReporter, LogReporter, PhaseEvents, one_line, visible

WIDTH, HEIGHT = 100, 12


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScreenFile(io.StringIO):
    """A terminal: what is written is drawn on a pyte screen."""

    def __init__(self) -> None:
        self.screen = pyte.Screen(WIDTH, HEIGHT)
        self.screen.set_mode(pyte.modes.LNM)  # a new line returns the cursor, as a tty does
        self._stream = pyte.Stream(self.screen)

    def write(self, text: str) -> int:
        self._stream.feed(text)
        return len(text)

    def isatty(self) -> bool:
        return True

    def lines(self) -> list[str]:
        rows = [line.rstrip() for line in self.screen.display]
        while rows and not rows[-1]:
            rows.pop()
        return rows


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def term() -> ScreenFile:
    return ScreenFile()


MakeLive = Callable[..., LiveReporter]


@pytest.fixture
def make_live(term: ScreenFile, clock: FakeClock) -> Iterator[MakeLive]:
    """Live displays drawn on ``term``, refreshed only when a test asks; closed at the end."""
    made: list[LiveReporter] = []

    def make(total: int = 5, *, show_output: bool = False) -> LiveReporter:
        made.append(
            LiveReporter(
                total,
                term,
                show_output=show_output,
                clock=clock,
                auto_refresh=False,
                width=WIDTH,
                height=HEIGHT,
            )
        )
        return made[-1]

    yield make
    for reporter in made:
        reporter.close()


@pytest.fixture
def live(make_live: MakeLive) -> LiveReporter:
    return make_live()


def ws(n: int) -> dict[str, Any]:
    return {"run_id": "r1", "repository": f"github.com/acme/repo-{n:02d}", "path": ""}


def shown(live: LiveReporter, term: ScreenFile) -> list[str]:
    live.refresh()
    return term.lines()


def test_each_row_shows_its_phase_and_the_time_spent_in_it(
    live: LiveReporter, term: ScreenFile, clock: FakeClock
) -> None:
    live.event("workspace.started", **ws(1), steps=3)
    live.event("workspace.phase", **ws(1), phase="preparing")
    clock.now += 3
    live.event("workspace.phase", **ws(1), phase="preparing", files=1200, total_files=38000)
    assert shown(live, term)[0].split() == [
        "github.com/acme/repo-01",
        "preparing",
        "1200/38000",
        "files",
        "·",
        "3s",
    ]
    live.event("step.started", **ws(1), step=2, steps=3)
    clock.now += 14
    assert "step 2/3 · 14s" in shown(live, term)[0]
    clock.now += 60
    assert "step 2/3 · 1m 14s" in shown(live, term)[0]
    live.event("workspace.phase", **ws(1), phase="diffing", step=2)
    clock.now += 1
    assert "diffing · 1s" in shown(live, term)[0]
    live.event("workspace.phase", **ws(1), phase="cleaning")
    clock.now += 2
    assert "cleaning · 2s" in shown(live, term)[0]
    assert not any("0/?" in line for line in term.lines())
    # a path in a repository is named repository:path; the root, by the repository alone
    live.event("workspace.started", run_id="r1", repository="github.com/acme/mono", path="web")
    assert any(line.startswith("  github.com/acme/mono:web ") for line in shown(live, term))
    assert not any(":." in line for line in term.lines())


def test_finished_rows_leave_and_the_overall_line_keeps_the_counts(
    live: LiveReporter, term: ScreenFile, clock: FakeClock
) -> None:
    for n in (1, 2):
        live.event("workspace.started", **ws(n), steps=1)
    clock.now += 65
    screen = shown(live, term)
    assert len(screen) == 3
    assert screen[-1].startswith("workspaces ")
    assert "0/5 · 2 running · 1m 05s" in screen[-1]
    live.event("workspace.finished", **ws(1), status="changed")
    live.event("workspace.finished", **ws(2), status="failed", error="step 1 failed")
    screen = shown(live, term)
    assert len(screen) == 1, screen  # no finished row is left on screen
    assert "2/5 · 1 changed · 1 failed" in screen[0]
    live.close()
    assert term.lines() == screen  # what stays after the run: the overall line alone


def test_workspaces_of_one_repository_on_two_branches_keep_a_row_each(
    live: LiveReporter, term: ScreenFile
) -> None:
    main, release = ({**ws(1), "branch": b} for b in ("main", "release/1.x"))
    live.event("workspace.started", **main, steps=2)
    live.event("workspace.started", **release, steps=2)
    live.event("step.started", **release, step=2, steps=2)
    screen = shown(live, term)
    assert [line.split()[0] for line in screen[:2]] == [
        "github.com/acme/repo-01@main",
        "github.com/acme/repo-01@release/1.x",
    ]
    live.event("workspace.finished", **main, status="changed")
    screen = shown(live, term)
    assert len(screen) == 2 and "@release/1.x  step 2/2" in screen[0], screen
    assert "1/5 · 1 running · 1 changed" in screen[-1]


def test_the_overall_line_stays_last_whatever_the_number_of_workspaces(
    make_live: MakeLive, term: ScreenFile
) -> None:
    live = make_live(50)
    for n in range(1, 41):
        live.event("workspace.started", **ws(n))
    screen = shown(live, term)
    assert len(screen) < HEIGHT
    assert screen[-1].startswith("workspaces ") and "0/50 · 40 running" in screen[-1]
    assert "… and 31 more running" in screen[-2]
    assert screen[0].startswith("  github.com/acme/repo-01 ")


def test_without_verbose_no_step_output_reaches_the_screen(
    live: LiveReporter, term: ScreenFile
) -> None:
    live.event("workspace.started", **ws(1))
    live.event("step.output", **ws(1), step=1, stream="stdout", line="quiet-line")
    assert not any("quiet-line" in line for line in shown(live, term))


def test_verbose_prints_output_lines_above_the_live_area_as_data(
    make_live: MakeLive, term: ScreenFile
) -> None:
    live = make_live(1, show_output=True)
    live.event("workspace.started", **ws(1))
    live.event("step.output", **ws(1), step=1, stream="stdout", line="token [REDACTED:TOK]")
    # An escape sequence a step prints is shown, not obeyed: the screen is not cleared.
    live.event("step.output", **ws(1), step=1, stream="stderr", line="\x1b[2Jcleared?")
    screen = shown(live, term)
    assert screen[0] == "github.com/acme/repo-01 · step 1 │ token [REDACTED:TOK]"
    assert screen[1] == "github.com/acme/repo-01 · step 1 │ ^[[2Jcleared?"
    assert screen[-1].startswith("workspaces ")


def test_output_faster_than_a_terminal_is_summarised_on_screen(
    make_live: MakeLive, term: ScreenFile
) -> None:
    live = make_live(1, show_output=True)
    live.event("workspace.started", **ws(1))
    for i in range(1000):
        live.event("step.output", **ws(1), step=1, stream="stdout", line=f"line {i}")
    live.event("step.finished", **ws(1), step=1, exit_code=0)
    screen = shown(live, term)
    limit = LiveReporter.OUTPUT_LINES_PER_S
    # above the row and the overall line: the last line let through, then the count of the rest
    assert screen[-4] == f"github.com/acme/repo-01 · step 1 │ line {limit - 1}"
    assert screen[-3] == (
        f"… {1000 - limit} output lines not shown here (runner run --json prints every line)"
    )


def test_a_log_line_during_the_display_prints_above_it(
    make_live: MakeLive, term: ScreenFile
) -> None:
    configure_logging(fmt="json", stream=term)
    try:
        live = make_live(3)
        live.event("workspace.started", **ws(1))
        live.refresh()
        logging.getLogger("runner.test").warning("a warning mid-run")
        screen = shown(live, term)
    finally:
        configure_logging(fmt="json")
    assert screen[0].startswith('{"event": "a warning mid-run"')  # wrapped on two rows
    assert screen[2].startswith("  github.com/acme/repo-01 ")
    assert screen[3].startswith("workspaces ")
    assert len(screen) == 4  # the live area was redrawn below the line, not torn


def test_phase_events_report_each_change_and_file_counts_at_most_every_quarter_second(
    clock: FakeClock,
) -> None:
    sent: list[dict[str, Any]] = []
    phases = PhaseEvents(lambda name, **f: sent.append({"event": name, **f}), clock=clock)
    phases.enter("preparing")
    for done in range(38001):  # the workspace calls its listener once per file
        phases.files("preparing", done, 38000)
        if done % 1000 == 0:
            clock.now += 0.1
    phases.enter("diffing", step=1)
    phases.files("cleaning", 0, 38000)  # a new phase is reported at once,
    phases.files("cleaning", 38000, 38000)  # and a quick one sends no counts
    assert sent[0] == {"event": "workspace.phase", "phase": "preparing"}
    counts = [e["files"] for e in sent if "files" in e]
    assert 12 <= len(counts) <= 17  # 3.8 s of preparing: one every 0.25 s, not 38,000
    assert counts == sorted(counts) and counts[-1] == 38000  # the last one too
    assert all(e["total_files"] == 38000 for e in sent if "files" in e)
    assert sent[-2:] == [
        {"event": "workspace.phase", "phase": "diffing", "step": 1},
        {"event": "workspace.phase", "phase": "cleaning"},
    ]


def test_log_reporter_logs_a_phase_when_it_changes_and_a_failure_with_its_reason() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out)
    try:
        reporter = LogReporter()
        reporter.event("workspace.phase", **ws(1), phase="preparing")
        for n in range(50):
            reporter.event("workspace.phase", **ws(1), phase="preparing", files=n, total_files=50)
        reporter.event("workspace.phase", **ws(1), phase="cleaning")
        reporter.event("workspace.finished", **ws(1), status="failed", error="step 1 failed: boom")
    finally:
        configure_logging(fmt="json")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r.get("phase") for r in records if r["event"] == "workspace.phase"] == [
        "preparing",
        "cleaning",
    ]
    assert records[-1]["status"] == "failed" and records[-1]["error"] == "step 1 failed: boom"


def test_one_line_and_visible() -> None:
    assert one_line("\n  first line  \nsecond", 80) == "first line"
    assert one_line("x" * 100, 10) == "x" * 9 + "…"
    assert visible("a\tb\x07c\x9bd") == "a\tb^Gc\\x9bd"


def test_a_job_log_line_names_the_phase_and_its_file_counts() -> None:
    from runner.web.render import render_line

    event = {"event": "workspace.phase", "phase": "preparing", "files": 120, "total_files": 900}
    assert render_line(json.dumps(event)).text == (
        "workspace.phase phase=preparing files=120 total_files=900"
    )
