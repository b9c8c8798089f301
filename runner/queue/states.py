"""The job state machine: what each event does to a job, decided in one place.

Both job stores (``SqlJobStore`` and ``runner.testing.queue.MemoryJobStore``)
read a job as stored (its record and the hash of its current lease), ask one
of these pure functions for the job after the event, and write that back, so
no rule is written twice, not even whether a caller's lease still holds. The
functions know the time only as ``now`` and never touch a store.

::

    state       event                                  next state
    queued      claim                                  processing  attempts+1, new lease
    errored     claim                                  processing  attempts+1, new lease
    processing  heartbeat                              processing  heartbeat stamped
    processing  complete                               completed   result kept, error cleared
    processing  fail failed / canceled                 failed / canceled
    processing  fail errored, attempts < max_attempts  errored     claimed again later
    processing  fail errored, attempts ≥ max_attempts  failed      "gave up after N attempts"
    processing  stall, cancel requested                canceled
    processing  stall, resets ≥ max_resets             failed
    processing  stall                                  queued      resets+1, lease dropped
    queued      cancel                                 canceled
    errored     cancel                                 canceled
    processing  cancel                                 processing  cancel requested
    ended       cancel                                 unchanged
    an end      the complete / fail that reached it    unchanged   (a retried call)

A heartbeat, complete, fail, log or step write under a lease that is not the
job's current one, or for a job no longer ``processing`` (bar the retried
end above), raises ``LeaseLostError``. Any other event that does not apply
(claiming an ended job, stalling a fresh one) leaves the job unchanged.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, cast

from runner.errors import LeaseLostError, UsageError
from runner.queue.models import (
    CLAIMABLE_STATES,
    FAIL_STATES,
    TERMINAL_STATES,
    FailState,
    JobRecord,
    JobState,
    lease_hash,
)

CANCELED_WHILE_WAITING: Final = "canceled before an executor claimed it"


@dataclass(frozen=True)
class StoredJob:
    """A job as a store keeps it: its record and the hash of its current lease."""

    record: JobRecord
    lease_hash: str | None = None


@dataclass(frozen=True)
class Move(StoredJob):
    """The job after an event; ``changed`` is False when the event does nothing to it."""

    changed: bool = True


def _same(job: StoredJob) -> Move:
    return Move(job.record, job.lease_hash, changed=False)


def _moved(job: StoredJob, **changes: Any) -> Move:
    return Move(replace(job.record, **changes), job.lease_hash)


def _end(job: StoredJob, state: JobState, error: str | None, now: datetime, **more: Any) -> Move:
    # Every end stamps finished_at; errored waits for another claim, so it has none.
    finished = now if state in TERMINAL_STATES else None
    return _moved(job, state=state, error=error, finished_at=finished, **more)


def holds(job: StoredJob, lease: str | None) -> bool:
    """Whether ``lease`` is the job's current lease (compared in constant time)."""
    if job.lease_hash is None or lease is None:
        return False
    return hmac.compare_digest(job.lease_hash, lease_hash(lease))


def lease_lost(job_id: str) -> LeaseLostError:
    return LeaseLostError(
        f"job {job_id} is no longer held under this lease: it was reset, ended or claimed again",
        hint="stop working on it; the coordinator has handed it on or ended it",
    )


def fail_state(text: str) -> FailState:
    """An end state an executor may report, or ``UsageError``."""
    if text not in FAIL_STATES:
        raise UsageError(f"unknown end state {text!r}", hint=f"use one of {', '.join(FAIL_STATES)}")
    return cast(FailState, text)


# Events ----------------------------------------------------------------------------------------


def claimed_fields(*, executor: str, now: datetime) -> dict[str, Any]:
    """What a claim sets on a claimable job, besides ``attempts + 1`` and the new lease.

    ``SqlJobStore`` writes these in its one claiming ``UPDATE``; ``claim`` below
    applies them to a record, so the rule is written once.
    """
    return {
        "state": "processing",
        "executor": executor,
        "started_at": now,
        "heartbeat_at": now,
        "finished_at": None,
    }


def claim(job: StoredJob, *, executor: str, token: str, now: datetime) -> Move:
    """Start an attempt under the new lease ``token`` (only its hash is kept)."""
    record = job.record
    if record.state not in CLAIMABLE_STATES:
        return _same(job)
    started = replace(
        record, attempts=record.attempts + 1, **claimed_fields(executor=executor, now=now)
    )
    return Move(started, lease_hash(token))


def require_held(job: StoredJob, lease: str) -> None:
    """An executor's write (logs, step results) needs the job ``processing`` under its lease."""
    if not holds(job, lease) or job.record.state != "processing":
        raise lease_lost(job.record.id)


def heartbeat(job: StoredJob, lease: str, *, now: datetime) -> Move:
    """Stamp the job; ``move.record.cancel_requested`` tells the executor to stop."""
    require_held(job, lease)
    return _moved(job, heartbeat_at=now)


def _finish(job: StoredJob, lease: str, state: JobState) -> bool:
    """Whether to write the end ``state``: False for a retried call that already reached it."""
    held = holds(job, lease)
    if held and job.record.state == "processing":
        return True
    if held and job.record.state == state:
        return False
    raise lease_lost(job.record.id)


def completed_fields(*, result: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What completing a ``processing`` job held under its lease sets (``SqlJobStore``
    writes these in one conditional ``UPDATE``; anything else goes through ``complete``)."""
    return {"state": "completed", "error": None, "finished_at": now, "result": dict(result)}


def complete(job: StoredJob, lease: str, *, result: Mapping[str, Any], now: datetime) -> Move:
    if not _finish(job, lease, "completed"):
        return _same(job)
    return _moved(job, **completed_fields(result=result, now=now))


def gave_up(error: str, attempts: int) -> str:
    return f"{error} (gave up after {attempts} attempts)"


def fail(
    job: StoredJob,
    lease: str,
    *,
    state: FailState,
    error: str,
    max_attempts: int,
    now: datetime,
) -> Move:
    attempts = job.record.attempts
    final: JobState = state
    message = error
    if state == "errored" and attempts >= max_attempts:
        final = "failed"
        message = gave_up(error, attempts)
    if job.record.state == "failed" and state == "errored":
        final = "failed"  # a retried report after the job gave up
    if not _finish(job, lease, final):
        return _same(job)
    return _end(job, final, message, now)


def request_cancel(job: StoredJob, *, now: datetime) -> Move:
    """Cancel a waiting job at once; mark a running one for its executor to stop."""
    record = job.record
    if record.state in CLAIMABLE_STATES:
        return _end(job, "canceled", CANCELED_WHILE_WAITING, now)
    if record.state == "processing" and not record.cancel_requested:
        return _moved(job, cancel_requested=True)
    return _same(job)


def stalled_message(executor: str | None, limit_s: float) -> str:
    return f"executor {executor or '?'} sent no heartbeat for {limit_s:g} s"


def stalled(record: JobRecord, *, limit_s: float, now: datetime) -> bool:
    """Whether a running job's last heartbeat is older than ``limit_s``."""
    if record.state != "processing" or record.heartbeat_at is None:
        return False
    return record.heartbeat_at < now - timedelta(seconds=limit_s)


def stall(job: StoredJob, *, limit_s: float, max_resets: int, now: datetime) -> Move:
    """The resetter's verdict on a job whose executor went quiet for ``limit_s``."""
    record = job.record
    if not stalled(record, limit_s=limit_s, now=now):
        return _same(job)
    quiet = stalled_message(record.executor, limit_s)
    if record.cancel_requested:
        return _end(job, "canceled", f"canceled; {quiet}", now)
    if record.resets >= max_resets:
        message = f"{quiet}; the job was already reset {record.resets} times, so it is not retried"
        return _end(job, "failed", message, now)
    requeued = replace(
        record,
        state="queued",
        resets=record.resets + 1,
        executor=None,
        heartbeat_at=None,
        error=f"{quiet}; requeued",
    )
    return Move(requeued, None)
