"""The execution cache: key derivation and the entry store.

A key covers everything that can change what steps 1..i produce: the run's
namespace, the repository and its base commit's tree, the workspace, the
batch change's name and description, the steps as written, the image IDs
(content-addressed), the content of their files and mounted files, and for
each env entry its *provenance*: literals as written, secrets as (name,
namespace, id, version) — never a value nor a hash of one — and host values
as an HMAC under a key derived from the master keyring. Rotating or removing
a secret therefore changes the keys of the steps that use it and every later
step, and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from runner.env import PlannedVar

KEY_VERSION = 1


@dataclass(frozen=True)
class CacheEntry:
    """What step i left behind: enough to resume after it without running it."""

    diff: bytes  # from the baseline, after step i
    changes: Mapping[str, list[str]]  # step i's own changed files (template shape)
    accumulated: Mapping[str, list[str]]  # changes since the baseline
    outputs: Mapping[str, Any]
    stdout: str
    stderr: str
    skipped: bool = False

    def to_bytes(self) -> bytes:
        body = {
            "v": KEY_VERSION,
            "diff": self.diff.decode("latin-1"),
            "changes": dict(self.changes),
            "accumulated": dict(self.accumulated),
            "outputs": dict(self.outputs),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "skipped": self.skipped,
        }
        return json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        body = json.loads(data.decode("utf-8"))
        if body.get("v") != KEY_VERSION:
            raise ValueError("cache entry of another format version")
        return cls(
            diff=body["diff"].encode("latin-1"),
            changes=body["changes"],
            accumulated=body["accumulated"],
            outputs=body["outputs"],
            stdout=body["stdout"],
            stderr=body["stderr"],
            skipped=bool(body.get("skipped", False)),
        )


@dataclass(frozen=True)
class EntryInfo:
    key: str
    namespace: str
    size: int
    created_at: datetime
    last_used_at: datetime
    secret_refs: tuple[str, ...]  # "secret_id:version" of every secret the key used


class StepCache(Protocol):
    def get(self, key: str) -> CacheEntry | None: ...
    def put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None: ...


class MemoryStepCache:
    """An in-memory cache with the same behaviour as the SQL one (LRU by size)."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, EntryInfo]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            data = found[0]
        return CacheEntry.from_bytes(data)

    def put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None:
        data = entry.to_bytes()
        moment = datetime.now(UTC)
        info = EntryInfo(key, namespace, len(data), moment, moment, tuple(secret_refs))
        with self._lock:
            self._entries[key] = (data, info)
            self._entries.move_to_end(key)
            total = sum(len(d) for d, _ in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, (old, _) = self._entries.popitem(last=False)
                total -= len(old)

    def invalidate_secret(self, secret_id: str, version: int | None = None) -> int:
        prefix = f"{secret_id}:"
        with self._lock:
            doomed = [
                k
                for k, (_, info) in self._entries.items()
                if any(
                    r.startswith(prefix) and (version is None or r == f"{secret_id}:{version}")
                    for r in info.secret_refs
                )
            ]
            for k in doomed:
                del self._entries[k]
        return len(doomed)

    def keys(self) -> list[str]:
        return list(self._entries)


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class StepKeyInput:
    """What one step contributes to the keys of itself and every later step."""

    definition: Any  # the step as written
    image_id: str
    file_hashes: Mapping[str, str]  # container path -> sha256 of the content as written
    mount_hashes: Mapping[str, str]  # mountpoint -> sha256 of the mounted file(s)
    env: Sequence[PlannedVar]
    host_macs: Mapping[str, str] = field(default_factory=dict)  # name -> HMAC of the value

    def canonical(self) -> dict[str, Any]:
        env: list[dict[str, Any]] = []
        for var in self.env:
            prov = var.provenance
            if prov.source == "secret":
                env.append(
                    {
                        "name": var.name,
                        "secret": {
                            "name": var.secret.name,
                            "namespace": prov.namespace,
                            "id": prov.secret_id,
                            "version": prov.version,
                        },
                    }
                )
            elif prov.source == "host":
                env.append({"name": var.name, "host_hmac": self.host_macs.get(var.name, "")})
            else:
                env.append({"name": var.name, "literal": var.text})
        return {
            "definition": self.definition,
            "image": self.image_id,
            "files": dict(sorted(self.file_hashes.items())),
            "mounts": dict(sorted(self.mount_hashes.items())),
            "env": env,
        }

    def secret_refs(self) -> list[str]:
        return [
            f"{v.provenance.secret_id}:{v.provenance.version}"
            for v in self.env
            if v.provenance.source == "secret"
        ]


@dataclass(frozen=True)
class WorkspaceKeyInput:
    namespace: str
    repository: str
    base_tree: str
    path: str
    only_fetch_workspace: bool
    batch_change_name: str
    batch_change_description: str

    def canonical(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "repository": self.repository,
            "base_tree": self.base_tree,
            "path": self.path,
            "only_fetch_workspace": self.only_fetch_workspace,
            "batch_change": {
                "name": self.batch_change_name,
                "description": self.batch_change_description,
            },
        }


def step_keys(workspace: WorkspaceKeyInput, steps: Sequence[StepKeyInput]) -> list[str]:
    """The key of each step prefix 1..i, in order."""
    keys = []
    prefix: list[dict[str, Any]] = []
    for step in steps:
        prefix.append(step.canonical())
        body = {"v": KEY_VERSION, "workspace": workspace.canonical(), "steps": prefix}
        keys.append(hashlib.sha256(_canonical(body)).hexdigest())
    return keys


def prefix_secret_refs(steps: Sequence[StepKeyInput], upto: int) -> list[str]:
    """Secret refs used by steps 1..upto (the entries of step ``upto`` depend on all)."""
    refs: list[str] = []
    for step in steps[:upto]:
        for ref in step.secret_refs():
            if ref not in refs:
                refs.append(ref)
    return refs


def host_mac(key: bytes, name: str, value: str) -> str:
    """An HMAC of a host-passed value: stable across runs, useless to a reader."""
    return hmac.new(key, f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
