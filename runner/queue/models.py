"""Value objects of the job queue. None of them holds a secret value.

A job is one workspace of one submitted batch spec. Its ``state`` follows the
conventions: ``queued`` → ``processing`` → ``completed`` / ``failed`` /
``canceled``; ``errored`` marks an infrastructure failure waiting to be
claimed again. A claim hands out a *lease*: a random token that every later
write of the executor must present, so a write from an executor presumed
dead (its job reset and claimed again since) is refused. ``runner.queue.states``
decides every change of state.
"""

from __future__ import annotations

import hashlib
import secrets as _random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, Literal, get_args

from runner.secrets.models import rfc3339

JobState = Literal["queued", "processing", "completed", "errored", "failed", "canceled"]
JOB_STATES: Final[tuple[str, ...]] = get_args(JobState)
TERMINAL_STATES: Final[frozenset[str]] = frozenset({"completed", "failed", "canceled"})
CLAIMABLE_STATES: Final[tuple[str, ...]] = ("queued", "errored")
# What an executor may report instead of completing.
FailState = Literal["failed", "errored", "canceled"]
FAIL_STATES: Final[tuple[str, ...]] = get_args(FailState)
# On every answer to a complete or fail that also claimed the next job, once the end is
# recorded: the state it recorded. An error in that answer is then the claim's.
ENDED_HEADER: Final = "Runner-Job-Ended"


def new_id(prefix: str) -> str:
    return f"{prefix}_{_random.token_hex(8)}"


def new_lease() -> str:
    return _random.token_urlsafe(24)


def lease_hash(lease: str) -> str:
    # Stored hashed: a database reader must not be able to write as the executor.
    return hashlib.sha256(lease.encode()).hexdigest()


_PLAIN: Final = frozenset({str, int, bool, float, type(None)})


def _json_value(value: Any) -> Any:
    if type(value) in _PLAIN:  # most fields: no isinstance checks (a claim answers with many)
        return value
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def fields_to_json(value: Any, *, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """A dataclass's fields in their order, as JSON values (times in RFC 3339)."""
    # A loop with the plain test inline, not a call per field: every claim over HTTP
    # answers with a record of 21 fields, and the calls were a tenth of its CPU.
    out: dict[str, Any] = {}
    for name in _field_names(type(value)):
        if name in leave_out:
            continue
        field_value = getattr(value, name)
        out[name] = field_value if type(field_value) in _PLAIN else _json_value(field_value)
    return out


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


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
    # Labels an executor must have to claim it (runner.queue.routing), sorted.
    labels: tuple[str, ...] = ()
    # The finished job this one runs again (`runner jobs retry`).
    retry_of: str | None = None


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    # In the order of its JSON form; what only a claim or an end sets starts unset.
    id: str
    state: JobState
    repository: str
    path: str
    branch: str
    commit: str
    namespace: str
    submitter: str
    submission_id: str
    labels: tuple[str, ...] = ()
    executor: str | None = None
    attempts: int = 0
    resets: int = 0
    cancel_requested: bool = False
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    retry_of: str | None = None
    result: Mapping[str, Any] | None = None

    @classmethod
    def queued(cls, job_id: str, new: NewJob, submission: Submission) -> JobRecord:
        """A job as ``add_submission`` stores it: ``new`` without its payload, unclaimed."""
        workspace = {f.name: getattr(new, f.name) for f in fields(new) if f.name != "payload"}
        return cls(
            id=job_id,
            state="queued",
            submission_id=submission.id,
            created_at=submission.created_at,
            **workspace,
        )

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_json(self, *, with_result: bool = False) -> dict[str, Any]:
        return fields_to_json(self, leave_out=() if with_result else ("result",))


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A claimed job: ``token`` must accompany every write until the job ends."""

    job: JobRecord
    token: str
    attempt: int
    payload: Mapping[str, Any]
    bundle: Mapping[str, Any]
    # The claim stamp read with the claim (``runner.queue.stamp``), or None.
    stamp: int | None = None

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
        return fields_to_json(self)


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    attempt: int
    step: int
    status: str
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)


@dataclass(frozen=True, kw_only=True)
class HeartbeatAnswer:
    """``cancel``: jobs a user canceled; ``lost``: jobs no longer held under that lease."""

    cancel: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)
