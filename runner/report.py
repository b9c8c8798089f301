"""Progress and events: what the user sees of a run.

Every event goes through a ``Reporter``. ``JsonLinesReporter`` writes the
conventions' event stream to stdout (``--json``); ``LogReporter`` writes plain
log lines to stderr when there is no terminal; ``LiveReporter`` draws a live
display on a terminal (rich, on stderr). Events never carry a resolved value:
output lines arrive already redacted, and the JSON writer redacts once more as
a last line of defence.

Step output travels in batches: ``report_output`` hands a chunk's lines to a
reporter's ``step_output`` in one call where it has one (each line is still
its own ``step.output`` event, as the conventions say), so the cost of a
step that prints many short lines follows its bytes; any other reporter gets
``event`` once per line.

``PhaseEvents`` paces one workspace's ``workspace.phase`` events (preparing,
diffing, cleaning): each change of phase at once, file counts at most every
quarter of a second, so a 38,000-file repository does not flood ``--json``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import IO, TYPE_CHECKING, Any, Protocol

from runner.log import get_logger, json_lines, log_lines

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

Clock = Callable[[], float]
STATUSES = ("changed", "unchanged", "failed", "canceled")
STATUS_STYLE = {"changed": "green", "unchanged": "dim", "failed": "red", "canceled": "yellow"}
PHASE_INTERVAL_S = 0.25
# Events that warn the user (a mask refused): logged as warnings, shown on the terminal.
WARNINGS = frozenset({"step.mask_warning"})


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def workspace_label(repository: str, path: str | None) -> str:
    """How a workspace is named on screen: ``repository``, or ``repository:path``."""
    return f"{repository}:{path}" if path else repository


def one_line(text: str, width: int) -> str:
    """The first non-empty line of ``text``, cut with an ellipsis to ``width`` characters."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= width else first[: max(0, width - 1)] + "…"


# C0 and C1 control characters (but tab) shown as `^X` or `\x9b`, so that
# what a step prints cannot move the cursor, clear the screen or retitle
# the terminal: it is data, never terminal commands.
_VISIBLE = {
    **{c: f"^{chr(c + 64)}" for c in range(32) if c != 9},
    127: "^?",
    **{c: f"\\x{c:02x}" for c in range(128, 160)},
}


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    # The search is one pass in C; translate looks each character up in a dict.
    return text.translate(_VISIBLE) if _CONTROL.search(text) else text


# The bytes `visible` leaves alone in ASCII text: printable ones and tab.
_SHOWN_ASCII = bytes(range(0x20, 0x7F)) + b"\t"
# The bytes a JSON string holds as they are (ensure_ascii=False): all but `"`,
# `\` and C0 controls. UTF-8 writes every other character in bytes >= 0x80.
_JSON_AS_IS = bytes(b for b in range(0x20, 0x100) if b not in b'"\\')


def _only(joined: str, lines: int, kept: bytes) -> bool:
    """Whether ``joined`` (``lines`` lines joined by newlines) holds only ``kept`` bytes
    besides those newlines. ``bytes.translate`` is one pass in C, ten times a regex search."""
    rest = joined.encode("utf-8", "surrogatepass").translate(None, kept)
    return len(rest) == lines - 1  # nothing left but the newlines that join them


def visible_lines(lines: Sequence[str]) -> Sequence[str]:
    """``visible`` of each line; one pass over them all when none needs it (the usual case)."""
    joined = "\n".join(lines)
    if joined.isascii():  # (a flag of the string: no pass at all)
        if _only(joined, len(lines), _SHOWN_ASCII):
            return lines
    elif joined.count("\n") == len(lines) - 1 and not _CONTROL_BUT_NEWLINE.search(joined):
        return lines
    return [visible(line) for line in lines]


class Reporter(Protocol):
    def event(self, name: str, **fields: Any) -> None: ...
    def close(self) -> None: ...


def output_events(
    fields: Mapping[str, Any], lines: Sequence[str], redact: Callable[[str], str]
) -> str:
    """JSON lines ``{**fields, "line": LINE}``, one per line, each ending in a newline.

    What ``redact(json.dumps({**fields, "line": line}, ensure_ascii=False))``
    gives line by line, built in one go. The redaction is the last line of
    defence (the lines arrive redacted): once over the batch, and only when it
    finds something, on each line alone, so no marker straddles two events.
    """
    if not lines:
        return ""
    head = json.dumps(dict(fields), ensure_ascii=False, default=str)
    head = head[:-1] + (', "line": ' if fields else '"line": ')
    joined = "\n".join(lines)
    if _only(joined, len(lines), _JSON_AS_IS):  # nothing to escape: quotes around each line
        text = head + '"' + joined.replace("\n", '"}\n' + head + '"') + '"}\n'
    else:
        text = json_lines(head, "}\n", lines, encode_basestring)
    if redact(text) != text:
        text = "".join(redact(line) + "\n" for line in text.split("\n")[:-1])
    return text


def report_output(reporter: Reporter, lines: Sequence[str], **fields: Any) -> None:
    """``step.output`` events for lines of one stream (already redacted), in one call.

    ``fields`` are the event's fields but ``line``. A reporter with a
    ``step_output(lines, **fields)`` method takes them all at once.
    """
    batch = getattr(reporter, "step_output", None)
    if batch is not None:
        batch(lines, **fields)
        return
    for line in lines:
        reporter.event("step.output", **fields, line=line)


class NullReporter:
    def event(self, name: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingReporter:
    """Keeps every event in memory (tests, and the summary)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def event(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.events.append({"event": name, **fields})

    def close(self) -> None:
        pass


class PhaseEvents:
    """One workspace's ``workspace.phase`` events, paced.

    ``enter`` reports a new phase at once; ``progress`` reports files done
    (and the total when known) at most every ``interval`` seconds after the
    last event, so a workspace that is quick to prepare sends none, plus the
    last file of a phase whose counts were being sent.
    ``files`` is the workspace's own progress listener (phase, done, total).
    """

    def __init__(
        self,
        emit: Callable[..., None],
        *,
        interval: float = PHASE_INTERVAL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._phase = ""
        self._fields: dict[str, Any] = {}
        self._last = float("-inf")
        self._counted: int | None = None  # the files count last sent in this phase

    def enter(self, phase: str, **fields: Any) -> None:
        self._phase, self._fields, self._counted = phase, fields, None
        self._last = self._clock()
        self._emit("workspace.phase", phase=phase, **fields)

    def progress(self, done: int, total: int | None = None) -> None:
        now = self._clock()
        # The last file's count is sent too once counts are being sent, so a slow
        # phase does not look stuck short of its total while it finishes.
        last = done == total and self._counted not in (None, done)
        if now - self._last < self._interval and not last:
            return
        self._last, self._counted = now, done
        counts: dict[str, int] = {"files": done}
        if total is not None:
            counts["total_files"] = total
        self._emit("workspace.phase", phase=self._phase, **self._fields, **counts)

    def files(self, phase: str, done: int, total: int | None) -> None:
        if phase != self._phase:
            self.enter(phase)
        self.progress(done, total)


class JsonLinesReporter:
    def __init__(self, out: IO[str], redact: Callable[[str], str]) -> None:
        self._out = out
        self._redact = redact
        self._lock = threading.Lock()

    def event(self, name: str, **fields: Any) -> None:
        line = json.dumps({"event": name, "time": now_rfc3339(), **fields}, ensure_ascii=False)
        line = self._redact(line)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def step_output(self, lines: Sequence[str], **fields: Any) -> None:
        """One ``step.output`` line per output line, as ``event`` writes it, built in one go."""
        head = {"event": "step.output", "time": now_rfc3339(), **fields}
        text = output_events(head, lines, self._redact)
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def close(self) -> None:
        self._out.flush()


class LogReporter:
    """Plain structured log lines on stderr, for runs without a terminal.

    A workspace's phase is logged when it changes (its file counts only with
    ``-v``); a failed workspace's line carries its reason as ``error``.
    """

    def __init__(self, *, show_output: bool = True) -> None:
        self._log = get_logger("runner.run")
        self._show_output = show_output
        self._phases: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def step_output(self, lines: Sequence[str], **fields: Any) -> None:
        if self._show_output:
            where = {k: fields.get(k) for k in ("repository", "step", "stream")}
            log_lines("runner.run", "step.output", where, "line", lines)

    def event(self, name: str, **fields: Any) -> None:
        if name == "step.output":
            if self._show_output:
                self._log.info(
                    "step.output",
                    repository=fields.get("repository"),
                    step=fields.get("step"),
                    stream=fields.get("stream"),
                    line=fields.get("line"),
                )
            return
        if name == "workspace.phase":
            where = (fields.get("repository"), fields.get("path"), fields.get("branch"))
            with self._lock:
                changed = self._phases.get(where) != fields.get("phase")
                self._phases[where] = fields.get("phase")
            (self._log.info if changed else self._log.debug)(name, **fields)
            return
        (self._log.warning if name in WARNINGS else self._log.info)(name, **fields)

    def close(self) -> None:
        pass


# The live display ---------------------------------------------------------------------------


@dataclass
class _Row:
    """What one running workspace is doing, and since when."""

    label: str
    since: float
    phase: str = "starting"
    step: int | None = None
    steps: int | None = None
    files: int | None = None
    total_files: int | None = None

    def describe(self, now: float) -> str:
        elapsed = f" · {duration(now - self.since)}"
        if self.files is not None:  # preparing or cleaning, counting files
            count = f"{self.files}/{self.total_files}" if self.total_files else str(self.files)
            return f"{self.phase} {count} files{elapsed}"
        if self.phase in ("step", "cached step", "skipped step"):
            return f"{self.phase} {self.step}/{self.steps}{elapsed}"
        return self.phase + elapsed


def duration(seconds: float) -> str:
    """``14s``, ``2m 05s``, ``1h 02m``: short enough for a row that changes every second."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class _OutputPacer:
    """Lets at most ``limit`` output lines a second onto the screen and counts the rest."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self._limit = limit
        self._clock = clock
        self._window = float("-inf")
        self._shown = 0
        self.dropped = 0

    def admit(self) -> bool:
        return self.admit_many(1) == 1

    def admit_many(self, count: int) -> int:
        """How many of ``count`` lines may be shown now; the rest are counted as dropped."""
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._shown = now, 0
        taken = max(0, min(count, self._limit - self._shown))
        self._shown += taken
        self.dropped += count - taken
        return taken

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


class LiveReporter:
    """A live display on stderr: a row per running workspace, the overall bar last.

    Finished workspaces leave the screen (the overall line keeps a count per
    status); each running row says what the workspace is doing and for how
    long (times are computed at each refresh, so they move between events).
    With ``show_output`` (``-v``) each step's output lines, already redacted,
    are printed above the live area; when they come faster than a terminal can
    be read, lines are dropped from the screen only and a line says how many.
    """

    OUTPUT_LINES_PER_S = 40
    LINE_SCREENS = 4  # an output line longer than this many screen widths is cut

    def __init__(
        self,
        total: int,
        console_file: IO[str],
        *,
        show_output: bool = False,
        clock: Clock = time.monotonic,
        auto_refresh: bool = True,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(
            file=console_file,
            stderr=True,
            width=width,
            height=height,
            # A fixed size (tests draw on an emulated screen) means a terminal is there.
            force_terminal=True if width else None,
        )
        self._total = total
        self._show_output = show_output
        self._clock = clock
        self._began = clock()
        self._rows: dict[tuple[str, str, str], _Row] = {}  # repository, path, branch
        self._counts = dict.fromkeys(STATUSES, 0)
        self._pacer = _OutputPacer(self.OUTPUT_LINES_PER_S, clock)
        self._lock = threading.Lock()
        self._live = Live(
            console=self._console,
            get_renderable=self.render,
            auto_refresh=auto_refresh,
            refresh_per_second=4,
            redirect_stdout=False,  # stdout carries results only
            transient=False,
        )
        self._live.start()
        self._restore_logs = _route_logs(self._console, console_file)

    # Events arrive from every workspace's thread. Nothing is printed while
    # self._lock is held: rich calls render() under its own locks.
    def event(self, name: str, **fields: Any) -> None:
        key = (str(fields.get("repository")), str(fields.get("path") or ""))
        row_key = (*key, str(fields.get("branch")))  # a workspace per branch, as in `on:`
        printed: list[Any] = []
        with self._lock:
            row = self._rows.get(row_key)
            now = self._clock()
            if name == "workspace.started":
                self._rows[row_key] = _Row(workspace_label(*key), since=now)
                self._name_branches(key)
            elif row is not None and name == "workspace.phase":
                self._on_phase(row, fields, now)
            elif row is not None and name in ("step.started", "step.cached", "step.skipped"):
                row.phase = {
                    "step.started": "step",
                    "step.cached": "cached step",
                    "step.skipped": "skipped step",
                }[name]
                row.step, row.steps, row.files, row.since = (
                    fields.get("step"),
                    fields.get("steps"),
                    None,
                    now,
                )
            elif name == "step.output" and self._show_output:
                printed = self._output_line(key, fields)
            elif name in WARNINGS:
                printed = [self._warning(key, fields)]
            elif name == "workspace.finished":
                self._rows.pop(row_key, None)
                status = str(fields.get("status"))
                self._counts[status] = self._counts.get(status, 0) + 1
            if name in ("step.finished", "workspace.finished") and self._show_output:
                printed += self._dropped_note()
        for line in printed:
            self._console.print(line, highlight=False, soft_wrap=False)

    def _name_branches(self, key: tuple[str, str]) -> None:
        """Rows of one repository and path on several branches say their branch."""
        same = [(k[2], row) for k, row in self._rows.items() if k[:2] == key]
        if len(same) > 1:
            for branch, row in same:
                row.label = f"{workspace_label(*key)}@{branch}"

    def step_output(self, lines: Sequence[str], **fields: Any) -> None:
        if not self._show_output:
            return
        key = (str(fields.get("repository")), str(fields.get("path") or ""))
        with self._lock:
            earlier = self._pacer.take_dropped()  # the note for them goes before these lines
            shown = self._pacer.admit_many(len(lines))
            if not shown:
                self._pacer.dropped += earlier
            printed = self._note(earlier) if shown else []
            for line in lines[:shown]:
                printed.append(self._screen_line(key, fields, line))
        for text in printed:
            self._console.print(text, highlight=False, soft_wrap=False)

    def _on_phase(self, row: _Row, fields: dict[str, Any], now: float) -> None:
        phase = str(fields.get("phase"))
        if phase != row.phase:
            row.phase, row.since, row.files, row.total_files = phase, now, None, None
        if fields.get("files") is not None:
            row.files, row.total_files = fields.get("files"), fields.get("total_files")

    def _output_line(self, key: tuple[str, str], fields: dict[str, Any]) -> list[Any]:
        if not self._pacer.admit():
            return []
        return [*self._dropped_note(), self._screen_line(key, fields, fields.get("line", ""))]

    def _screen_line(self, key: tuple[str, str], fields: dict[str, Any], text: Any) -> Any:
        from rich.text import Text

        line = visible(str(text))
        cut = self._console.width * self.LINE_SCREENS
        if len(line) > cut:
            line = line[:cut] + f"… ({len(line) - cut} more characters)"
        prefix = f"{visible(workspace_label(*key))} · step {fields.get('step')} │ "
        style = "dim red" if fields.get("stream") == "stderr" else "dim"
        return Text.assemble((prefix, style), line)

    def _warning(self, key: tuple[str, str], fields: dict[str, Any]) -> Any:
        from rich.text import Text

        where = f"{visible(workspace_label(*key))} · step {fields.get('step')}"
        return Text(f"warning: {where}: {visible(str(fields.get('message')))}", style="yellow")

    def _dropped_note(self) -> list[Any]:
        return self._note(self._pacer.take_dropped())

    def _note(self, dropped: int) -> list[Any]:
        from rich.text import Text

        if not dropped:
            return []
        return [
            Text(
                f"… {dropped:,} output line{'s' if dropped != 1 else ''} not shown here "
                "(runner run --json prints every line)",
                style="yellow",
            )
        ]

    def render(self) -> RenderableType:
        """The live area: running rows (as many as fit), then the overall line."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            now = self._clock()
            rows = [(row.label, row.describe(now)) for row in self._rows.values()]
            counts = dict(self._counts)
            began = self._began
        room = max(0, self._console.size.height - 2)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(overflow="ellipsis", no_wrap=True)
        grid.add_column(no_wrap=True)
        shown = rows if len(rows) <= room else rows[: max(0, room - 1)]
        for label, detail in shown:
            grid.add_row(Text("  " + visible(label)), Text(detail, style="cyan"))
        parts: list[RenderableType] = [grid] if shown else []
        if len(shown) < len(rows) and room:
            parts.append(Text(f"  … and {len(rows) - len(shown)} more running", style="dim"))
        parts.append(self._overall(len(rows), counts, now - began))
        return Group(*parts)

    def _overall(self, running: int, counts: dict[str, int], elapsed: float) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        done = sum(counts.values())
        parts = [Text(f"{running} running")] if running else []
        parts += [
            Text(f"{n} {status}", style=STATUS_STYLE.get(status, ""))
            for status, n in counts.items()
            if n
        ]
        tally = Text("· ") + Text(" · ").join([*parts, Text(duration(elapsed))])
        line = Table.grid(padding=(0, 1))
        line.add_column(no_wrap=True)
        line.add_column(no_wrap=True)
        line.add_column(no_wrap=True)
        line.add_column(no_wrap=True, overflow="ellipsis")
        width = max(10, min(30, self._console.width // 4))
        line.add_row(
            Text("workspaces", style="bold"),
            ProgressBar(total=max(1, self._total), completed=done, width=width),
            Text(f"{done}/{self._total}"),
            tally,
        )
        return line

    def refresh(self) -> None:
        self._live.refresh()

    def close(self) -> None:
        with self._lock:
            self._rows.clear()  # what is left at the end is the overall line
            printed = self._dropped_note()
        for line in printed:
            self._console.print(line, highlight=False)
        self._restore_logs()
        self._live.stop()


def _route_logs(console: Console, stream: IO[str]) -> Callable[[], None]:
    """While the display lives, log lines bound for its stream print above it.

    Without this a log line written straight to the terminal would tear the
    live area apart. Returns what puts the handlers back.
    """
    from rich.file_proxy import FileProxy

    proxy = FileProxy(console, stream)
    moved = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
    for handler in moved:
        handler.setStream(proxy)

    def restore() -> None:
        for handler in moved:
            handler.setStream(stream)

    return restore
