"""The job state machine (runner.queue.states), event by event, as one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runner.errors import LeaseLostError, UsageError
from runner.queue import states
from runner.queue.models import JOB_STATES, FailState, JobRecord, JobState, lease_hash

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MAX_ATTEMPTS = 3
MAX_RESETS = 3
STALL_S = 30.0
# A running job in the table last sent a heartbeat this long ago (stalled, as STALL_S < 60).
BEAT_AGE = timedelta(seconds=60)

# The caller's lease in every event that names one, and the one a claim issues.
LEASE = "lease-of-the-caller"
NEW_LEASE = "lease-a-claim-issues"

Event = Callable[[states.StoredJob], states.Move]
EVENTS: dict[str, Event] = {
    "claim": lambda job: states.claim(job, executor="ex2", token=NEW_LEASE, now=NOW),
    "heartbeat": lambda job: states.heartbeat(job, LEASE, now=NOW),
    "complete": lambda job: states.complete(job, LEASE, result={"status": "x"}, now=NOW),
    "fail failed": lambda job: states.fail(
        job, LEASE, state="failed", error="boom", max_attempts=MAX_ATTEMPTS, now=NOW
    ),
    "fail canceled": lambda job: states.fail(
        job, LEASE, state="canceled", error="stop", max_attempts=MAX_ATTEMPTS, now=NOW
    ),
    "fail errored": lambda job: states.fail(
        job, LEASE, state="errored", error="engine down", max_attempts=MAX_ATTEMPTS, now=NOW
    ),
    "cancel": lambda job: states.request_cancel(job, now=NOW),
    "stall": lambda job: states.stall(job, limit_s=STALL_S, max_resets=MAX_RESETS, now=NOW),
    "stall (beat still fresh)": lambda job: states.stall(
        job, limit_s=BEAT_AGE.total_seconds() * 2, max_resets=MAX_RESETS, now=NOW
    ),
}

LOST = "LeaseLostError"
SAME = "unchanged"

# Read a row as: a job in STATE with ATTEMPTS, RESETS and CANCEL requested, whose caller
# holds its current lease (HELD) or not, meets EVENT and becomes the right-hand side;
# LEASE says what happens to its lease. SAME: the event does nothing; LOST: it is refused.
# fmt: off
TABLE: list[tuple[Any, ...]] = [
    # state         att res cancel held   event                       next state    att res cancel lease
    ("queued",      0,  0,  False, False, "claim",                    "processing", 1,  0,  False, "new"),
    ("errored",     1,  0,  False, True,  "claim",                    "processing", 2,  0,  False, "new"),
    ("queued",      1,  1,  False, False, "claim",                    "processing", 2,  1,  False, "new"),
    ("processing",  1,  0,  False, True,  "claim",                    SAME),
    ("completed",   1,  0,  False, True,  "claim",                    SAME),
    ("failed",      1,  0,  False, True,  "claim",                    SAME),
    ("canceled",    0,  0,  False, False, "claim",                    SAME),

    ("processing",  1,  0,  False, True,  "heartbeat",                "processing", 1,  0,  False, "keep"),
    ("processing",  1,  0,  True,  True,  "heartbeat",                "processing", 1,  0,  True,  "keep"),
    ("processing",  1,  0,  False, False, "heartbeat",                LOST),
    ("queued",      1,  1,  False, False, "heartbeat",                LOST),
    ("errored",     1,  0,  False, True,  "heartbeat",                LOST),
    ("completed",   1,  0,  False, True,  "heartbeat",                LOST),
    ("failed",      1,  0,  False, True,  "heartbeat",                LOST),
    ("canceled",    1,  0,  False, True,  "heartbeat",                LOST),

    ("processing",  1,  0,  False, True,  "complete",                 "completed",  1,  0,  False, "keep"),
    ("processing",  1,  0,  True,  True,  "complete",                 "completed",  1,  0,  True,  "keep"),
    ("processing",  2,  0,  False, False, "complete",                 LOST),
    ("completed",   1,  0,  False, True,  "complete",                 SAME),
    ("completed",   1,  0,  False, False, "complete",                 LOST),
    ("queued",      1,  1,  False, False, "complete",                 LOST),
    ("errored",     1,  0,  False, True,  "complete",                 LOST),
    ("failed",      1,  0,  False, True,  "complete",                 LOST),
    ("canceled",    1,  0,  False, True,  "complete",                 LOST),

    ("processing",  1,  0,  False, True,  "fail failed",              "failed",     1,  0,  False, "keep"),
    ("processing",  1,  0,  False, False, "fail failed",              LOST),
    ("failed",      1,  0,  False, True,  "fail failed",              SAME),
    ("completed",   1,  0,  False, True,  "fail failed",              LOST),
    ("errored",     1,  0,  False, True,  "fail failed",              LOST),
    ("queued",      1,  1,  False, False, "fail failed",              LOST),
    ("canceled",    1,  0,  False, True,  "fail failed",              LOST),
    ("processing",  1,  0,  True,  True,  "fail canceled",            "canceled",   1,  0,  True,  "keep"),
    ("canceled",    1,  0,  True,  True,  "fail canceled",            SAME),
    ("failed",      1,  0,  False, True,  "fail canceled",            LOST),
    ("completed",   1,  0,  False, True,  "fail canceled",            LOST),
    ("errored",     1,  0,  False, True,  "fail canceled",            LOST),
    ("queued",      1,  1,  False, False, "fail canceled",            LOST),
    ("processing",  1,  0,  False, True,  "fail errored",             "errored",    1,  0,  False, "keep"),
    ("processing",  2,  0,  False, True,  "fail errored",             "errored",    2,  0,  False, "keep"),
    ("processing",  3,  0,  False, True,  "fail errored",             "failed",     3,  0,  False, "keep"),
    ("errored",     1,  0,  False, True,  "fail errored",             SAME),
    ("failed",      3,  0,  False, True,  "fail errored",             SAME),
    ("failed",      1,  0,  False, True,  "fail errored",             SAME),
    ("processing",  1,  0,  False, False, "fail errored",             LOST),
    ("completed",   1,  0,  False, True,  "fail errored",             LOST),
    ("canceled",    1,  0,  False, True,  "fail errored",             LOST),
    ("queued",      1,  1,  False, False, "fail errored",             LOST),

    ("queued",      0,  0,  False, False, "cancel",                   "canceled",   0,  0,  False, "keep"),
    ("errored",     1,  0,  False, False, "cancel",                   "canceled",   1,  0,  False, "keep"),
    ("processing",  1,  0,  False, False, "cancel",                   "processing", 1,  0,  True,  "keep"),
    ("processing",  1,  0,  True,  False, "cancel",                   SAME),
    ("completed",   1,  0,  False, False, "cancel",                   SAME),
    ("failed",      1,  0,  False, False, "cancel",                   SAME),
    ("canceled",    0,  0,  False, False, "cancel",                   SAME),

    ("processing",  1,  0,  False, False, "stall",                    "queued",     1,  1,  False, "drop"),
    ("processing",  3,  2,  False, False, "stall",                    "queued",     3,  3,  False, "drop"),
    ("processing",  4,  3,  False, False, "stall",                    "failed",     4,  3,  False, "keep"),
    ("processing",  1,  0,  True,  False, "stall",                    "canceled",   1,  0,  True,  "keep"),
    ("processing",  4,  3,  True,  False, "stall",                    "canceled",   4,  3,  True,  "keep"),
    ("processing",  1,  0,  False, False, "stall (beat still fresh)", SAME),
    ("queued",      1,  1,  False, False, "stall",                    SAME),
    ("errored",     1,  0,  False, False, "stall",                    SAME),
    ("completed",   1,  0,  False, False, "stall",                    SAME),
    ("failed",      1,  0,  False, False, "stall",                    SAME),
    ("canceled",    1,  0,  False, False, "stall",                    SAME),
]
# fmt: on


def job(
    state: JobState = "processing",
    *,
    attempts: int = 1,
    resets: int = 0,
    cancel: bool = False,
    error: str | None = None,
) -> JobRecord:
    claimed = attempts > 0
    return JobRecord(
        id="job_1",
        state=state,
        repository="github.com/acme/one",
        path="",
        branch="main",
        commit="0" * 40,
        namespace="user:alice",
        submitter="alice",
        submission_id="sub_1",
        executor="ex1" if claimed and state != "queued" else None,
        attempts=attempts,
        resets=resets,
        cancel_requested=cancel,
        error=error,
        created_at=NOW - timedelta(hours=1),
        started_at=NOW - BEAT_AGE if claimed else None,
        heartbeat_at=NOW - BEAT_AGE if claimed and state != "queued" else None,
        finished_at=NOW - BEAT_AGE if state in ("completed", "failed", "canceled") else None,
    )


def _label(row: tuple[Any, ...]) -> str:
    return f"{row[0]}-a{row[1]}-r{row[2]}{'-cancel' if row[3] else ''}-{row[5]}"


def stored(record: JobRecord, *, held: bool) -> states.StoredJob:
    """``record`` under the caller's lease (``held``) or under another executor's."""
    return states.StoredJob(record, lease_hash(LEASE if held else "lease-of-another"))


@pytest.mark.parametrize("row", TABLE, ids=[_label(r) for r in TABLE])
def test_transition(row: tuple[Any, ...]) -> None:
    state, attempts, resets, cancel, held, event, *after = row
    before = stored(job(state, attempts=attempts, resets=resets, cancel=cancel), held=held)
    decide = EVENTS[event]
    if after == [LOST]:
        with pytest.raises(LeaseLostError, match="no longer held under this lease"):
            decide(before)
        return
    move = decide(before)
    if after == [SAME]:
        assert not move.changed
        assert (move.record, move.lease_hash) == (before.record, before.lease_hash)
        return
    next_state, next_attempts, next_resets, next_cancel, lease = after
    assert move.changed
    assert move.record.state == next_state
    assert (move.record.attempts, move.record.resets) == (next_attempts, next_resets)
    assert move.record.cancel_requested is next_cancel
    expected_lease = {"keep": before.lease_hash, "new": lease_hash(NEW_LEASE), "drop": None}
    assert move.lease_hash == expected_lease[lease]
    # An end is stamped; a job that may still run is not.
    ended = next_state in ("completed", "failed", "canceled")
    assert move.record.finished_at == (NOW if ended else None)
    assert move.record.id == before.record.id
    assert move.record.created_at == before.record.created_at


def test_the_table_meets_every_state_with_every_event() -> None:
    met = {(row[0], row[5].split(" (")[0]) for row in TABLE}
    kinds = {name.split(" (")[0] for name in EVENTS}
    missing = [(s, e) for s in JOB_STATES for e in sorted(kinds) if (s, e) not in met]
    assert missing == []


def held(record: JobRecord) -> states.StoredJob:
    return stored(record, held=True)


def test_a_claim_starts_an_attempt() -> None:
    before = states.StoredJob(job("errored", attempts=1, error="engine down"), None)
    after = states.claim(before, executor="ex2", token=NEW_LEASE, now=NOW).record
    assert after.executor == "ex2"
    assert after.started_at == after.heartbeat_at == NOW
    assert after.finished_at is None
    assert after.error == "engine down"  # kept until the attempt ends


def test_heartbeat_stamps_the_time_only() -> None:
    before = held(job("processing", cancel=True))
    move = states.heartbeat(before, LEASE, now=NOW)
    assert move.record == replace(before.record, heartbeat_at=NOW)
    assert move.lease_hash == before.lease_hash


def test_complete_keeps_the_result_and_clears_the_error() -> None:
    before = held(job("processing", error="engine down; requeued"))
    after = states.complete(before, LEASE, result={"status": "changed"}, now=NOW).record
    assert after.result == {"status": "changed"} and after.error is None


def test_fail_messages() -> None:
    def end(attempts: int, state: FailState, error: str) -> str | None:
        before = held(job("processing", attempts=attempts))
        move = states.fail(before, LEASE, state=state, error=error, max_attempts=3, now=NOW)
        return move.record.error

    assert end(1, "errored", "x") == "x"
    assert end(3, "errored", "x") == "x (gave up after 3 attempts)"
    assert end(1, "failed", "exit 1") == "exit 1"


def test_cancel_while_waiting_says_so() -> None:
    after = states.request_cancel(states.StoredJob(job("queued", attempts=0)), now=NOW).record
    assert after.error == "canceled before an executor claimed it"


def test_stall_messages_and_requeue() -> None:
    def stall(record: JobRecord) -> JobRecord:
        return states.stall(held(record), limit_s=30, max_resets=3, now=NOW).record

    requeued = stall(job("processing"))
    assert requeued.error == "executor ex1 sent no heartbeat for 30 s; requeued"
    assert requeued.executor is None and requeued.heartbeat_at is None
    assert stall(job("processing", resets=3)).error == (
        "executor ex1 sent no heartbeat for 30 s; the job was already reset 3 times, "
        "so it is not retried"
    )
    assert stall(job("processing", cancel=True)).error == (
        "canceled; executor ex1 sent no heartbeat for 30 s"
    )


def test_stalled_is_strictly_older_than_the_limit() -> None:
    running = job("processing")
    assert states.stalled(running, limit_s=59.999, now=NOW)
    assert not states.stalled(running, limit_s=60, now=NOW)
    assert not states.stalled(job("queued"), limit_s=0, now=NOW)


def test_holds_compares_the_lease_with_its_hash() -> None:
    record = job("processing")
    assert states.holds(states.StoredJob(record, lease_hash("tok")), "tok")
    assert not states.holds(states.StoredJob(record, lease_hash("tok")), "other")
    assert not states.holds(states.StoredJob(record, None), "tok")
    assert not states.holds(states.StoredJob(record, lease_hash("tok")), None)


def test_logs_and_steps_need_the_job_held() -> None:
    states.require_held(held(job("processing")), LEASE)
    refused: list[tuple[JobState, bool]] = [
        ("processing", False),
        ("completed", True),
        ("errored", True),
    ]
    for state, is_held in refused:
        with pytest.raises(LeaseLostError):
            states.require_held(stored(job(state), held=is_held), LEASE)


def test_fail_state_accepts_only_the_end_states_an_executor_may_report() -> None:
    assert [states.fail_state(s) for s in ("failed", "errored", "canceled")] == [
        "failed",
        "errored",
        "canceled",
    ]
    with pytest.raises(UsageError, match="unknown end state 'completed'"):
        states.fail_state("completed")
