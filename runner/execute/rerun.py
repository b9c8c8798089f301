"""`runner run --only-failed`: run again only what failed last time, in the same --out.

The previous run's ``summary.json`` says which workspaces failed or were
canceled. Only those of the current plan run; the files of their previous
attempt (changesets, patches, log, kept tree) are removed first, and the
new summary is the previous one with their entries replaced: the other
workspaces' entries and files stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import UsageError
from runner.output import SUMMARY, read_summary
from runner.plan import Workspace
from runner.records import Frozen

RERUN_STATUSES = ("failed", "canceled")

WorkspaceId = tuple[str, str, str]  # repository, path, branch


def workspace_id(ws: Workspace) -> WorkspaceId:
    return (ws.repository, ws.path, ws.branch)


def _entry_id(entry: Mapping[str, Any]) -> WorkspaceId:
    return (str(entry.get("repository")), str(entry.get("path") or ""), str(entry.get("branch")))


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class Rerun(Frozen):
    """The previous summary and which of its workspaces run again."""

    previous: Mapping[str, Any]
    selected: frozenset[WorkspaceId]

    def __init__(self, previous: Mapping[str, Any], selected: frozenset[WorkspaceId]) -> None:
        self._fill(previous, selected)

    def prepare(self, out: Path, *, files: bool = True) -> None:
        """Remove what the selected workspaces' previous attempt left under ``out``.

        ``files=False``: only their kept trees (a whole run removes the files it
        does not write again once it has written its own: ``output.remove_stale``).
        """
        root = out.resolve()
        for entry in self._entries():
            if _entry_id(entry) not in self.selected:
                continue
            for rel in _entry_files(entry) if files else _entry_trees(entry):
                target = (out / rel).resolve()
                if root not in target.parents:
                    continue  # a summary naming something outside --out is not obeyed
                if target.is_dir() and not target.is_symlink():
                    from runner.execute.workspace import remove_tree  # a kept tree only

                    remove_tree(target)
                elif files:
                    target.unlink(missing_ok=True)

    def merge(
        self, entries: Sequence[dict[str, Any]], files: Iterable[str]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The previous entries with the re-run ones replaced; the files of both, deduplicated."""
        fresh = {_entry_id(e): e for e in entries}
        merged = [fresh.pop(_entry_id(e), e) for e in self._entries()]
        merged.extend(fresh.values())
        dropped = {
            rel for e in self._entries() if _entry_id(e) in self.selected for rel in _entry_files(e)
        }
        kept = [str(f) for f in self.previous.get("files", []) if f not in dropped]
        return merged, sorted({*kept, *files})

    def _entries(self) -> list[dict[str, Any]]:
        return [e for e in self.previous.get("workspaces", []) if isinstance(e, dict)]


def _entry_files(entry: Mapping[str, Any]) -> list[str]:
    names = [*entry.get("changesets", []), *entry.get("patches", [])]
    names += [entry[k] for k in ("log", "workspace") if entry.get(k)]
    return [str(n) for n in names]


def _entry_trees(entry: Mapping[str, Any]) -> list[str]:
    return [str(entry["workspace"])] if entry.get("workspace") else []


def plan_rerun(out: Path, workspaces: Sequence[Workspace]) -> tuple[Rerun, list[Workspace]]:
    """The workspaces to run again (failed or canceled in ``out``'s summary), in plan order."""
    previous = read_summary(out / SUMMARY)
    if previous is None:
        raise UsageError(
            f"--only-failed: {out} holds no summary.json of a previous run",
            hint="run without --only-failed first, or pass that run's --out",
        )
    failed = {
        _entry_id(e)
        for e in previous.get("workspaces", [])
        if isinstance(e, dict) and e.get("status") in RERUN_STATUSES
    }
    chosen = [ws for ws in workspaces if workspace_id(ws) in failed]
    return Rerun(previous, frozenset(workspace_id(ws) for ws in chosen)), chosen
