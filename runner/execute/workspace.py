"""A workspace on disk: exactly the files of the repository's commit, plus a git index.

The files are written straight from the commit's blobs (one ``git ls-tree``
lists them, one ``git cat-file --batch`` streams them to disk), so the
workspace holds the commit's bytes whatever ``.gitattributes`` says. ``git
archive``, used before, leaves out ``export-ignore`` paths, rewrites
``export-subst`` files and applies ``eol``, ``ident`` and filter conversions;
Sourcegraph forces every file into its archives, and so does this. As
Sourcegraph's executors do, a submodule (a gitlink) is an empty folder, not
fetched, and a Git LFS file is its pointer file, not smudged. The user's
repository is only ever read.

The workspace's own repository (``repo/.git``) receives the same objects as
one pack (``git pack-objects`` in the user's repository piped into ``git
index-pack`` in the workspace's), then ``git add`` records the baseline tree
without writing an object of its own: two files to write, and later to
remove, instead of one loose object per file (a tree of a few files takes
loose objects: fewer processes). After each step ``snapshot()`` stages
everything and writes a tree object: comparing trees gives the changed-file
lists and the diff without making commits.

Everything that can take seconds on a large tree notices the run's cancel
event: between files while writing them, and around every git (killed when
the event is set). Removal never stops early, since it is what a canceled run
waits for; it unlinks in parallel instead. ``progress(phase, done, total)``
reports files done while ``preparing`` and ``cleaning``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from runner.changeset import FileChanges
from runner.errors import ExecutionError, GitError
from runner.git import git, git_pipe, git_process
from runner.plan import Workspace

TEMP_PREFIX = "runner-ws-"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

PREPARING: Final = "preparing"
DIFFING: Final = "diffing"
CLEANING: Final = "cleaning"

# (phase, files done, total files or None): called once per file, so a
# listener paces what it shows itself.
Progress = Callable[[str, int, int | None], None]

# src-cli's additional workspace files: with onlyFetchWorkspace, these are
# kept from the root and from every folder above the workspace's.
ANCESTOR_FILES: Final = (".gitignore", ".gitattributes")

# From this many files on, the baseline's objects come as one pack; below it
# the two git processes of the pack cost more than the loose objects they save.
PACK_FROM_FILES: Final = 32

_SHA256_HEX: Final = 64
_LINK: Final = b"120000"
_EXECUTABLE: Final = b"100755"
_CHUNK: Final = 1 << 20
# Unlinking is bound by the file system's latency, not the CPU: a few threads
# remove a large tree several times faster than one.
_REMOVE_THREADS: Final = 8
_REMOVE_BATCH: Final = 256


def no_progress(phase: str, done: int, total: int | None) -> None:
    """The default listener: nobody is watching."""


@dataclass(frozen=True)
class _Entry:
    """One file of the commit as ``git ls-tree -r -t -z`` lists it."""

    mode: bytes
    kind: bytes  # blob, tree or commit (a submodule)
    oid: bytes
    path: bytes  # as git stores it: any bytes but NUL

    @classmethod
    def parse(cls, record: bytes) -> _Entry:
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.split()
        return cls(mode, kind, oid, path)


@dataclass
class LocalWorkspace:
    """A prepared copy of one workspace's repository tree."""

    workspace: Workspace
    root: Path  # the temporary folder holding everything of this workspace
    cancel: threading.Event | None = None
    progress: Progress = no_progress
    tree_dir: Path = field(init=False)
    baseline: str = field(init=False, default=EMPTY_TREE)

    def __post_init__(self) -> None:
        self.tree_dir = self.root / "repo"

    @property
    def workdir_in_container(self) -> str:
        return "/work" + (f"/{self.workspace.path}" if self.workspace.path else "")

    @classmethod
    def create(
        cls,
        workspace: Workspace,
        *,
        run_id: str,
        temp_root: Path | None = None,
        cancel: threading.Event | None = None,
        progress: Progress = no_progress,
    ) -> LocalWorkspace:
        """Write the workspace's files and baseline; on any failure or cancel, remove them.

        A cancel raises ``ExecutionError`` (or ``GitError``, a kind of it).
        """
        root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{run_id}-", dir=temp_root))
        local = cls(workspace, root, cancel, progress)
        local.tree_dir.mkdir()
        try:
            entries = local._entries()
            local._init_repository(entries)
            local._write_files(entries)
            local._init_baseline(entries)
        except BaseException:
            local.remove()
            raise
        return local

    # -- preparing ------------------------------------------------------------------
    def _git(self, args: Sequence[str], *, cwd: Path, input: bytes | None = None) -> bytes:
        return git(args, cwd=cwd, input=input, cancel=self.cancel)

    def _pipe(self, first: Sequence[str], second: Sequence[str], *, input: bytes) -> bytes:
        """``git FIRST`` in the user's repository into ``git SECOND`` in the workspace's."""
        return git_pipe(
            first,
            second,
            first_cwd=self.workspace.repo_path,
            second_cwd=self.tree_dir,
            input=input,
            cancel=self.cancel,
        )

    def _entries(self) -> list[_Entry]:
        """The commit's files (trees included), limited as onlyFetchWorkspace says."""
        ws = self.workspace
        listing = self._git(
            ["ls-tree", "-r", "-t", "-z", "--full-tree", ws.commit], cwd=ws.repo_path
        )
        entries = [_Entry.parse(record) for record in listing.split(b"\0") if record]
        if ws.only_fetch_workspace and ws.path:
            top = _encode(ws.path)
            keep = {top, *_ancestor_files(ws.path)}
            inside = top + b"/"
            entries = [e for e in entries if e.path in keep or e.path.startswith(inside)]
        for entry in entries:
            _check_path(entry.path, ws)
        return entries

    def _init_repository(self, entries: Sequence[_Entry]) -> None:
        """A repository for the baseline, in the object format of the user's (its pack fits)."""
        sha256 = bool(entries) and len(entries[0].oid) == _SHA256_HEX
        self._git(
            [
                "init",
                "-q",
                "-b",
                "runner-baseline",
                f"--object-format={'sha256' if sha256 else 'sha1'}",
            ],
            cwd=self.tree_dir,
        )
        # The files hold the commit's bytes, not a working-tree encoding: reading
        # them back as UTF-16 (say) would garble them or fail. The other content
        # attributes give the commit's bytes back unchanged, and stay in force.
        (self.tree_dir / ".git" / "info").mkdir(exist_ok=True)
        (self.tree_dir / ".git" / "info" / "attributes").write_text("* -working-tree-encoding\n")

    def _write_files(self, entries: Sequence[_Entry]) -> None:
        base = os.fsencode(self.tree_dir)
        blobs = [e for e in entries if e.kind == b"blob"]
        total = len(blobs)
        self.progress(PREPARING, 0, total)
        # Every folder first, before any symbolic link exists, so that no file
        # written below can land outside the tree through one. A submodule is
        # an empty folder, as `git archive` and a checkout without
        # --recurse-submodules leave it.
        folders = {os.path.dirname(e.path) for e in blobs}
        folders.update(e.path for e in entries if e.kind == b"commit")
        if self.workspace.path and not any(e.path == _encode(self.workspace.path) for e in blobs):
            folders.add(_encode(self.workspace.path))
        for folder in sorted(folders):
            if folder:
                os.makedirs(os.path.join(base, folder), exist_ok=True)
        links: list[tuple[bytes, bytes]] = []
        done = 0

        def check_cancel() -> None:
            if self.cancel is not None and self.cancel.is_set():
                raise _canceled_while_preparing(done, total)

        with _BlobStream(self.workspace.repo_path, [e.oid for e in blobs]) as stream:
            for entry in blobs:
                check_cancel()
                target = os.path.join(base, entry.path)
                if entry.mode == _LINK:
                    links.append((target, stream.read(entry.oid)))
                else:
                    _write_file(target, entry.mode, stream.chunks(entry.oid), check_cancel)
                done += 1
                self.progress(PREPARING, done, total)
        for target, points_to in links:
            os.symlink(points_to, target)

    def _init_baseline(self, entries: Sequence[_Entry]) -> None:
        ws = self.workspace
        files = [e for e in entries if e.kind == b"blob"]
        if len(files) >= PACK_FROM_FILES:
            # The objects, streamed from the user's repository into one pack
            # here (the commit's tree, or the workspace's folder and the files
            # kept above it), so that `git add` below finds them all and
            # writes no loose object: two files instead of one per file, to
            # write now and to remove later. Nothing is written into the
            # user's repository.
            roots = [f"{ws.commit}^{{tree}}".encode()]
            if ws.only_fetch_workspace and ws.path:
                top = _encode(ws.path)
                roots = [e.oid for e in entries if e.path == top]
                roots += [e.oid for e in files if not e.path.startswith(top + b"/")]
            self._pipe(
                ["pack-objects", "--revs", "--stdout", "-q", "--window=0"],
                ["index-pack", "--stdin"],
                input=b"".join(root + b"\n" for root in roots),
            )
        # Reads every file once; it also stores, as `git add` of fresh files
        # would, what the repository's text attributes normalise (a CRLF file
        # marked `text`), so that no step is charged with that change.
        self._git(["add", "-A", "-f"], cwd=self.tree_dir)
        self.baseline = self._git(["write-tree"], cwd=self.tree_dir).decode().strip()

    # -- after each step ----------------------------------------------------------
    def snapshot(self) -> str:
        """Stage everything the steps changed (honouring .gitignore); return the tree."""
        self._git(["add", "-A"], cwd=self.tree_dir)
        return self._git(["write-tree"], cwd=self.tree_dir).decode().strip()

    def changes(self, old_tree: str, new_tree: str) -> FileChanges:
        out = self._git(
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
        return self._git(args, cwd=self.tree_dir)

    def apply(self, diff: bytes) -> str:
        """Apply a diff taken from the baseline (a cache hit); return the new tree."""
        if diff:
            self._git(
                ["apply", "--binary", "--whitespace=nowarn", "-"], cwd=self.tree_dir, input=diff
            )
        return self.snapshot()

    # -- cleaning -----------------------------------------------------------------
    def remove(self, progress: Progress | None = None) -> None:
        """Delete everything of the workspace, reporting files removed.

        It never stops early, canceled or not: a canceled run waits for it.
        """
        _remove_tree(self.root, progress or self.progress)


class _BlobStream:
    """Blob contents from one ``git cat-file --batch``, in the order they were asked for.

    A thread writes every object name to git's stdin while the caller reads
    the answers, so neither pipe can fill up and block the other.
    """

    def __init__(self, repo: Path, oids: Sequence[bytes]) -> None:
        self._repo = repo
        self._proc = git_process(["cat-file", "--batch", "--buffer"], cwd=repo)
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._out: IO[bytes] = self._proc.stdout
        self._feeder = threading.Thread(
            target=_feed, args=(self._proc.stdin, oids), name="cat-file-feeder", daemon=True
        )
        self._feeder.start()

    def __enter__(self) -> _BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _size(self, oid: bytes) -> int:
        header = self._out.readline().split()
        if len(header) != 3 or header[0] != oid or header[1] != b"blob":
            raise GitError(
                f"git cat-file in {self._repo} could not read the object {oid.decode()}",
                detail=b" ".join(header).decode("utf-8", "replace") or "no answer",
                hint="check the repository with `git fsck`",
            )
        return int(header[2])

    def read(self, oid: bytes) -> bytes:
        """A whole (small) blob, such as a symbolic link's target."""
        return b"".join(self.chunks(oid))

    def chunks(self, oid: bytes) -> Iterator[bytes]:
        """The blob in pieces of at most 1 MiB, so a large file never sits in memory."""
        left = self._size(oid)
        while left:
            chunk = self._out.read(min(left, _CHUNK))
            if not chunk:
                raise GitError(
                    f"git cat-file in {self._repo} stopped in the middle of {oid.decode()}",
                    detail="truncated output",
                    hint="check the repository with `git fsck`",
                )
            left -= len(chunk)
            yield chunk
        self._out.read(1)  # the newline after each object

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._out.close()
        self._feeder.join()


def _feed(stdin: IO[bytes], oids: Sequence[bytes]) -> None:
    try:
        with stdin:
            for start in range(0, len(oids), 1024):
                stdin.write(b"".join(oid + b"\n" for oid in oids[start : start + 1024]))
    except OSError:  # git was killed (a cancel or an error): nothing more to ask
        pass


def _write_file(
    target: bytes, mode: bytes, chunks: Iterator[bytes], check_cancel: Callable[[], None]
) -> None:
    # O_EXCL and O_NOFOLLOW: a path listed twice, or one that meets a link, is
    # an error rather than an overwrite.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, 0o755 if mode == _EXECUTABLE else 0o644)
    try:
        for chunk in chunks:
            check_cancel()  # a large file takes a while too
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _encode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _ancestor_files(path: str) -> list[bytes]:
    """Sourcegraph's extra files for a workspace at ``path``: the root's and each parent's."""
    parts = path.split("/")
    folders = ["/".join(parts[:i]) for i in range(len(parts))]
    return [
        _encode(f"{folder}/{name}" if folder else name)
        for folder in folders
        for name in ANCESTOR_FILES
    ]


def _check_path(path: bytes, ws: Workspace) -> None:
    """Refuse a path git itself would not check out (a crafted tree can hold one)."""
    for part in path.split(b"/"):
        if part in (b"", b".", b"..") or part.lower().rstrip(b". ") == b".git":
            shown = path.decode("utf-8", "replace")
            raise ExecutionError(
                f"{ws.repository} at {ws.commit[:12]} holds the path {shown!r}, which runner "
                "will not write into a workspace",
                hint="remove that path from the repository's history (`git fsck` reports it)",
            )


def _canceled_while_preparing(done: int, total: int) -> ExecutionError:
    return ExecutionError(
        f"canceled while preparing the workspace ({done} of {total} files written)",
        hint="run again to finish it",
    )


# -- removing a tree -------------------------------------------------------------------
def _remove_tree(root: Path, progress: Progress) -> None:
    files, folders = _listing(os.fsencode(root))
    total = len(files)
    progress(CLEANING, 0, total)
    done = 0
    if files:
        batches = [files[i : i + _REMOVE_BATCH] for i in range(0, total, _REMOVE_BATCH)]
        with ThreadPoolExecutor(_REMOVE_THREADS, thread_name_prefix="remove") as pool:
            for removed in pool.map(_unlink_all, batches):
                done += removed
                progress(CLEANING, done, total)
    for folder in reversed(folders):  # deepest first: the listing is top-down
        with contextlib.suppress(OSError):  # left for rmtree below
            os.rmdir(folder)
    # Whatever the fast path could not remove (a folder a step made read-only).
    shutil.rmtree(root, ignore_errors=True)


def _listing(root: bytes) -> tuple[list[bytes], list[bytes]]:
    """Every non-folder and every folder under ``root``, folders top-down; links not followed."""
    files: list[bytes] = []
    folders: list[bytes] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        folders.append(folder)
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        files.append(entry.path)
        except OSError:
            continue
    return files, folders


def _unlink_all(paths: Sequence[bytes]) -> int:
    for path in paths:
        with contextlib.suppress(OSError):  # gone already, or left for rmtree
            os.unlink(path)
    return len(paths)
