"""Per-workspace logs of a local run: ``OUT/<repository>/<path or _root>/<branch>.log``.

``WorkspaceLogs`` is a ``Reporter`` placed in front of the run's own (the
display, the log lines or ``--json``): it passes every event on unchanged and
also writes each workspace's events and its steps' output lines to that
workspace's log, one line each, so a failed workspace can be read on its own
after the run. Output lines arrive already redacted by the stream redactor;
event lines go through the redactor once more, as ``--json`` does. Events
name their workspace by repository, path and branch: two workspaces of one
repository and path (an ``on:`` entry with several branches) keep two logs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from runner.output import changeset_base
from runner.plan import Workspace
from runner.report import Reporter, now_rfc3339, report_output, visible, visible_lines

SUFFIX = ".log"
# Fields every event of a workspace carries: its log is already theirs.
_IMPLIED = ("run_id", "repository", "path", "branch", "time")
# A workspace as its events name it: repository, path, branch.
_Where = tuple[str, str, str]


def log_path(out: Path, ws: Workspace) -> Path:
    """``OUT/<repository>/<path or _root>/<branch with / as ->.log``, beside its changesets."""
    base = changeset_base(out, ws.repository, ws.path, ws.branch)
    return base.with_name(base.name + SUFFIX)


class WorkspaceLogs:
    """A ``Reporter`` that also writes each workspace's log; ``inner`` gets every event."""

    def __init__(
        self,
        inner: Reporter,
        out: Path,
        workspaces: Sequence[Workspace],
        redact: Callable[[str], str],
    ) -> None:
        self._inner = inner
        self._out = out
        self._redact = redact
        self._paths = {_key(ws): log_path(out, ws) for ws in workspaces}
        self._files: dict[_Where, IO[str]] = {}
        self._lock = threading.Lock()
        self.written: dict[_Where, str] = {}  # workspace -> its log's path below out

    def planned(self) -> list[str]:
        """Every log this run may write, relative to --out."""
        return sorted(str(path.relative_to(self._out)) for path in self._paths.values())

    def relative(self, ws: Workspace) -> str | None:
        """Where ``ws``'s log was written, relative to --out (None: it has none)."""
        return self.written.get(_key(ws))

    def event(self, name: str, **fields: Any) -> None:
        self._inner.event(name, **fields)
        where = self._where(fields)
        if where is None:
            return
        rest = {k: v for k, v in fields.items() if k not in _IMPLIED}
        text = " ".join(f"{k}={_value(v)}" for k, v in rest.items() if v is not None)
        line = self._redact(f"{now_rfc3339()} {name} {text}".rstrip())
        self._write(where, [line], close=name == "workspace.finished")

    def step_output(self, lines: Sequence[str], **fields: Any) -> None:
        report_output(self._inner, lines, **fields)
        where = self._where(fields)
        if where is None or not lines:
            return
        head = f"{now_rfc3339()} step {fields.get('step')} {fields.get('stream')} | "
        # One join makes every line (a chunk holds thousands of short ones).
        self._write(where, [head + ("\n" + head).join(visible_lines(lines))])

    def _where(self, fields: dict[str, Any]) -> _Where | None:
        where = (
            str(fields.get("repository")),
            str(fields.get("path") or ""),
            str(fields.get("branch")),
        )
        return where if where in self._paths else None

    def _write(self, where: _Where, lines: list[str], *, close: bool = False) -> None:
        with self._lock:
            handle = self._files.get(where)
            if handle is None:
                path = self._paths[where]
                path.parent.mkdir(parents=True, exist_ok=True)
                # A workspace's log starts afresh (a run's --out is its own).
                mode = "a" if where in self.written else "w"
                handle = path.open(mode, encoding="utf-8", errors="replace")
                self._files[where] = handle
                self.written[where] = str(path.relative_to(self._out))
            handle.write("\n".join(lines) + "\n")
            if close:
                handle.close()
                del self._files[where]

    def close_logs(self) -> None:
        """Close the logs still open (workspaces that never finished); not ``inner``."""
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()

    def close(self) -> None:
        self.close_logs()
        self._inner.close()


def _key(ws: Workspace) -> _Where:
    return (ws.repository, ws.path, ws.branch)


def _value(value: Any) -> str:
    if isinstance(value, str) and value and " " not in value and "\n" not in value:
        return visible(value)
    return json.dumps(value, ensure_ascii=False)
