"""What the cache stores, and the seam every cache implements.

The rule for failures, the same for every ``StepCache``:

* ``get`` never fails a run: a key not stored, an entry that no longer
  decodes (it is dropped where the store can) and a store that cannot be
  read are all a miss, the last two logged as warnings.
* ``put`` raises ``CacheError`` and nothing else when the entry cannot be
  stored (a database, HTTP or encoding failure); the caller logs it and goes
  on. A put the cache declines on purpose (an entry larger than the whole
  cache, a secret rotated meanwhile) is not a failure: it just stores nothing.

No message of a ``CacheError`` quotes an entry's content: it names the key's
prefix and the failure's type only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from runner.errors import CacheError
from runner.records import Frozen

FORMAT_VERSION = 1


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class CacheEntry(Frozen):
    """What step i left behind: enough to resume after it without running it."""

    diff: bytes  # from the baseline, after step i
    changes: Mapping[str, list[str]]  # step i's own changed files (template shape)
    accumulated: Mapping[str, list[str]]  # changes since the baseline
    outputs: Mapping[str, Any]
    stdout: str
    stderr: str
    skipped: bool = False
    # The key's named inputs (runner.cache.why.named_inputs): content as hashes,
    # secrets as name and version, never a value; what `runner cache why` compares.
    inputs: Mapping[str, Any] | None = None

    def __init__(
        self,
        diff: bytes,
        changes: Mapping[str, list[str]],
        accumulated: Mapping[str, list[str]],
        outputs: Mapping[str, Any],
        stdout: str,
        stderr: str,
        skipped: bool = False,
        inputs: Mapping[str, Any] | None = None,
    ) -> None:
        self._fill(diff, changes, accumulated, outputs, stdout, stderr, skipped, inputs)

    def to_bytes(self) -> bytes:
        """The stored form; ``CacheError`` if an output is not JSON."""
        body = {
            "v": FORMAT_VERSION,
            "diff": self.diff.decode("latin-1"),
            "changes": dict(self.changes),
            "accumulated": dict(self.accumulated),
            "outputs": dict(self.outputs),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "skipped": self.skipped,
        }
        if self.inputs is not None:
            body["inputs"] = dict(self.inputs)
        try:
            text = json.dumps(body, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise CacheError(f"cannot encode a cache entry ({type(exc).__name__})") from None
        return text.encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        """The entry ``to_bytes`` made; ``CacheError`` for anything else."""
        try:
            body = json.loads(data.decode("utf-8"))
            if body.get("v") != FORMAT_VERSION:
                raise ValueError("cache entry of another format version")
            return cls(
                diff=body["diff"].encode("latin-1"),
                changes=body["changes"],
                accumulated=body["accumulated"],
                outputs=body["outputs"],
                stdout=body["stdout"],
                stderr=body["stderr"],
                skipped=bool(body.get("skipped", False)),
                inputs=_inputs(body.get("inputs")),
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # The exception's text could quote the blob: name only its type.
            raise CacheError(f"unreadable cache entry ({type(exc).__name__})") from None


def _inputs(data: Any) -> Mapping[str, Any] | None:
    """An entry's named inputs; entries written before they were kept have none."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TypeError("named inputs are not an object")
    return data


@dataclass(init=False, repr=False, eq=False)
class EntryInfo(Frozen):
    """An entry's bookkeeping: its key, namespace, size, times and secret refs."""

    key: str
    namespace: str
    size: int
    created_at: datetime
    last_used_at: datetime
    secret_refs: tuple[str, ...]  # "secret_id:version" of every secret the key used

    def __init__(
        self,
        key: str,
        namespace: str,
        size: int,
        created_at: datetime,
        last_used_at: datetime,
        secret_refs: tuple[str, ...],
    ) -> None:
        self._fill(key, namespace, size, created_at, last_used_at, secret_refs)


def parse_ref(ref: str) -> tuple[str, int]:
    """``"sec_…:3"`` → ``("sec_…", 3)``; ``CacheError`` for anything else."""
    secret_id, sep, version = ref.rpartition(":")
    if not sep or not secret_id or not version.isdigit():
        raise CacheError(f"not a secret ref (secret_id:version): {ref!r}")
    return secret_id, int(version)


class StepCache(Protocol):
    """What the step loop needs of a cache (see the module's rule for failures)."""

    def get(self, key: str) -> CacheEntry | None: ...

    def put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None: ...


class ManagedStepCache(StepCache, Protocol):
    """A cache that holds its entries itself, so it can list, clear and invalidate them."""

    max_bytes: int

    def entries(self, namespace: str | None = None) -> list[EntryInfo]:
        """Every entry (or one namespace's), most recently used first."""
        ...

    def total_bytes(self) -> int: ...

    def clear(self, namespace: str | None = None) -> int:
        """Remove every entry (or one namespace's); returns how many."""
        ...

    def invalidate_secret(self, secret_id: str, version: int | None = None) -> int:
        """Remove the entries whose keys used ``secret_id`` (at ``version``, or any)."""
        ...
