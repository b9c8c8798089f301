"""Cache keys: one per step prefix, covering everything that can change its result.

A key covers everything that can change what steps 1..i produce: the run's
namespace, the repository and its base commit's tree, the workspace, the
batch change's name and description, the steps as written, the image IDs
(content-addressed), the content of their files and mounted files, and for
each env entry its *provenance*: literals as written, secrets as (name,
namespace, id, version) and how they are delivered (``Delivery.cache_part``:
env, file or brokered for which hosts) — never a value nor a hash of one —
and host values and one-off local secrets as an HMAC under a key derived
from the master keyring. Rotating or removing a secret, or changing its
type, therefore changes the keys of the steps that use it and every later
step, and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.env import PlannedVar
from runner.records import Frozen

KEY_VERSION = 1


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class StepKeyInput(Frozen):
    """What one step contributes to the keys of itself and every later step."""

    definition: Any  # the step as written
    image_id: str
    file_hashes: Mapping[str, str]  # container path -> sha256 of the content as written
    mount_hashes: Mapping[str, str]  # mountpoint -> sha256 of the mounted file(s)
    env: Sequence[PlannedVar]
    host_macs: Mapping[str, str] = field(default_factory=dict)  # name -> HMAC of the value

    def __init__(
        self,
        definition: Any,
        image_id: str,
        file_hashes: Mapping[str, str],
        mount_hashes: Mapping[str, str],
        env: Sequence[PlannedVar],
        host_macs: Mapping[str, str] | None = None,
    ) -> None:
        self._fill(
            definition,
            image_id,
            file_hashes,
            mount_hashes,
            env,
            {} if host_macs is None else host_macs,
        )

    def canonical(self) -> dict[str, Any]:
        env: list[dict[str, Any]] = []
        for var in self.env:
            prov = var.provenance
            if prov.source == "local":  # a LocalRef: its MAC under the host's key
                env.append({"name": var.name, "local_hmac": var.secret.mac})
            elif var.secret is not None:  # provenance "secret" always carries its ref
                env.append(
                    {
                        "name": var.name,
                        "secret": {
                            "name": var.secret.name,
                            "namespace": prov.namespace,
                            "id": prov.secret_id,
                            "version": prov.version,
                            "delivery": var.delivery.cache_part(),
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


@dataclass(init=False, repr=False, eq=False)
class WorkspaceKeyInput(Frozen):
    """What a workspace adds to its steps' keys."""

    namespace: str
    repository: str
    base_tree: str
    path: str
    only_fetch_workspace: bool
    batch_change_name: str
    batch_change_description: str

    def __init__(
        self,
        namespace: str,
        repository: str,
        base_tree: str,
        path: str,
        only_fetch_workspace: bool,
        batch_change_name: str,
        batch_change_description: str,
    ) -> None:
        self._fill(
            namespace,
            repository,
            base_tree,
            path,
            only_fetch_workspace,
            batch_change_name,
            batch_change_description,
        )

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
