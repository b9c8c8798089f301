"""The run's output folder: changeset specs, patches and summary.json.

A new run replaces what the previous run wrote there (listed in its
summary.json) and refuses a non-empty folder it did not write, so a typo in
``--out`` cannot delete someone's files.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from runner import __version__
from runner.errors import ExecutionError

SUMMARY = "summary.json"


def changeset_base(out: Path, repository: str, path: str, branch: str) -> Path:
    safe_branch = branch.replace("/", "-")
    return out / repository / (path or "_root") / safe_branch


def prepare_out_dir(out: Path) -> dict[str, Any] | None:
    """Make ``out`` ready: refuse foreign content; the previous run's summary, if any.

    The previous run's files stay until the new run has written its own
    (``remove_stale``): a folder it writes into again is not removed and made
    anew, and a file it writes with the same bytes is not written again.
    """
    if not out.exists():
        out.mkdir(parents=True)
        return None
    if not out.is_dir():
        raise ExecutionError(f"--out {out} is a file", hint="pass a folder for the results")
    if next(out.iterdir(), None) is None:
        return None
    previous = _read_summary(out / SUMMARY)
    if previous is None:
        raise ExecutionError(
            f"--out {out} is not empty and was not written by runner",
            hint="pass an empty or new folder with --out",
        )
    return previous


def remove_stale(out: Path, files: Sequence[str], keep: Collection[str] = ()) -> None:
    """Remove ``files`` (relative to ``out``) but ``keep``, then their folders left empty.

    Only regular files inside ``out`` go, links in the path followed (a folder
    linked elsewhere is not ours).
    """
    root = out.resolve()
    parents: dict[Path, Path] = {}  # each folder resolved once, not once per file
    emptied: set[Path] = set()
    for rel in files:
        if rel in keep:
            continue
        where = Path(rel)
        if where.parent not in parents:
            parents[where.parent] = (out / where.parent).resolve()
        folder = parents[where.parent]
        target = folder / where.name
        if (folder == root or root in folder.parents) and target.is_file():
            target.unlink()
            emptied.add(folder)
    for folder in sorted(emptied, key=lambda f: len(f.parts), reverse=True):
        _prune_empty(folder, root)


def read_summary(path: Path) -> dict[str, Any] | None:
    """A summary.json runner wrote (``None``: missing, unreadable, or not runner's)."""
    return _read_summary(path)


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "runner_version" not in data:
        return None
    return data


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` while empty (both resolved)."""
    current = folder
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_file_if_changed(path: Path, data: bytes) -> None:
    """``write_file``, unless ``path`` is a regular file holding ``data`` already.

    A re-run whose results did not change rewrites none of them: reading a
    small file back costs less than writing and renaming it.
    """
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass  # missing or unreadable: written
    write_file(path, data)


def write_summary(out: Path, summary: dict[str, Any], files: Sequence[str]) -> Path:
    body = {"runner_version": __version__, **summary, "files": sorted(files)}
    path = out / SUMMARY
    write_file(path, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())
    return path
