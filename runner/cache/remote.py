"""The execution cache of an executor: the coordinator's, over its API.

Executors keep no cache of their own; the coordinator holds the entries
(and drops them when a secret changes). A coordinator that does not answer
makes a miss or a ``CacheError``, by the rule of ``runner.cache.entry``, and
never fails the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from runner.cache.entry import CacheEntry
from runner.errors import CacheError, RunnerError
from runner.log import get_logger

_log = get_logger("runner.cache")


class CacheApi(Protocol):
    """The cache calls of the coordinator's client (``CoordinatorClient`` has them)."""

    def cache_get(self, key: str) -> CacheEntry | None: ...

    def cache_put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None: ...


class CoordinatorStepCache:
    """``StepCache`` through a coordinator."""

    def __init__(self, api: CacheApi) -> None:
        self._api = api

    def get(self, key: str) -> CacheEntry | None:
        try:
            return self._api.cache_get(key)
        except RunnerError as exc:  # CacheError (an entry that does not decode) among them
            error = exc.message
        except (ValueError, KeyError, TypeError) as exc:  # an answer that is not an entry
            error = type(exc).__name__
        _log.warning("coordinator cache unreadable; running the step", key=key[:12], error=error)
        return None

    def put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None:
        try:
            self._api.cache_put(key, entry, namespace=namespace, secret_refs=secret_refs)
        except CacheError:
            raise
        except RunnerError as exc:
            raise CacheError(
                f"the coordinator did not store the cache entry {key[:12]}: {exc.message}",
                hint=exc.hint,
            ) from exc
