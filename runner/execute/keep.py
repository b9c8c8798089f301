"""`runner run --keep-workspace`: a failed workspace's tree, kept for a look — if it is clean.

A step that failed may have written a secret anywhere in its tree (a config
file, a cache folder, a file `.gitignore` hides from the diff). Before a
tree is copied under ``--out``, every file of it is read whole — ignored
files included, symbolic links as their targets' text, every file's own
path too — and matched against every registered form of every value (the
redactor's matcher knows them all). One hit and nothing of the tree is
kept: the run says ``not kept: holds secret NAME`` instead, so nothing
leaks to disk. runner's own git data sits beside the tree (see
``runner.execute.workspace``) and is never copied.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.execute.steps import _leaked_names
from runner.execute.workspace import remove_tree
from runner.output import changeset_base
from runner.plan import Workspace
from runner.redact.protocol import Redacts

# Where the engine mounted runner's git data for the steps (LocalWorkspace.git_mounts).
RUNNER_GIT = ".git"

SUFFIX = ".workspace"


@dataclass(frozen=True)
class Kept:
    """What became of one failed workspace's tree."""

    path: str | None  # relative to --out, when kept
    refused: str | None = None  # "not kept: holds secret NAME"

    def message(self, out: Path, label: str) -> str:
        """What the run prints at its end: where the tree is, or why it is not there."""
        if self.refused:
            return f"{label}: {self.refused}"
        return f"kept workspace: {out / (self.path or '')}"


def kept_path(out: Path, ws: Workspace) -> Path:
    """``OUT/<repository>/<path or _root>/<branch with / as ->.workspace``."""
    base = changeset_base(out, ws.repository, ws.path, ws.branch)
    return base.with_name(base.name + SUFFIX)


class WorkspaceKeeper:
    """The ``keep_tree`` of a run: scans, then copies or refuses; remembers each outcome."""

    def __init__(self, out: Path, redactor: Redacts) -> None:
        self._out = out
        self._redactor = redactor
        self._lock = threading.Lock()
        self.kept: dict[str, Kept] = {}  # workspace key -> outcome

    def __call__(self, ws: Workspace, tree: Path) -> None:
        names = self.secrets_in(tree)
        if names:
            outcome = Kept(None, f"not kept: holds secret {', '.join(names)}")
        else:
            dest = kept_path(self._out, ws)
            if dest.exists():
                remove_tree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(tree, dest, symlinks=True, ignore=_without_runner_git(tree))
            outcome = Kept(str(dest.relative_to(self._out)))
        with self._lock:
            self.kept[ws.key] = outcome

    def secrets_in(self, tree: Path) -> list[str]:
        """The names of the values any file of ``tree`` (or its path, or a link) holds."""
        found: set[str] = set()
        for relative, data in _contents(tree):
            found.update(_leaked_names(self._redactor, relative))
            found.update(_leaked_names(self._redactor, data))
        return sorted(found)


def _without_runner_git(tree: Path) -> Callable[[str, list[str]], set[str]]:
    """``copytree``'s ``ignore``: the top-level ``.git``, where steps saw runner's git data."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {RUNNER_GIT} & set(names) if Path(folder) == tree else set()

    return ignore


def _contents(tree: Path) -> Iterator[tuple[bytes, bytes]]:
    """Each entry's path (relative, as bytes) and content: a link's target, a file's bytes."""
    for folder, dirs, files in os.walk(tree):
        if Path(folder) == tree and RUNNER_GIT in dirs:
            dirs.remove(RUNNER_GIT)  # where runner's own git data was mounted: not the step's
        for name in [*dirs, *files]:
            full = Path(folder) / name
            relative = os.fsencode(full.relative_to(tree))
            if full.is_symlink():
                yield relative, os.fsencode(os.readlink(full))
            elif full.is_file():
                yield relative, full.read_bytes()
            else:
                yield relative, b""
