"""Fast logs (issue 21): step output costs its bytes, and says exactly what it said before.

Each chunk is redacted once and split in one go; its lines reach reporters in
one call. These tests pin that the batched path writes what the line-by-line
path wrote: the same lines for any chunking (values spanning chunk edges
included), the same ``--json`` events, the same log lines in both log formats,
and on a terminal the same summary of lines not shown.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from typing import Any

import pytest

import runner.log
from runner.execute.capture import MAX_LINE, OutputSink
from runner.log import configure_logging, get_logger, log_lines
from runner.queue.executor import JobLog
from runner.redact import Redactor
from runner.redact.active import ActiveRedactor
from runner.report import (
    JsonLinesReporter,
    LogReporter,
    RecordingReporter,
    report_output,
    visible,
    visible_lines,
)
from tests.test_redact_logging import restore_logging
from tests.test_report import WIDTH, MakeLive, ScreenFile, clock, make_live, shown, term, ws

__all__ = ["clock", "make_live", "restore_logging", "term"]  # fixtures, used by name

VALUE = "chunk-edge-secret-4711"
MULTI = "first-line-of-a-key\nsecond-line-of-a-key"


# -- redaction per chunk --------------------------------------------------------------------


def _reference(redactor: Redactor, data: bytes) -> list[str]:
    """The lines the old path emitted: the whole redacted, split, one line at a time."""
    whole = redactor.redact_bytes(data)
    parts = whole.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return [p.rstrip(b"\r").decode("utf-8", "replace").replace("\x00", "\ufffd") for p in parts]


def _random_output(rng: random.Random) -> bytes:
    pieces = [
        VALUE.encode(),
        MULTI.encode(),
        MULTI.replace("\n", "\r\n").encode(),
        b"\n",
        b"\r\n",
        b"\x00",
        "é€😀".encode(),
        b"\xff\xfe",
        b"plain text ",
        VALUE[:7].encode(),
    ]
    return b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))


def test_lines_are_the_same_whatever_the_chunks_and_values_across_their_edges() -> None:
    rng = random.Random(21)
    redactor = Redactor({"TOKEN": VALUE, "KEY": MULTI})
    for _ in range(400):
        data = _random_output(rng)
        lines: list[str] = []
        calls: list[int] = []

        def take(batch: list[str], lines: list[str] = lines, calls: list[int] = calls) -> None:
            lines.extend(batch)
            calls.append(len(batch))

        sink = OutputSink(redactor.stream(), take, limit=1 << 20)
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 40)
            sink.feed(data[pos : pos + step])
            pos += step
        sink.close()
        assert lines == _reference(redactor, data), data
        assert all(n > 0 for n in calls)
        assert VALUE not in "\n".join(lines)


def test_a_chunk_of_many_lines_leaves_in_one_call_and_long_lines_in_pieces() -> None:
    batches: list[list[str]] = []
    sink = OutputSink(Redactor().stream(), batches.append, limit=1 << 20)
    sink.feed(b"".join(b"line %d\n" % i for i in range(1000)))
    assert len(batches) == 1 and len(batches[0]) == 1000
    sink.feed(b"x" * (MAX_LINE + 10))
    sink.close()
    assert [len(line) for line in batches[1] + batches[2]] == [MAX_LINE, 10]


# -- reporters: the same events and log lines, written in one go --------------------------------

# Without a backslash a batch is encoded in one call; with one, line by line.
PLAIN = [
    "plain",
    '  with "quotes", tabs\tand\rcontrols\x01',
    "üñí € 😀",
    "key=value",
    "\x1b[2J",
    "",
]
LINES = [*PLAIN, "a \\ backslash and \\n, not a newline"]
# Every line quoted by the console renderer, none needing more than quotes: one call there too.
QUOTED = ["a line with blanks", 'with "double" quotes', "key = value", "é ü € 😀"]
# Nothing a JSON string or the screen would escape (DEL and non-ASCII are kept as they are).
AS_IS = ["2024-05-01T12:00:00Z INFO build: compiling", "", "del \x7f", "é ü € 😀 \u0085"]
BATCHES = pytest.mark.parametrize(
    "given",
    [PLAIN, LINES, QUOTED, AS_IS],
    ids=["one-call", "line-by-line", "all-quoted", "as-is"],
)
FIELDS = {"run_id": "r1", "repository": "github.com/acme/app", "path": "", "step": 1}


def _without_time(text: str) -> list[dict[str, Any]]:
    # JSON lines end at "\n" only (splitlines would also cut at a U+0085 inside a line).
    events = [json.loads(line) for line in text.split("\n") if line]
    for event in events:
        event.pop("time", None)
        event.pop("timestamp", None)
    return events


@BATCHES
@pytest.mark.parametrize("secret", [False, True])
def test_json_events_of_a_batch_are_the_events_of_each_line(given: list[str], secret: bool) -> None:
    redactor = Redactor({"TOKEN": VALUE})
    one_by_one, batched = io.StringIO(), io.StringIO()
    lines = [*given, f"holds {VALUE} twice {VALUE}"] if secret else given
    for line in lines:
        JsonLinesReporter(one_by_one, redactor.redact).event(
            "step.output", **FIELDS, stream="stdout", line=line
        )
    report_output(JsonLinesReporter(batched, redactor.redact), lines, **FIELDS, stream="stdout")
    assert _without_time(batched.getvalue()) == _without_time(one_by_one.getvalue())
    assert batched.getvalue().count("\n") == len(lines)
    assert VALUE not in batched.getvalue()
    # Field order and spelling too: only the time differs.
    strip = re.compile(r'"time": "[^"]*", ')
    assert strip.sub("", batched.getvalue()) == strip.sub("", one_by_one.getvalue())


def test_a_reporter_without_batches_gets_one_event_per_line() -> None:
    rec = RecordingReporter()
    report_output(rec, ["a", "b"], **FIELDS, stream="stderr")
    assert rec.events == [
        {"event": "step.output", **FIELDS, "stream": "stderr", "line": "a"},
        {"event": "step.output", **FIELDS, "stream": "stderr", "line": "b"},
    ]


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "text"])
@BATCHES
def test_log_lines_write_what_the_logging_chain_writes_line_by_line(
    fmt: str, given: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    active = ActiveRedactor()
    buf = io.StringIO()
    configure_logging(fmt=fmt, stream=buf, redactor=active)  # type: ignore[arg-type]
    # pytest's own log file handler would see every line too: no batches with it there.
    root = logging.getLogger()
    for handler in root.handlers[:-1]:
        root.removeHandler(handler)
    active.register("TOKEN", VALUE)
    exact: list[int] = []
    chain = runner.log._one_by_one

    def counted(*args: Any) -> None:
        exact.append(1)
        chain(*args)

    monkeypatch.setattr(runner.log, "_one_by_one", counted)
    where = {"repository": "github.com/acme/app", "step": 1, "stream": "stdout"}
    # The second batch holds a value: it goes through the exact chain, line by line.
    for lines, exact_calls in ((given, 0), ([*given, f"holds {VALUE}"], 1)):
        buf.seek(0)
        buf.truncate()
        for line in lines:
            get_logger("runner.run").info("step.output", **where, line=line)
        one_by_one = _TIMESTAMP.sub("T", buf.getvalue())
        buf.seek(0)
        buf.truncate()
        exact.clear()
        log_lines("runner.run", "step.output", where, "line", lines)
        assert len(exact) == exact_calls
        assert _TIMESTAMP.sub("T", buf.getvalue()) == one_by_one
        assert one_by_one.count("\n") == len(lines)
        assert VALUE not in one_by_one


@pytest.mark.usefixtures("restore_logging")
def test_a_log_reporter_batches_output_only_when_output_is_shown() -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    LogReporter(show_output=False).step_output(["quiet"], **FIELDS, stream="stdout")
    assert buf.getvalue() == ""
    LogReporter().step_output(["loud", "louder"], **FIELDS, stream="stdout")
    logged = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(e["event"], e["line"], e["step"]) for e in logged] == [
        ("step.output", "loud", 1),
        ("step.output", "louder", 1),
    ]


def test_a_batch_faster_than_a_terminal_is_summarised_on_screen_only(
    make_live: MakeLive, term: ScreenFile
) -> None:
    live = make_live(1, show_output=True)  # its clock stands still: one second's window
    live.event("workspace.started", **ws(1))
    report_output(live, [f"line {i}" for i in range(12_345)], **ws(1), step=1, stream="stdout")
    live.event("step.finished", **ws(1), step=1, exit_code=0)
    screen = shown(live, term)
    limit = live.OUTPUT_LINES_PER_S
    assert screen[-4] == f"github.com/acme/repo-01 · step 1 │ line {limit - 1}"
    assert screen[-3] == (
        f"… {12_345 - limit:,} output lines not shown here (runner run --json prints every line)"
    )
    assert len(screen[-4]) < WIDTH


@BATCHES
def test_visible_lines_are_each_line_made_visible(given: list[str]) -> None:
    # ASCII text is checked apart; each of these controls alone in it must be seen.
    ascii_only = [["tab\tonly"], *(["tab\tonly", c] for c in ("bell\x07", "esc\x1b[2J", "\x7f"))]
    for lines in (given, [*given, "bell\x07", "csi\x9b"], *ascii_only):
        assert list(visible_lines(lines)) == [visible(line) for line in lines]


def test_the_job_log_queues_a_batch_as_the_events_of_each_line() -> None:
    redactor = Redactor({"TOKEN": VALUE})
    claim = type("Claim", (), {"job_id": "j1", "lease": "l1"})()
    batched, one_by_one = (
        JobLog(None, claim, redactor, interval_s=60, on_lost=lambda: None)  # type: ignore[arg-type]
        for _ in range(2)
    )
    lines = [*LINES, f"holds {VALUE}"]
    batched.step_output(lines, **FIELDS, stream="stderr")
    for line in lines:
        one_by_one.event("step.output", **FIELDS, stream="stderr", line=line)
    assert _without_time("\n".join(batched._lines)) == _without_time("\n".join(one_by_one._lines))
    assert VALUE not in "".join(batched._lines)
