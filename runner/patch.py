"""What a git diff writes, read from the diff alone: for the secret check of a cached result.

A full cache hit has no tree to read the changed files from (runner.execute.steps
builds its result from the cache entry). What the diff would put into the
repository is in the diff itself: the new side of each text hunk (its
context and added lines, prefixes dropped, so a value's lines stand next to
each other as in the file), and each binary patch, whose bytes git shows
compressed and base85-encoded. A ``literal`` patch holds the new file whole;
a ``delta`` patch holds git's copy-and-insert instructions against the old
blob, which the caller reads (``Written.base``) and ``apply_delta`` rebuilds.

Nothing here starts git or touches a disk.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from runner.changeset import file_sections
from runner.errors import CacheError

_BINARY = b"GIT binary patch"
# Between two hunks (or files) in what is scanned: no value's form spans it,
# and the short-line rule does not reach across it.
SEPARATOR = b"\n\0\n"


@dataclass(frozen=True)
class Written:
    """What one file section of a diff writes.

    ``data`` is the new side of its hunks, or the new file of a literal binary
    patch; for a delta binary patch it is the delta, to apply to the blob
    ``base`` (its object name) with ``apply_delta``.
    """

    path: str
    data: bytes
    base: str | None = None


def written(diff: bytes) -> Iterator[Written]:
    """Each file section's new bytes, in the diff's order; ``CacheError`` if unreadable."""
    for section in file_sections(diff):
        lines = section.split(b"\n")
        path = _path(lines)
        if _BINARY in lines:
            yield _binary(path, lines)
            continue
        if any(line.startswith(b"Binary files ") for line in lines):
            raise _unreadable(path)  # a binary change without its bytes: nothing to check
        new: list[bytes] = []
        in_hunks = False
        for line in lines[1:]:
            if line.startswith(b"@@"):
                if in_hunks:
                    new.append(SEPARATOR)
                in_hunks = True
            elif in_hunks and line[:1] in (b" ", b"+"):
                new.append(line[1:] + b"\n")
        if new:
            yield Written(path, b"".join(new))


def _path(lines: list[bytes]) -> str:
    """The file's new path, for messages: ``+++ b/``, ``rename to`` or the header."""
    for line in lines[1:]:
        if line.startswith(b"@@") or line == _BINARY:
            break
        for prefix in (b"+++ b/", b"rename to ", b"copy to "):
            if line.startswith(prefix):
                return line[len(prefix) :].decode("utf-8", "replace")
        if line.startswith(b'+++ "b/'):  # git quotes a name with unusual bytes
            return line[len(b'+++ "b/') : -1].decode("utf-8", "replace")
    rest = lines[0][len(b"diff --git ") :]
    if rest.startswith(b'"'):
        return rest.rpartition(b' "b/')[2].rstrip(b'"').decode("utf-8", "replace")
    # `a/P b/P`: the same path twice, so its length is known.
    half = (len(rest) - 5) // 2
    return rest[2 : 2 + half].decode("utf-8", "replace") if half > 0 else "(unnamed)"


def _binary(path: str, lines: list[bytes]) -> Written:
    base = None
    for line in lines:
        if line.startswith(b"index "):
            base = line.split()[1].split(b"..")[0].decode()
    start = lines.index(_BINARY) + 1
    encoded: list[bytes] = []
    try:
        kind, _, size_text = lines[start].partition(b" ")
        for line in lines[start + 1 :]:
            if not line:
                break  # the forward patch ends at a blank line; the reverse one follows
            encoded.append(_base85_line(line))
        data = zlib.decompress(b"".join(encoded))
        size = int(size_text)
    except (zlib.error, ValueError, IndexError) as exc:
        raise _unreadable(path) from exc
    if len(data) != size or kind not in (b"literal", b"delta"):
        raise _unreadable(path)
    if kind == b"literal":
        return Written(path, data)
    if base is None:
        raise _unreadable(path)
    return Written(path, data, base)


def _unreadable(path: str) -> CacheError:
    return CacheError(
        f"the cached patch of {path} shows no bytes to check",
        hint="run again with --clear-cache",
    )


def _base85_line(line: bytes) -> bytes:
    """One line of a binary patch: a length letter (A-Z 1-26, a-z 27-52), then base85."""
    first = line[0]
    length = first - ord("A") + 1 if first <= ord("Z") else first - ord("a") + 27
    # A bad line raises ValueError, which the caller turns into CacheError.
    return base64.b85decode(line[1:])[:length]


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """Git's delta format: two sizes, then copies from ``base`` and inserted bytes."""
    pos = 0

    def size() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = delta[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    try:
        if size() != len(base):
            raise ValueError("the delta is for another blob")
        expected = size()
        out = bytearray()
        while pos < len(delta):
            op = delta[pos]
            pos += 1
            if op & 0x80:  # copy: bits 0-3 say which offset bytes follow, 4-6 which size bytes
                offset = length = 0
                for bit in range(4):
                    if op & (1 << bit):
                        offset |= delta[pos] << (8 * bit)
                        pos += 1
                for bit in range(3):
                    if op & (1 << (4 + bit)):
                        length |= delta[pos] << (8 * bit)
                        pos += 1
                out += base[offset : offset + (length or 0x10000)]
            elif op:  # insert the next `op` bytes
                out += delta[pos : pos + op]
                pos += op
            else:
                raise ValueError("a zero instruction")
        if len(out) != expected:
            raise ValueError("the result has the wrong size")
    except (IndexError, ValueError) as exc:
        raise CacheError(
            f"a cached binary patch does not apply to its blob ({exc})",
            hint="run again with --clear-cache",
        ) from exc
    return bytes(out)
