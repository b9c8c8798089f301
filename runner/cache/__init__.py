"""The execution cache: a step's result, found again by a key over all it depended on.

- ``keys``: key derivation, one key per step prefix (no secret value, no hash of one).
- ``entry``: what is stored (``CacheEntry``), the ``StepCache`` seam and its rule for failures.
- ``sql``: the cache in the state database (SQLite or PostgreSQL), and its upkeep
  when a secret changes.
- ``remote``: an executor's cache, the coordinator's through its API.

``runner.testing.MemoryStepCache`` is the in-memory one tests use. The names
below are what the step loop and the coordinator import; ``sql`` and
``remote`` are imported by their own users, so that this package stays light.
"""

from runner.cache.entry import CacheEntry, EntryInfo, ManagedStepCache, StepCache, parse_ref
from runner.cache.keys import (
    KEY_VERSION,
    StepKeyInput,
    WorkspaceKeyInput,
    host_mac,
    prefix_secret_refs,
    sha256_hex,
    step_keys,
)

__all__ = [
    "KEY_VERSION",
    "CacheEntry",
    "EntryInfo",
    "ManagedStepCache",
    "StepCache",
    "StepKeyInput",
    "WorkspaceKeyInput",
    "host_mac",
    "parse_ref",
    "prefix_secret_refs",
    "sha256_hex",
    "step_keys",
]
