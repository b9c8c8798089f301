"""Where a workspace comes from: its commit's tree and the objects folder holding it.

The cache keys of a workspace start from its commit's tree, so this is all a
fully cached workspace asks of its repository; it lives apart from
``runner.execute.workspace`` (the tree on disk), which such a run never loads.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from runner.git import git
from runner.git_objects import commit_tree
from runner.git_refs import git_dir
from runner.plan import Workspace
from runner.records import Frozen


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class Source(Frozen):
    """Where a workspace comes from: the commit's tree and the objects folder holding it."""

    tree: str
    objects: Path

    def __init__(self, tree: str, objects: Path) -> None:
        self._fill(tree, objects)


def resolve_source(workspace: Workspace, cancel: threading.Event | None = None) -> Source:
    """The commit's tree (what cache keys start from) and its repository's objects, one git.

    Read from the object store when it can be (``runner.git_objects``): a
    fully cached workspace then starts no process at all.
    """
    found = git_dir(workspace.repo_path)
    if found is not None and (read := commit_tree(found / "objects", workspace.commit)):
        return Source(read, found.absolute() / "objects")
    out = git(
        ["rev-parse", "--path-format=absolute", "--git-common-dir", f"{workspace.commit}^{{tree}}"],
        cwd=workspace.repo_path,
        cancel=cancel,
    )
    common, _, tree = out.rstrip(b"\n").rpartition(b"\n")
    return Source(tree.decode(), Path(os.fsdecode(common)) / "objects")
