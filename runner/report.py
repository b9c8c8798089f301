"""Progress and events: what the user sees of a run.

Every event goes through a ``Reporter``. ``JsonLinesReporter`` writes the
conventions' event stream to stdout (``--json``); ``LogReporter`` writes plain
log lines to stderr when there is no terminal; ``LiveReporter`` draws a live
display on a terminal (rich, on stderr). Events never carry a resolved value:
output lines arrive already redacted, and the JSON writer redacts once more as
a last line of defence.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from rich.markup import escape

from runner.log import get_logger


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Reporter(Protocol):
    def event(self, name: str, **fields: Any) -> None: ...
    def close(self) -> None: ...


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

    def close(self) -> None:
        self._out.flush()


class LogReporter:
    """Plain structured log lines on stderr, for runs without a terminal."""

    def __init__(self, *, show_output: bool = True) -> None:
        self._log = get_logger("runner.run")
        self._show_output = show_output

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
        self._log.info(name, **fields)

    def close(self) -> None:
        pass


class LiveReporter:
    """A rich live display on stderr: a line per running workspace and a progress bar."""

    def __init__(self, total: int, console_file: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._console = Console(file=console_file, stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self._console,
            transient=False,
        )
        self._overall = self._progress.add_task("workspaces", total=total, detail="")
        self._rows: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._live = Live(self._progress, console=self._console, refresh_per_second=8)
        self._live.start()

    def event(self, name: str, **fields: Any) -> None:
        key = f"{fields.get('repository')}:{fields.get('path') or '.'}"
        with self._lock:
            if name == "workspace.started":
                self._started[key] = time.monotonic()
                self._rows[key] = self._progress.add_task(
                    escape(key), total=None, detail="starting"
                )
            elif name in ("step.started", "step.cached", "step.skipped") and key in self._rows:
                verb = {
                    "step.started": "step",
                    "step.cached": "cached step",
                    "step.skipped": "skipped step",
                }[name]
                elapsed = time.monotonic() - self._started.get(key, time.monotonic())
                self._progress.update(
                    self._rows[key],
                    detail=f"{verb} {fields.get('step')}/{fields.get('steps')} · {elapsed:.0f}s",
                )
            elif name == "workspace.finished" and key in self._rows:
                self._progress.remove_task(self._rows.pop(key))
                self._progress.advance(self._overall)
                status = fields.get("status")
                style = {
                    "changed": "green",
                    "unchanged": "dim",
                    "failed": "red",
                    "canceled": "yellow",
                }.get(str(status), "")
                line = f"[{style}]{status:9}[/{style}] {escape(key)}"
                if fields.get("error"):
                    line += f" — {escape(str(fields['error']))}"
                self._console.print(line, markup=True, highlight=False)

    def close(self) -> None:
        self._live.stop()
