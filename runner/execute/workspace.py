"""A workspace on disk: exactly the repository commit's files, plus a git index.

The files are written straight from the commit's blobs (one ``git ls-tree``
lists them, one ``git cat-file --batch`` streams them to disk a piece at a
time), so the workspace holds the commit's bytes whatever ``.gitattributes``
says. ``git archive`` leaves out ``export-ignore`` paths, rewrites
``export-subst`` files and applies ``eol``, ``ident`` and filter conversions;
Sourcegraph forces every file into its archives, and so does this. As
Sourcegraph's executors do, a submodule (a gitlink) is an empty folder, not
fetched, and a Git LFS file is its pointer file, not smudged. The user's
repository is only ever read.

The workspace's own repository lives beside the files (``git/``, not
``repo/.git``: a step sees it read-only at ``/work/.git``, see ``git_mounts``,
and cannot break the bookkeeping)
and owns no copy of the objects: it borrows the user's repository's object
folder as an alternate, and writes only what the steps add. Its index is
written here, from the commit's listing and the ``lstat`` of each file just
written (its stat cache valid), so git never hashes the tree file by file:
after a step, ``git add -A`` rehashes only the files whose stat changed, and
the baseline is the commit's own tree. The files are dated a second before
the index, so none is "racily clean" and rehashed for that. Only when a
``.gitattributes`` asks for conversions that ``git add`` would apply (``text``,
``eol``, ``crlf``, ``ident``) does the baseline come from ``git add -A -f``
over every file, as before, so that no step is charged with a normalisation.
After each step ``snapshot()`` stages everything and writes a tree object:
comparing trees gives the changed-file lists and the diff without commits.

A full cache hit needs no tree at all, nor this module: its keys start from
the commit's tree (``runner.execute.source``), and the secret check reads what
the cached diff writes from the diff itself (``runner.patch``); ``read_blobs``
gives it the old blobs a binary delta is applied to.

Everything that can take seconds on a large tree notices the run's cancel
event: between files while writing them, and around every git (killed when
the event is set). Removal never stops early, since it is what a canceled run
waits for; it unlinks in parallel instead (``remove_tree``, which also serves
the sweep of what interrupted runs left). ``progress(phase, done, total)``
reports files done while ``preparing`` and ``cleaning``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from runner.changeset import FileChanges
from runner.errors import ExecutionError, GitError
from runner.execute.source import Source, resolve_source
from runner.git import git, git_process
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

_SHA256_HEX: Final = 64
_LINK: Final = b"120000"
_EXECUTABLE: Final = b"100755"
_CHUNK: Final = 1 << 20
# Unlinking is bound by the file system's latency, not the CPU: a few threads
# remove a large tree several times faster than one.
_REMOVE_THREADS: Final = 8
_REMOVE_BATCH: Final = 256
# The attributes that make `git add` store other bytes than the file's (a
# set `text`, `eol=`, the old `crlf`, `ident`); `-text` and `!text` unset them.
_CONVERTING: Final = re.compile(rb"(?<![-!\w])(?:text|eol|crlf|ident)(?![\w-])")


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


# Where a step finds the objects the workspace's repository borrows (``git_mounts``).
BORROWED_OBJECTS = "/.runner-objects"


@dataclass
class LocalWorkspace:
    """A prepared copy of one workspace's repository tree."""

    workspace: Workspace
    root: Path  # the temporary folder holding everything of this workspace
    cancel: threading.Event | None = None
    progress: Progress = no_progress
    tree_dir: Path = field(init=False)  # the files, mounted at /work
    git_dir: Path = field(init=False)  # the workspace's repository, beside them
    baseline: str = field(init=False, default=EMPTY_TREE)
    # Diffs and change lists already asked for: the step loop asks for the
    # same pair of trees more than once (the cache entry, the next step's
    # context, the result), and each answer is a git.
    _answers: dict[tuple[object, ...], object] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.tree_dir = self.root / "repo"
        self.git_dir = self.root / "git"

    @property
    def workdir_in_container(self) -> str:
        return "/work" + (f"/{self.workspace.path}" if self.workspace.path else "")

    def git_mounts(self) -> list[tuple[Path, str]]:
        """(host path, path in the container) pairs a step mounts read-only.

        Sourcegraph's steps run in a git repository (src-cli commits the tree
        in it; an executor's workspace is a clone), so tools that read
        ``.gitignore`` only inside a repository, or ``git diff`` and ``git
        ls-files``, behave alike here: the workspace's repository at
        ``/work/.git``, and the objects it borrows under a fixed folder, with
        an ``alternates`` file naming them there laid over the host's (whose
        paths mean nothing in the container, and could even fall inside
        ``/work``). All read-only: the bookkeeping stays runner's, whatever a
        step runs.
        """
        if not (self.git_dir / "HEAD").exists():
            return []
        mounts = [(self.git_dir, "/work/.git")]
        alternates = self.git_dir / "objects" / "info" / "alternates"
        if not alternates.exists():
            return mounts
        named: list[str] = []
        for line in alternates.read_bytes().splitlines():
            borrowed = Path(os.fsdecode(line.strip()))
            if borrowed.is_absolute() and borrowed.is_dir():
                target = f"{BORROWED_OBJECTS}/{len(named)}"
                mounts.append((borrowed, target))
                named.append(target)
        in_container = self.root / "alternates-in-container"
        if not in_container.exists():  # once per workspace: every step mounts the same
            in_container.write_text("".join(f"{t}\n" for t in named))
        mounts.append((in_container, "/work/.git/objects/info/alternates"))
        return mounts

    @classmethod
    def create(
        cls,
        workspace: Workspace,
        *,
        run_id: str,
        temp_root: Path | None = None,
        cancel: threading.Event | None = None,
        progress: Progress = no_progress,
        source: Source | None = None,
    ) -> LocalWorkspace:
        """Write the workspace's files and baseline; on any failure or cancel, remove them.

        A cancel raises ``ExecutionError`` (or ``GitError``, a kind of it).
        ``source`` is the commit's tree and objects when the caller has them.
        """
        root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{run_id}-", dir=temp_root))
        local = cls(workspace, root, cancel, progress)
        local.tree_dir.mkdir()
        try:
            source = source or resolve_source(workspace, cancel)
            entries = local._entries()
            sha256 = bool(entries) and len(entries[0].oid) == _SHA256_HEX
            _make_git_dir(local.git_dir, source.objects, sha256=sha256)
            local._write_files(entries)
            local._init_baseline(entries, source, sha256=sha256)
        except BaseException:
            local.remove()
            raise
        return local

    # -- preparing ------------------------------------------------------------------
    def _git(self, args: Sequence[str], *, input: bytes | None = None) -> bytes:
        return git(
            args,
            cwd=self.tree_dir,
            git_dir=self.git_dir,
            work_tree=self.tree_dir,
            input=input,
            cancel=self.cancel,
        )

    def _entries(self) -> list[_Entry]:
        """The commit's files (trees included), limited as onlyFetchWorkspace says."""
        ws = self.workspace
        listing = git(
            ["ls-tree", "-r", "-t", "-z", "--full-tree", ws.commit],
            cwd=ws.repo_path,
            cancel=self.cancel,
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
        # Dated a whole second before the index is written: git then trusts
        # every entry's stat data instead of rehashing the "racily clean" ones,
        # and any later change (a step's) gives the file another time.
        stamp = (int(time.time()) - 1) * 1_000_000_000

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
                    _write_file(target, entry.mode, stream.chunks(entry.oid), check_cancel, stamp)
                done += 1
                self.progress(PREPARING, done, total)
        for target, points_to in links:
            os.symlink(points_to, target)
            os.utime(target, ns=(stamp, stamp), follow_symlinks=False)

    def _init_baseline(self, entries: Sequence[_Entry], source: Source, *, sha256: bool) -> None:
        ws = self.workspace
        files = [e for e in entries if e.kind == b"blob"]
        if self._converts(files):
            # Reads every file once; it stores, as `git add` of fresh files
            # would, what the repository's text attributes normalise (a CRLF
            # file marked `text`), so that no step is charged with that
            # change. Only the normalised blobs are written: the others are
            # found among the borrowed objects.
            self._git(["add", "-A", "-f"])
            self.baseline = self._git(["write-tree"]).decode().strip()
            return
        _write_index(self.git_dir / "index", os.fsencode(self.tree_dir), files, sha256=sha256)
        partial = ws.only_fetch_workspace and ws.path
        if partial or any(e.kind == b"commit" for e in entries):
            # Not the commit's tree (a folder of it, or its submodules left
            # out, as before): git writes the few trees that differ.
            self.baseline = self._git(["write-tree"]).decode().strip()
        else:
            self.baseline = source.tree

    def _converts(self, files: Sequence[_Entry]) -> bool:
        """Whether a committed .gitattributes asks `git add` to convert what it stores."""
        for entry in files:
            if entry.mode == _LINK or os.path.basename(entry.path) != b".gitattributes":
                continue
            text = (self.tree_dir / os.fsdecode(entry.path)).read_bytes()
            for line in text.splitlines():
                if not line.lstrip().startswith(b"#") and _CONVERTING.search(line):
                    return True
        return False

    # -- after each step ----------------------------------------------------------
    def snapshot(self) -> str:
        """Stage everything the steps changed (honouring .gitignore); return the tree."""
        self._git(["add", "-A"])
        return self._git(["write-tree"]).decode().strip()

    def changes(self, old_tree: str, new_tree: str) -> FileChanges:
        key = ("changes", old_tree, new_tree)
        known = self._answers.get(key)
        if isinstance(known, FileChanges):
            return known
        if old_tree == new_tree:
            self._answers[key] = FileChanges()
            return FileChanges()
        out = self._git(
            ["diff-tree", "-r", "-z", "-M", "--name-status", old_tree, new_tree]
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
        answer = FileChanges(
            tuple(lists["M"]), tuple(lists["A"]), tuple(lists["D"]), tuple(lists["R"])
        )
        self._answers[key] = answer
        return answer

    def diff(self, old_tree: str, new_tree: str, paths: list[str] | None = None) -> bytes:
        """The binary-safe diff between two trees, optionally limited to paths."""
        key = ("diff", old_tree, new_tree, None if paths is None else tuple(paths))
        known = self._answers.get(key)
        if isinstance(known, bytes):
            return known
        if old_tree == new_tree:
            return b""
        args = ["diff", "--binary", "--no-color", "--full-index", old_tree, new_tree]
        if paths is not None:
            args += ["--", *paths]
        answer = self._git(args)
        self._answers[key] = answer
        return answer

    def apply(self, diff: bytes) -> str:
        """Apply a diff taken from the baseline (a cache hit); return the new tree."""
        if diff:
            self._git(["apply", "--binary", "--whitespace=nowarn", "-"], input=diff)
        return self.snapshot()

    # -- cleaning -----------------------------------------------------------------
    def remove(self, progress: Progress | None = None) -> None:
        """Delete everything of the workspace, reporting files removed.

        It never stops early, canceled or not: a canceled run waits for it.
        """
        remove_tree(self.root, progress or self.progress)


def _make_git_dir(git_dir: Path, objects: Path, *, sha256: bool) -> None:
    """A repository without a work tree of its own, borrowing ``objects``; no git started.

    What `git init` would write that matters: HEAD, the object format, the
    folders git looks for, and the alternate.
    """
    (git_dir / "refs" / "heads").mkdir(parents=True)
    (git_dir / "objects" / "info").mkdir(parents=True)
    (git_dir / "info").mkdir()
    (git_dir / "HEAD").write_text("ref: refs/heads/runner-baseline\n")
    config = "[core]\n\trepositoryformatversion = {}\n\tbare = false\n"
    if sha256:
        config = config.format(1) + "[extensions]\n\tobjectformat = sha256\n"
    (git_dir / "config").write_text(config.format(0))
    (git_dir / "objects" / "info" / "alternates").write_bytes(os.fsencode(objects) + b"\n")
    # The files hold the commit's bytes, not a working-tree encoding: reading
    # them back as UTF-16 (say) would garble them or fail. The other content
    # attributes give the commit's bytes back unchanged, and stay in force.
    (git_dir / "info" / "attributes").write_text("* -working-tree-encoding\n")


def _write_index(index: Path, tree: bytes, files: Sequence[_Entry], *, sha256: bool) -> None:
    """Git's index (version 2) for ``files`` as written under ``tree``, stat data and all.

    Each entry: ctime, mtime, dev, ino, mode, uid, gid, size (32 bits each),
    the object name, 16 bits of flags (the name's length), the name, NULs to a
    multiple of 8; sorted by name; the hash of it all at the end.
    """
    out = bytearray(b"DIRC" + struct.pack(">II", 2, len(files)))
    fixed = 40 + (32 if sha256 else 20) + 2
    for entry in sorted(files, key=lambda e: e.path):
        st = os.lstat(os.path.join(tree, entry.path))
        mode = 0o120000 if entry.mode == _LINK else int(entry.mode, 8)
        stat = (
            st.st_ctime_ns // 1_000_000_000,
            st.st_ctime_ns % 1_000_000_000,
            st.st_mtime_ns // 1_000_000_000,
            st.st_mtime_ns % 1_000_000_000,
            st.st_dev,
            st.st_ino,
            mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
        )
        out += struct.pack(">10I", *(value & 0xFFFFFFFF for value in stat))
        out += bytes.fromhex(entry.oid.decode()) + struct.pack(">H", min(len(entry.path), 0xFFF))
        size = (fixed + len(entry.path) + 8) & ~7
        out += entry.path + b"\0" * (size - fixed - len(entry.path))
    out += (hashlib.sha256 if sha256 else hashlib.sha1)(out).digest()
    index.write_bytes(out)


def read_blobs(repo: Path, oids: Sequence[str]) -> list[bytes]:
    """The blobs named, whole, from one ``git cat-file`` in ``repo`` (a few small ones:
    the bases of a cached diff's binary deltas)."""
    if not oids:
        return []
    names = [oid.encode() for oid in oids]
    with _BlobStream(repo, names) as stream:
        return [stream.read(oid) for oid in names]


class _BlobStream:
    """Blob contents from one ``git cat-file --batch``, in the order they were asked for.

    A thread writes every object name to git's stdin while the caller reads
    the answers, so neither pipe can fill up and block the other.
    """

    def __init__(self, repo: Path, oids: Sequence[bytes], *, git_dir: Path | None = None) -> None:
        self._repo = repo
        self._proc = git_process(["cat-file", "--batch", "--buffer"], cwd=repo, git_dir=git_dir)
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
    target: bytes,
    mode: bytes,
    chunks: Iterator[bytes],
    check_cancel: Callable[[], None],
    stamp: int,
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
        os.utime(fd, ns=(stamp, stamp))
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
def remove_tree(root: Path, progress: Progress = no_progress) -> None:
    """Delete ``root`` and everything below it, unlinking in parallel; never stops early."""
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
