"""A commit's tree, read from the repository's object store without git.

Cache keys start from a workspace's tree, so every workspace asks for it, and
a fully cached re-run asks for nothing else: a git process per workspace was
the largest part of such a run's own work. A commit is stored whole (zlib) as
a loose object or as a packed one; both are read here. A packed commit stored
as a delta, an object in an alternate store, a SHA-256 repository or anything
unexpected answers None, and the caller asks git. Every object read is
checked against its name (the SHA-1 of its content), so a misread is a None,
never a wrong tree.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from pathlib import Path

_SHA1_HEX = re.compile(r"[0-9a-f]{40}")
_TREE_LINE = re.compile(rb"tree ([0-9a-f]{40})\n")
_IDX_MAGIC = b"\xfftOc\x00\x00\x00\x02"
_NAMES_AT = 8 + 256 * 4  # past the magic, version and fan-out table
_COMMIT_TYPE = 1


def commit_tree(objects: Path, commit: str) -> str | None:
    """The tree of ``commit`` in the object folder ``objects``, or None (ask git)."""
    if not _SHA1_HEX.fullmatch(commit):
        return None
    oid = bytes.fromhex(commit)
    try:
        body = _loose(objects, commit)
        if body is None:
            body = _packed(objects, oid)
    except (OSError, zlib.error, struct.error, ValueError, IndexError):
        return None
    if body is None or hashlib.sha1(b"commit %d\x00" % len(body) + body).digest() != oid:  # noqa: S324
        return None  # git names objects by SHA-1: this checks the read, it protects nothing
    found = _TREE_LINE.match(body)
    return found.group(1).decode() if found else None


def _loose(objects: Path, commit: str) -> bytes | None:
    try:
        data = zlib.decompress((objects / commit[:2] / commit[2:]).read_bytes())
    except FileNotFoundError:
        return None
    kind, nul, body = data.partition(b"\x00")
    return body if nul and kind.startswith(b"commit ") else None


def _packed(objects: Path, oid: bytes) -> bytes | None:
    for index in sorted((objects / "pack").glob("pack-*.idx")):
        offset = _offset_in(index, oid)
        if offset is not None:
            return _commit_at(index.with_suffix(".pack"), offset)
    return None


def _offset_in(index: Path, oid: bytes) -> int | None:
    """Where a version-2 pack index puts ``oid`` in its pack (binary search by seeks)."""
    with index.open("rb") as handle:
        if handle.read(8) != _IDX_MAGIC:
            return None
        fanout = struct.unpack(">256I", handle.read(256 * 4))
        total = fanout[255]
        low = fanout[oid[0] - 1] if oid[0] else 0
        high = fanout[oid[0]]
        while low < high:
            middle = (low + high) // 2
            handle.seek(_NAMES_AT + middle * 20)
            name = handle.read(20)
            if name == oid:
                break
            if name < oid:
                low = middle + 1
            else:
                high = middle
        else:
            return None
        offsets_at = _NAMES_AT + total * 24  # past the names and their CRCs
        handle.seek(offsets_at + middle * 4)
        (offset,) = struct.unpack(">I", handle.read(4))
        if offset & 0x8000_0000:
            handle.seek(offsets_at + total * 4 + (offset & 0x7FFF_FFFF) * 8)
            (offset,) = struct.unpack(">Q", handle.read(8))
        return int(offset)


def _commit_at(pack: Path, offset: int) -> bytes | None:
    with pack.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(64)
        kind = (data[0] >> 4) & 0x7
        if kind != _COMMIT_TYPE:
            return None  # stored as a delta (or not a commit): git rebuilds it
        size, shift, at = data[0] & 0x0F, 4, 1
        while data[at - 1] & 0x80:  # the rest of the size's varint
            size |= (data[at] & 0x7F) << shift
            shift, at = shift + 7, at + 1
        inflate = zlib.decompressobj()
        body = inflate.decompress(data[at:], size)
        while len(body) < size and not inflate.eof and (more := handle.read(4096)):
            body += inflate.decompress(more, size - len(body))
    return body if len(body) == size else None
