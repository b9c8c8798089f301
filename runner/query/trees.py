"""Reading a repository's files at a revision, for query evaluation.

``TreeReader`` is the seam: ``GitTreeReader`` lists a revision with one
``git ls-tree`` and reads blobs through one long-lived ``git cat-file --batch``
per repository, only for the files a query actually needs to look into.
``MemoryTreeReader`` serves the same from a dict, for tests and callers that
already hold the files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Literal, Protocol, Self

from runner.errors import GitError, RepositoryNotFoundError
from runner.git import git, git_process
from runner.query.model import LocalRepository

MAX_CONTENT_BYTES = 1024 * 1024

EntryKind = Literal["file", "link", "submodule"]


@dataclass(frozen=True)
class TreeEntry:
    path: str
    oid: str
    size: int
    kind: EntryKind

    @property
    def content_searchable(self) -> bool:
        """Content search looks into regular files up to 1 MiB (binaries are seen on read)."""
        return self.kind == "file" and self.size <= MAX_CONTENT_BYTES


class RepositoryTree(Protocol):
    def entries(self) -> Sequence[TreeEntry]:
        """Every file of the revision, in git's (byte-wise) path order."""
        ...

    def text(self, entry: TreeEntry) -> str | None:
        """The file's text, or None when content search skips it (binary, large, link)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class TreeReader(Protocol):
    def open(self, repository: LocalRepository) -> RepositoryTree: ...


def _decode(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


class _TreeBase:
    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _parse_listing(listing: bytes) -> list[TreeEntry]:
    """Entries of ``git ls-tree -r -z -l`` output."""
    entries = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, oid, size = meta.split()
        path = raw_path.decode("utf-8", errors="surrogateescape")
        if kind == b"commit":
            entries.append(TreeEntry(path, oid.decode(), 0, "submodule"))
        elif mode == b"120000":
            entries.append(TreeEntry(path, oid.decode(), int(size), "link"))
        else:
            entries.append(TreeEntry(path, oid.decode(), int(size), "file"))
    return entries


class GitTree(_TreeBase):
    def __init__(self, repository: LocalRepository) -> None:
        self._repo = repository
        self._cat: subprocess.Popen[bytes] | None = None
        self._entries = self._list()

    def _fail(self, what: str, detail: str) -> RepositoryNotFoundError:
        return RepositoryNotFoundError(
            f"cannot {what} {self._repo.name} at {self._repo.revision} "
            f"({self._repo.path}): {detail}",
            hint="check that the folder is a git repository and holds that revision",
        )

    def _list(self) -> list[TreeEntry]:
        revision = self._repo.revision
        if not revision or revision.startswith("-"):
            raise self._fail("list the files of", "the revision must be a commit or ref name")
        listing = ["ls-tree", "-r", "-z", "-l", "--full-tree", revision]
        try:
            return _parse_listing(git(listing, cwd=self._repo.path))
        except GitError as exc:
            raise self._fail("list the files of", exc.detail) from exc

    def entries(self) -> Sequence[TreeEntry]:
        return self._entries

    def _batch(self) -> tuple[IO[bytes], IO[bytes]]:
        if self._cat is None:
            try:
                self._cat = git_process(["cat-file", "--batch"], cwd=self._repo.path)
            except GitError as exc:
                raise self._fail("read the files of", exc.detail) from exc
        assert self._cat.stdin is not None
        assert self._cat.stdout is not None
        return self._cat.stdin, self._cat.stdout

    def text(self, entry: TreeEntry) -> str | None:
        if not entry.content_searchable:
            return None
        stdin, stdout = self._batch()
        # cat-file --batch flushes after every object, so one request at a
        # time cannot deadlock and needs no thread.
        try:
            stdin.write(entry.oid.encode() + b"\n")
            stdin.flush()
        except OSError as exc:
            raise self._fail("read the files of", str(exc)) from exc
        header = stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise self._fail("read the files of", f"git cat-file could not read {entry.path}")
        size = int(header[2])
        data = stdout.read(size + 1)[:size]
        return _decode(data)

    def close(self) -> None:
        cat, self._cat = self._cat, None
        if cat is None:
            return
        if cat.stdin is not None:
            cat.stdin.close()
        try:
            cat.wait(timeout=5)
        except subprocess.TimeoutExpired:
            cat.kill()
            cat.wait()
        if cat.stdout is not None:
            cat.stdout.close()


class GitTreeReader:
    """Reads repositories through git, run isolated by ``runner.git``."""

    def open(self, repository: LocalRepository) -> RepositoryTree:
        return GitTree(repository)


class MemoryTree(_TreeBase):
    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = dict(files)
        self._entries = [
            TreeEntry(path, path, len(data), "file")
            for path, data in sorted(files.items(), key=lambda item: item[0].encode())
        ]

    def entries(self) -> Sequence[TreeEntry]:
        return self._entries

    def text(self, entry: TreeEntry) -> str | None:
        if not entry.content_searchable:
            return None
        return _decode(self._files[entry.path])


class MemoryTreeReader:
    """Files held in memory, keyed by repository name then path (the in-package fake)."""

    def __init__(self, repositories: Mapping[str, Mapping[str, bytes]]) -> None:
        self._repositories = repositories
        self.opened: list[str] = []  # names, in order, so tests can see what was read

    def open(self, repository: LocalRepository) -> RepositoryTree:
        self.opened.append(repository.name)
        files = self._repositories.get(repository.name)
        if files is None:
            raise RepositoryNotFoundError(
                f"no files for repository {repository.name}",
                hint="add it to the MemoryTreeReader",
            )
        return MemoryTree(files)
