"""Value objects of the job queue. None of them holds a secret value.

A job is one workspace of one submitted batch spec. Its ``state`` follows the
conventions: ``queued`` → ``processing`` → ``completed`` / ``failed`` /
``canceled``; ``errored`` marks an infrastructure failure waiting to be
claimed again. A claim hands out a *lease*: a random token that every later
write of the executor must present, so a write from an executor presumed
dead (its job reset and claimed again since) is refused.
"""

from __future__ import annotations

import hashlib
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from runner.errors import CoordinatorError
from runner.secrets.models import rfc3339

JobState = Literal["queued", "processing", "completed", "errored", "failed", "canceled"]
JOB_STATES: Final[tuple[str, ...]] = (
    "queued",
    "processing",
    "completed",
    "errored",
    "failed",
    "canceled",
)
TERMINAL_STATES: Final[frozenset[str]] = frozenset({"completed", "failed", "canceled"})
CLAIMABLE_STATES: Final[tuple[str, ...]] = ("queued", "errored")
# What an executor may report instead of completing.
FailState = Literal["failed", "errored", "canceled"]
FAIL_STATES: Final[tuple[str, ...]] = ("failed", "errored", "canceled")


class LeaseLostError(CoordinatorError):
    """The job is no longer held under this lease: reset, canceled, or claimed again."""


class JobNotFoundError(CoordinatorError):
    pass


def new_id(prefix: str) -> str:
    return f"{prefix}_{_random.token_hex(8)}"


def new_lease() -> str:
    return _random.token_urlsafe(24)


def lease_hash(lease: str) -> str:
    # Stored hashed: a database reader must not be able to write as the executor.
    return hashlib.sha256(lease.encode()).hexdigest()


def _time(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


@dataclass(frozen=True, kw_only=True)
class Submission:
    """One `runner submit`: the bundle is stored once for all of its jobs."""

    id: str
    namespace: str
    submitter: str
    spec_name: str
    bundle: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class NewJob:
    namespace: str
    submitter: str
    repository: str
    branch: str
    commit: str
    path: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    id: str
    submission_id: str
    namespace: str
    submitter: str
    state: JobState
    repository: str
    branch: str
    commit: str
    path: str
    executor: str | None
    attempts: int
    resets: int
    cancel_requested: bool
    error: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    result: Mapping[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_json(self, *, with_result: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "repository": self.repository,
            "path": self.path,
            "branch": self.branch,
            "commit": self.commit,
            "namespace": self.namespace,
            "submitter": self.submitter,
            "submission_id": self.submission_id,
            "executor": self.executor,
            "attempts": self.attempts,
            "resets": self.resets,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "created_at": _time(self.created_at),
            "started_at": _time(self.started_at),
            "heartbeat_at": _time(self.heartbeat_at),
            "finished_at": _time(self.finished_at),
        }
        if with_result:
            data["result"] = dict(self.result) if self.result is not None else None
        return data


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A claimed job: ``token`` must accompany every write until the job ends."""

    job: JobRecord
    token: str
    attempt: int
    payload: Mapping[str, Any]
    bundle: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"Lease(job={self.job.id!r}, attempt={self.attempt})"


@dataclass(frozen=True, kw_only=True)
class LogChunk:
    """Part of a job's log: JSON lines as the executor sent them, already redacted.

    ``cursor`` orders chunks across attempts; ``seq`` numbers them within one
    attempt, so a chunk sent twice is stored once.
    """

    cursor: int
    attempt: int
    seq: int
    text: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "attempt": self.attempt,
            "seq": self.seq,
            "text": self.text,
            "created_at": rfc3339(self.created_at),
        }


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    attempt: int
    step: int
    status: str
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "step": self.step,
            "status": self.status,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True, kw_only=True)
class HeartbeatAnswer:
    """``cancel``: jobs a user canceled; ``lost``: jobs no longer held under that lease."""

    cancel: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"cancel": list(self.cancel), "lost": list(self.lost)}
