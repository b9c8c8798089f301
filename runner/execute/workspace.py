"""A workspace on disk: the repository's tree at its commit, plus a git index.

The tree is exported with ``git archive`` into a fresh temporary folder and
given a baseline commit of its own, so runner never touches the user's
repository. After each step ``snapshot()`` stages everything and writes a
tree object: comparing trees gives the changed-file lists and the diff
without making commits.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from runner.changeset import FileChanges
from runner.git import git, git_text
from runner.plan import Workspace

TEMP_PREFIX = "runner-ws-"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@dataclass
class LocalWorkspace:
    """A prepared copy of one workspace's repository tree."""

    workspace: Workspace
    root: Path  # the temporary folder holding everything of this workspace
    tree_dir: Path = field(init=False)
    baseline: str = field(init=False, default=EMPTY_TREE)

    def __post_init__(self) -> None:
        self.tree_dir = self.root / "repo"

    @property
    def workdir_in_container(self) -> str:
        return "/work" + (f"/{self.workspace.path}" if self.workspace.path else "")

    @classmethod
    def create(
        cls, workspace: Workspace, *, run_id: str, temp_root: Path | None = None
    ) -> LocalWorkspace:
        root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{run_id}-", dir=temp_root))
        local = cls(workspace, root)
        local.tree_dir.mkdir()
        try:
            local._export()
            local._init_baseline()
        except BaseException:
            local.remove()
            raise
        return local

    def _export(self) -> None:
        ws = self.workspace
        args = ["archive", "--format=tar", ws.commit]
        if ws.only_fetch_workspace and ws.path:
            # Sourcegraph also keeps the root .gitignore when fetching only a workspace.
            args += ["--", ws.path]
            listing = git_text(
                ["ls-tree", "--name-only", ws.commit, ".gitignore"], cwd=ws.repo_path
            )
            if listing:
                args.append(".gitignore")
        data = git(args, cwd=ws.repo_path)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            archive.extractall(self.tree_dir, filter="tar")
        if ws.path:
            (self.tree_dir / ws.path).mkdir(parents=True, exist_ok=True)

    def _init_baseline(self) -> None:
        git(["init", "-q", "-b", "runner-baseline"], cwd=self.tree_dir)
        git(["add", "-A", "-f"], cwd=self.tree_dir)
        self.baseline = git_text(["write-tree"], cwd=self.tree_dir)

    def snapshot(self) -> str:
        """Stage everything the steps changed (honouring .gitignore); return the tree."""
        git(["add", "-A"], cwd=self.tree_dir)
        return git_text(["write-tree"], cwd=self.tree_dir)

    def changes(self, old_tree: str, new_tree: str) -> FileChanges:
        out = git(
            ["diff-tree", "-r", "-z", "-M", "--name-status", old_tree, new_tree], cwd=self.tree_dir
        ).decode("utf-8", "replace")
        parts = out.split("\0")
        lists: dict[str, list[str]] = {"M": [], "A": [], "D": [], "R": []}
        i = 0
        while i < len(parts) and parts[i]:
            status = parts[i][0]
            if status in "RC":  # a rename or copy names the old path, then the new one
                lists["R"].append(parts[i + 2])
                i += 3
                continue
            lists.get("M" if status == "T" else status, lists["M"]).append(parts[i + 1])
            i += 2
        return FileChanges(
            tuple(lists["M"]), tuple(lists["A"]), tuple(lists["D"]), tuple(lists["R"])
        )

    def diff(self, old_tree: str, new_tree: str, paths: list[str] | None = None) -> bytes:
        """The binary-safe diff between two trees, optionally limited to paths."""
        args = ["diff", "--binary", "--no-color", "--full-index", old_tree, new_tree]
        if paths is not None:
            args += ["--", *paths]
        return git(args, cwd=self.tree_dir)

    def apply(self, diff: bytes) -> str:
        """Apply a diff taken from the baseline (a cache hit); return the new tree."""
        if diff:
            git(["apply", "--binary", "--whitespace=nowarn", "-"], cwd=self.tree_dir, input=diff)
        return self.snapshot()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
