"""The job store: one table of jobs on SQLite or PostgreSQL, the same SQL on both.

``JobStore`` is the seam; ``SqlJobStore`` implements it on ``runner.db`` and
``runner.testing.queue.MemoryJobStore`` in memory (one contract suite runs on
all three). What an event does to a job is decided by ``runner.queue.states``;
a store only reads the job, asks, and writes the answer back, and ``JobEvents``
does the asking for the events both stores handle alike.

Every change is one write transaction that reads the job row locked (``BEGIN
IMMEDIATE`` on SQLite, where writers take turns; ``FOR UPDATE`` on
PostgreSQL), so the decision is made on the row as it stands. A claim picks
its row with ``SKIP LOCKED`` on PostgreSQL (concurrent claimers pass over
each other's rows) from the namespace served least recently, so one
namespace's hundred jobs cannot starve another's one.
"""

from __future__ import annotations

import builtins
import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from typing import Any, Protocol, TypeVar

from runner.clock import SYSTEM_CLOCK, Clock
from runner.db import Database, Transaction, db_time, parse_db_time
from runner.errors import BusyError, JobNotFoundError, LeaseLostError, StoreError
from runner.migrations import Migration, register
from runner.queue import routing, schema, stamp, states
from runner.queue.memo import Memo
from runner.queue.models import (
    CLAIMABLE_STATES,
    FailState,
    HeartbeatAnswer,
    JobRecord,
    Lease,
    LogChunk,
    NewJob,
    StepRecord,
    Submission,
    lease_hash,
    new_id,
    new_lease,
)

MAX_LOG_PAGE = 1000
# Submissions whose bundle a store keeps for their claims.
BUNDLES_KEPT = 256
# Claimed jobs whose identity a store keeps for their completion (see _IDENTITY).
IDENTITIES_KEPT = 4096
T = TypeVar("T")


class JobStore(Protocol):
    def add_submission(self, submission: Submission, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Store a submission and queue its jobs, in order, in one transaction."""
        ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def get_submission(self, submission_id: str) -> Submission | None: ...

    def payload(self, job_id: str) -> Mapping[str, Any]: ...

    def list(
        self, *, namespaces: Collection[str] | None = None, limit: int = 1000
    ) -> builtins.list[JobRecord]:
        """The newest ``limit`` jobs (of ``namespaces`` when given), oldest first."""
        ...

    def claim(self, executor: str, labels: Sequence[str] = ()) -> Lease | None:
        """The next job whose required labels are all in ``labels``, fairly across
        namespaces, now ``processing`` under a new lease."""
        ...

    def note_executor(self, executor: str, labels: Sequence[str]) -> None:
        """Remember that ``executor`` with these labels is alive now."""
        ...

    def live_labels(self, *, within_s: float) -> builtins.list[tuple[str, ...]]:
        """The label sets of executors seen within the last ``within_s`` seconds."""
        ...

    def heartbeat(self, executor: str, leases: Mapping[str, str]) -> HeartbeatAnswer:
        """Stamp the jobs held under these leases; say which to cancel or drop."""
        ...

    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int:
        """Store ``(seq, text)`` chunks, skipping seqs already stored; returns how many were new."""
        ...

    def logs(self, job_id: str, *, after: int = 0, limit: int = 500) -> builtins.list[LogChunk]: ...

    def record_step(
        self, job_id: str, lease: str, *, step: int, status: str, exit_code: int | None
    ) -> None: ...

    def steps(self, job_id: str) -> builtins.list[StepRecord]: ...

    def complete(self, job_id: str, lease: str, result: Mapping[str, Any]) -> JobRecord:
        """Mark completed with its result. Repeating the same call is harmless."""
        ...

    def fail(
        self, job_id: str, lease: str, *, state: FailState, error: str, max_attempts: int
    ) -> JobRecord:
        """End (``failed``, ``canceled``) or send back (``errored``, until ``max_attempts``)."""
        ...

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a waiting job at once; ask the executor of a running one to stop."""
        ...

    def reset_stalled(self, *, stall_limit_s: float, max_resets: int) -> builtins.list[JobRecord]:
        """Requeue ``processing`` jobs without a heartbeat for ``stall_limit_s``; fail them
        once they were reset ``max_resets`` times."""
        ...


def not_found(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job {job_id}", hint="see `runner jobs list` for the ids")


Decide = Callable[[states.StoredJob], states.Move]
# A claimed job with its payload, its submission's bundle and the claim stamp the
# store read with it (``runner.queue.stamp``; None: the store keeps none).
Claimed = tuple[JobRecord, Mapping[str, Any], Mapping[str, Any], int | None]


class JobEvents(ABC):
    """The events every job store handles alike: a store supplies the time and a way
    to apply a decision to one job at once; ``runner.queue.states`` decides."""

    @abstractmethod
    def _now(self) -> datetime: ...

    @abstractmethod
    def _change(self, job_id: str, decide: Decide) -> JobRecord:
        """Apply ``decide`` to the job as stored, store the move, return the record."""

    @abstractmethod
    def _claim_next(
        self, decide: Decide, *, executor: str, token: str, labels: Sequence[str]
    ) -> Claimed | None:
        """Apply ``decide`` (a claim by ``executor`` under ``token``) to the next job
        these labels may run, fairly across namespaces."""

    def claim(self, executor: str, labels: Sequence[str] = ()) -> Lease | None:
        token = new_lease()
        claimed = self._claim_next(
            # Only a store that decides on records calls it (the SQL store's UPDATE does not).
            lambda job: states.claim(job, executor=executor, token=token, now=self._now()),
            executor=executor,
            token=token,
            labels=labels,
        )
        if claimed is None:
            return None
        job, payload, bundle, read = claimed
        return Lease(
            job=job, token=token, attempt=job.attempts, payload=payload, bundle=bundle, stamp=read
        )

    def heartbeat(self, executor: str, leases: Mapping[str, str]) -> HeartbeatAnswer:
        now = self._now()
        cancel: list[str] = []
        lost: list[str] = []
        for job_id, lease in sorted(leases.items()):
            try:
                record = self._change(job_id, partial(states.heartbeat, lease=lease, now=now))
            except (JobNotFoundError, LeaseLostError):
                lost.append(job_id)
                continue
            if record.cancel_requested:
                cancel.append(job_id)
        return HeartbeatAnswer(cancel=tuple(cancel), lost=tuple(lost))

    def complete(self, job_id: str, lease: str, result: Mapping[str, Any]) -> JobRecord:
        now = self._now()
        return self._change(job_id, lambda job: states.complete(job, lease, result=result, now=now))

    def fail(
        self, job_id: str, lease: str, *, state: FailState, error: str, max_attempts: int
    ) -> JobRecord:
        now = self._now()
        return self._change(
            job_id,
            lambda job: states.fail(
                job, lease, state=state, error=error, max_attempts=max_attempts, now=now
            ),
        )

    def request_cancel(self, job_id: str) -> JobRecord:
        now = self._now()
        return self._change(job_id, lambda job: states.request_cancel(job, now=now))


# Rows and records ---------------------------------------------------------------------------


def _opt_time(text: str | None) -> datetime | None:
    return parse_db_time(text) if text else None


def _db_opt_time(moment: datetime | None) -> str | None:
    return db_time(moment) if moment is not None else None


def _at_db_precision(moment: datetime) -> datetime:
    # A record handed back without reading its row must equal the row read later: the
    # stored text keeps every microsecond, so only the zone can differ (a text round
    # trip here cost two of a claim's microseconds, twice a cycle).
    return moment if moment.tzinfo is UTC else parse_db_time(db_time(moment))


def _opt_json(text: str | None) -> Any:
    return json.loads(text) if text else None


def _db_opt_json(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    # pydantic_core writes a result in a fifth of json.dumps' time, and every job's
    # completion writes one (issue 21); what it cannot write in UTF-8 (a lone
    # surrogate an executor sent escaped) goes through json.dumps as before.
    try:
        text: str = _pydantic_core().to_json(value).decode()
    except ValueError:
        return json.dumps(value)
    return text


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]
_TIME: Codec = (_opt_time, _db_opt_time)
# How a JobRecord field is read from its column and written back, where that is not
# as it is; one table serves both directions. ``commit`` is a keyword in SQL.
_CODECS: dict[str, Codec] = {
    "cancel_requested": (bool, int),
    "created_at": _TIME,
    "started_at": _TIME,
    "heartbeat_at": _TIME,
    "finished_at": _TIME,
    "result": (_opt_json, _db_opt_json),
    "labels": (routing.decode, routing.encode),
}
_COLUMN = {"commit": "commit_sha"}
_FIELDS = tuple(f.name for f in fields(JobRecord))
# What an event may change; a move writes them all back.
_STATE_FIELDS = (
    "state",
    "executor",
    "attempts",
    "resets",
    "cancel_requested",
    "error",
    "result",
    "started_at",
    "heartbeat_at",
    "finished_at",
)
_JOB_COLUMNS = ", ".join(f"j.{_COLUMN.get(name, name)}" for name in _FIELDS) + ", j.lease_hash"
_STATE_COLUMNS = ", ".join(f"{name} = ?" for name in _STATE_FIELDS)
_INSERT_COLUMNS = ", ".join(_COLUMN.get(name, name) for name in _FIELDS)


# Each field's column and decoder (None: as stored), worked out once: a claim and a
# completion each read a record.
_READ = tuple(
    (name, _COLUMN.get(name, name), _CODECS[name][0] if name in _CODECS else None)
    for name in _FIELDS
)


def _job(row: Mapping[str, Any]) -> JobRecord:
    # The record's fields set directly: a frozen dataclass's __init__ sets each of its
    # 21 fields through object.__setattr__, 4 of a claim's 7 µs of decoding (issue 21).
    # JobRecord has no __post_init__ and no slots; its own tests compare both ways.
    record: JobRecord = object.__new__(JobRecord)
    record.__dict__.update(
        {name: row[col] if dec is None else dec(row[col]) for name, col, dec in _READ}
    )
    return record


def _stored(row: Mapping[str, Any]) -> states.StoredJob:
    return states.StoredJob(_job(row), row["lease_hash"])


def _value(name: str, value: Any) -> Any:
    return _CODECS[name][1](value) if name in _CODECS else value


def _values(job: JobRecord, names: Sequence[str]) -> list[Any]:
    return [_value(name, getattr(job, name)) for name in names]


def _sets(fields_: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``col = ?, …`` and its values for fields decided by ``runner.queue.states``."""
    text, encoders = _set_plan(tuple(fields_))
    # Every encoder writes None as NULL.
    values = [
        v if enc is None or v is None else enc(v)
        for v, enc in zip(fields_.values(), encoders, strict=True)
    ]
    return text, values


@lru_cache(maxsize=32)
def _set_plan(names: tuple[str, ...]) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]]:
    """The SET list of these fields and each one's encoder (None: written as it is),
    worked out once per set of names: a claim and a completion each write one."""
    text = ", ".join(f"{_COLUMN.get(n, n)} = ?" for n in names)
    return text, tuple(_CODECS[n][1] if n in _CODECS else None for n in names)


# What no event changes once a job is queued: every move writes only _STATE_FIELDS back.
_IDENTITY = tuple(name for name in _FIELDS if name not in _STATE_FIELDS)


@lru_cache(maxsize=16)
def _read_back(
    written: tuple[str, ...], identity: bool
) -> tuple[tuple[str, ...], str, tuple[tuple[int, Callable[[Any], Any]], ...]]:
    """What an UPDATE writing ``written`` must read back to make the job's record: the
    state fields it leaves as they were (and the job's identity when ``identity``);
    their RETURNING list, and the decoders of those that have one, by position.

    The claim and the completion read rows as tuples and decode only these: reading
    the whole row as a dict and decoding every column (its times parsed back into
    the moment the UPDATE just wrote) was a fifth of a cycle's Python (issue 21).
    """
    names = (_IDENTITY if identity else ()) + tuple(
        name for name in _STATE_FIELDS if name not in written
    )
    columns = ", ".join(_COLUMN.get(name, name) for name in names)
    decoders = tuple((i, _CODECS[name][0]) for i, name in enumerate(names) if name in _CODECS)
    return names, columns, decoders


def _written_record(
    read: tuple[str, ...],
    decoders: tuple[tuple[int, Callable[[Any], Any]], ...],
    row: Sequence[Any],
    written: Mapping[str, Any],
    identity: Mapping[str, Any] | None = None,
) -> JobRecord:
    """The job's record after an UPDATE: ``identity`` (unless ``read`` has it), the
    ``read`` fields as ``row`` returned them (first in it), the ``written`` ones as
    decided. What a move writes is already at the stored precision (``_now``)."""
    values = list(row[: len(read)])
    for i, decode in decoders:
        values[i] = decode(values[i])
    fields_ = dict(identity) if identity is not None else {}
    fields_.update(zip(read, values, strict=True))
    fields_.update(written)
    record: JobRecord = object.__new__(JobRecord)  # as in _job
    record.__dict__.update(fields_)
    return record


_CLAIMABLE = ", ".join(f"'{s}'" for s in CLAIMABLE_STATES)
_NEXT_TURN = "(SELECT COALESCE(MAX(last_claim), 0) + 1 FROM runner_job_fairness)"
# As migration 375 wrote it; kept as it was, for a new database's migrations.
_TAKE_TURN_375 = (
    "INSERT INTO runner_job_fairness (namespace, last_claim) {source}"
    " ON CONFLICT (namespace) DO UPDATE SET last_claim = excluded.last_claim"
)
# A namespace that alone holds the latest turn (above 0) is last in the order already,
# and claiming again leaves it there: its row is left as it is. Runs of claims in one
# namespace (one big batch) then write nothing here: two pages fewer in each claim's
# commit on SQLite, a tenth of its SQL (issue 21), and no dead row per claim on
# PostgreSQL. A tie (two PostgreSQL claims that read the same MAX) still moves it.
_TAKE_TURN = (
    _TAKE_TURN_375  # noqa: S608
    + " WHERE runner_job_fairness.last_claim <> excluded.last_claim - 1"
    " OR runner_job_fairness.last_claim = 0"
    " OR EXISTS (SELECT 1 FROM runner_job_fairness o"
    " WHERE o.last_claim = runner_job_fairness.last_claim"
    " AND o.namespace <> runner_job_fairness.namespace)"
)
_CLAIM_TURN_TRIGGER = (
    "CREATE TRIGGER runner_jobs_claim_turn AFTER UPDATE OF state ON runner_jobs"
    " WHEN NEW.state = 'processing' AND OLD.state <> 'processing' BEGIN {take}; END;\n"
)
# SQLite has no data-modifying CTE: a trigger takes the namespace's turn inside the
# claim's own UPDATE, so the claim is one statement there too, with no BEGIN IMMEDIATE
# transaction around two (a third of a claim's cost on SQLite, issue 21). A job enters
# `processing` only by a claim. PostgreSQL's claim takes the turn in a CTE.
TURN_TRIGGER = Migration(
    375,
    "queue: a claim takes its namespace's turn in the same statement",
    {
        "sqlite": _CLAIM_TURN_TRIGGER.format(
            take=_TAKE_TURN_375.format(source=f"VALUES (NEW.namespace, {_NEXT_TURN})")
        ),
        "postgresql": "SELECT 1;",
    },
)
register(TURN_TRIGGER)
KEPT_TURNS = Migration(
    392,
    "queue: a claim in the namespace that alone has the latest turn leaves the turns as they are",
    {
        "sqlite": "DROP TRIGGER runner_jobs_claim_turn;\n"
        + _CLAIM_TURN_TRIGGER.format(
            take=_TAKE_TURN.format(source=f"VALUES (NEW.namespace, {_NEXT_TURN})")
        ),
        "postgresql": "SELECT 1;",  # its claim's CTE is written with _TAKE_TURN
    },
)
register(KEPT_TURNS)
# A claim walks namespaces by their turn and takes the first job of the first one with a
# job these labels may run: a few index probes. It sorted every claimable job by its
# namespace's turn before, which made a claim's cost grow with the queue (0.8 ms of
# PostgreSQL's time per claim with 300 jobs queued, issue 21). So each namespace has its
# row from its first submission on (``arrived``, the queue's seq then, orders those not
# served yet as their oldest jobs did), and the claimable jobs an index of their own.
FAIR_TURNS = Migration(
    391,
    "queue: a turn row per namespace from its first job, claimable jobs indexed",
    "ALTER TABLE runner_job_fairness ADD COLUMN arrived BIGINT NOT NULL DEFAULT 0;\n"  # noqa: S608
    "CREATE INDEX runner_job_fairness_turn ON runner_job_fairness (last_claim, arrived);\n"
    "CREATE INDEX runner_jobs_claimable ON runner_jobs (namespace, seq)"
    f" WHERE state IN ({_CLAIMABLE});\n"
    "INSERT INTO runner_job_fairness (namespace, last_claim, arrived)"
    " SELECT namespace, 0, MIN(seq) FROM runner_jobs"
    f" WHERE state IN ({_CLAIMABLE}) GROUP BY namespace"
    " ON CONFLICT (namespace) DO NOTHING;\n",
)
register(FAIR_TURNS)
# On PostgreSQL the claim's first job of a namespace is ordered by ``seq + 0``, which
# only this index gives (the primary key gives ``seq``), and the claim is planned with
# sorting disabled (``runner.db.UNSORTED_OPTIONS``): that index's scan is the one plan
# left. Planned from statistics, the claim walked the primary key past every job done
# or sorted every queued job, as stale statistics led it (issue 21). SQLite plans
# without statistics and keeps its index.
CLAIM_ORDER = Migration(
    393,
    "queue: on PostgreSQL, claimable jobs indexed in the one order a claim asks for",
    {
        "sqlite": "SELECT 1;",
        "postgresql": "DROP INDEX runner_jobs_claimable;\n"
        "CREATE INDEX runner_jobs_claim_order ON runner_jobs (namespace, (seq + 0))"
        f" WHERE state IN ({_CLAIMABLE});\n",
    },
)
register(CLAIM_ORDER)


def _first_claimable(where: str, order: str = "j.seq") -> str:
    """The seq of namespace ``f``'s first job these labels may run (``where`` on ``j``)."""
    return (
        "SELECT j.seq FROM runner_jobs j WHERE j.namespace = f.namespace"  # noqa: S608
        f" AND j.state IN ({_CLAIMABLE}) AND {where} ORDER BY {order} LIMIT 1"
    )


@lru_cache(maxsize=64)
def _claim_sql(dialect: str, sets: str, where: str, returning: str) -> str:
    """The claiming statement; it takes the namespace's turn too (see TURN_TRIGGER).
    It returns ``returning``, then the job's payload and the claim stamp."""
    if dialect == "postgresql":
        # Concurrent claimers pass over each other's rows (SKIP LOCKED).
        pick = (
            "SELECT c.seq FROM runner_job_fairness f CROSS JOIN LATERAL"  # noqa: S608
            f" ({_first_claimable(where, '(j.seq + 0)')} FOR UPDATE OF j SKIP LOCKED) c"
            " ORDER BY f.last_claim, f.arrived LIMIT 1"
        )
    else:
        pick = (
            f"SELECT ({_first_claimable(where)}) AS first_seq"  # noqa: S608
            " FROM runner_job_fairness f WHERE first_seq IS NOT NULL"
            " ORDER BY f.last_claim, f.arrived LIMIT 1"
        )
    update = (
        f"UPDATE runner_jobs SET {sets}, attempts = attempts + 1, lease_hash = ?"  # noqa: S608
        f" WHERE seq = ({pick}) AND state IN ({_CLAIMABLE})"
        f" RETURNING {returning}, payload, {stamp.STAMP_COLUMN}"
    )
    if dialect != "postgresql":
        return update
    taken = _TAKE_TURN.format(source=f"SELECT namespace, {_NEXT_TURN} FROM claimed")  # noqa: S608
    return f"WITH claimed AS ({update}), turn AS ({taken}) SELECT * FROM claimed"  # noqa: S608


@lru_cache(maxsize=1)
def _pydantic_core() -> Any:
    """pydantic_core, which reads a payload in half json.loads' time and writes a result
    in a fifth of json.dumps' (issue 21): imported by the server that claims (FastAPI
    has it loaded already), not by every command that opens the store; looked up once
    (an import statement in the claim cost a microsecond each time)."""
    import pydantic_core

    return pydantic_core


@lru_cache(maxsize=16)
def _complete_sql(sets: str, returning: str) -> str:
    """The usual completion: one conditional UPDATE (``SqlJobStore.complete``)."""
    return (
        f"UPDATE runner_jobs SET {sets} WHERE id = ? AND lease_hash = ?"  # noqa: S608
        f" AND state = 'processing' RETURNING {returning}"
    )


class SqlJobStore(JobEvents):
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._clock = clock
        db.migrate(
            (
                *schema.MIGRATIONS,
                *routing.MIGRATIONS,
                TURN_TRIGGER,
                FAIR_TURNS,
                *stamp.MIGRATIONS,
                KEPT_TURNS,
                CLAIM_ORDER,
            )
        )
        self._bundles: Memo[str, Mapping[str, Any]] = Memo(BUNDLES_KEPT)
        # The identity (_IDENTITY) of each job claimed here, until it completes.
        self._identities: dict[str, dict[str, Any]] = {}
        # When this process last wrote each executor's labels (see note_executor).
        self._noted: dict[str, tuple[tuple[str, ...], float]] = {}

    @property
    def db(self) -> Database:
        return self._db

    def _now(self) -> datetime:
        return _at_db_precision(self._clock.now())

    def _run(self, work: Callable[[Transaction], T]) -> T:
        return self._db.run(work, write=True, retry_on=(BusyError,))

    def _lock(self, *, skip_locked: bool = False) -> str:
        if self._db.dialect != "postgresql":
            return ""  # BEGIN IMMEDIATE already holds the database for this writer
        return " FOR UPDATE OF j SKIP LOCKED" if skip_locked else " FOR UPDATE OF j"

    def _row(self, tx: Transaction, job_id: str, *, lock: bool = False) -> dict[str, Any]:
        row = tx.one(
            f"SELECT {_JOB_COLUMNS} FROM runner_jobs j WHERE j.id = ?"  # noqa: S608
            + (self._lock() if lock else ""),
            [job_id],
        )
        if row is None:
            raise not_found(job_id)
        return row

    def _write(self, tx: Transaction, move: states.Move) -> JobRecord:
        """Write a move back (its row is locked by this transaction)."""
        if move.changed:
            tx.execute(
                f"UPDATE runner_jobs SET {_STATE_COLUMNS}, lease_hash = ? WHERE id = ?",  # noqa: S608
                [*_values(move.record, _STATE_FIELDS), move.lease_hash, move.record.id],
            )
        return move.record

    def _change(self, job_id: str, decide: Decide) -> JobRecord:
        def work(tx: Transaction) -> JobRecord:
            return self._write(tx, decide(_stored(self._row(tx, job_id, lock=True))))

        return self._run(work)

    # Submissions and reading -------------------------------------------------------------------

    def add_submission(self, submission: Submission, jobs: Sequence[NewJob]) -> list[JobRecord]:
        def work(tx: Transaction) -> list[JobRecord]:
            tx.execute(
                "INSERT INTO runner_submissions"
                " (id, namespace, submitter, spec_name, bundle, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    submission.id,
                    submission.namespace,
                    submission.submitter,
                    submission.spec_name,
                    json.dumps(submission.bundle),
                    db_time(submission.created_at),
                ],
            )
            stored = replace(submission, created_at=_at_db_precision(submission.created_at))
            # Each namespace's turn row, from its first job on (see FAIR_TURNS).
            for namespace in sorted({new.namespace for new in jobs}):
                tx.execute(
                    "INSERT INTO runner_job_fairness (namespace, last_claim, arrived)"
                    " VALUES (?, 0, (SELECT COALESCE(MAX(seq), 0) + 1 FROM runner_jobs))"
                    " ON CONFLICT (namespace) DO NOTHING",
                    [namespace],
                )
            records = []
            for new in jobs:
                job = JobRecord.queued(new_id("job"), new, stored)
                tx.execute(
                    f"INSERT INTO runner_jobs ({_INSERT_COLUMNS}, payload)"  # noqa: S608
                    f" VALUES ({', '.join('?' for _ in _FIELDS)}, ?)",
                    [*_values(job, _FIELDS), json.dumps(new.payload)],
                )
                for label in job.labels:
                    tx.execute(
                        "INSERT INTO runner_job_labels (job_id, label) VALUES (?, ?)",
                        [job.id, label],
                    )
                records.append(job)
            return records

        return self._run(work)

    def get(self, job_id: str) -> JobRecord | None:
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                f"SELECT {_JOB_COLUMNS} FROM runner_jobs j WHERE j.id = ?",  # noqa: S608
                [job_id],
            )
        return _job(row) if row is not None else None

    def get_submission(self, submission_id: str) -> Submission | None:
        with self._db.transaction(write=False) as tx:
            row = tx.one("SELECT * FROM runner_submissions WHERE id = ?", [submission_id])
        if row is None:
            return None
        return Submission(
            id=row["id"],
            namespace=row["namespace"],
            submitter=row["submitter"],
            spec_name=row["spec_name"],
            bundle=json.loads(row["bundle"]),
            created_at=parse_db_time(row["created_at"]),
        )

    def payload(self, job_id: str) -> Mapping[str, Any]:
        with self._db.transaction(write=False) as tx:
            text = tx.scalar("SELECT payload FROM runner_jobs WHERE id = ?", [job_id])
        if text is None:
            raise not_found(job_id)
        data: Mapping[str, Any] = json.loads(text)
        return data

    def list(
        self, *, namespaces: Collection[str] | None = None, limit: int = 1000
    ) -> builtins.list[JobRecord]:
        if namespaces is not None and not namespaces:
            return []
        where = ""
        params: builtins.list[Any] = []
        if namespaces is not None:
            where = f" WHERE j.namespace IN ({', '.join('?' for _ in namespaces)})"
            params.extend(sorted(namespaces))
        params.append(max(1, limit))
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT {_JOB_COLUMNS} FROM runner_jobs j{where}"  # noqa: S608
                " ORDER BY j.seq DESC LIMIT ?",
                params,
            )
        return [_job(r) for r in reversed(rows)]

    def count_by_state(self) -> dict[str, int]:
        """How many jobs are in each state (the ``runner_jobs`` gauge, read at scrape time)."""
        with self._db.transaction(write=False) as tx:
            rows = tx.all("SELECT state, COUNT(*) AS n FROM runner_jobs GROUP BY state")
        return {str(r["state"]): int(r["n"]) for r in rows}

    # Claims, logs, steps, the resetter (JobEvents handles the rest) ------------------------

    def _claim_next(
        self, decide: Decide, *, executor: str, token: str, labels: Sequence[str]
    ) -> Claimed | None:
        # One UPDATE picks the row, applies states.claimed_fields and returns the job with
        # its payload and bundle (``decide``, the same rule on a record, is the memory
        # store's) and takes the namespace's turn (a CTE, or SQLite's TURN_TRIGGER).
        written = states.claimed_fields(executor=executor, now=self._now())
        sets, set_params = _sets(written)
        read, returning, decoders = _read_back(tuple(written), True)
        where, label_params = routing.claim_filter(labels)
        update = _claim_sql(self._db.dialect, sets, where, returning)
        rows = self._db.once_tuples(
            update, [*set_params, lease_hash(token), *label_params], index_order=True
        )
        if not rows:
            return None
        row = rows[0]
        job = _written_record(read, decoders, row, written)
        self._keep_identity(job)
        payload, claim_stamp = row[len(read)], row[len(read) + 1]
        return (
            job,
            _pydantic_core().from_json(payload),
            self._bundle(job.submission_id),
            claim_stamp,
        )

    def _bundle(self, submission_id: str) -> Mapping[str, Any]:
        """A submission's bundle, read once per process (it never changes once stored).

        Not in the claim's RETURNING: SQLite scans every submission for a subquery
        there (no index in RETURNING), and the claim decoded the JSON each time.
        """

        def read() -> Mapping[str, Any]:
            rows = self._db.once(
                "SELECT bundle FROM runner_submissions WHERE id = ?", [submission_id]
            )
            if not rows:
                raise StoreError(
                    f"submission {submission_id} of a claimed job is missing",
                    hint="the database lost rows; restore it from a backup",
                )
            bundle: Mapping[str, Any] = json.loads(rows[0]["bundle"])
            return bundle

        return self._bundles.get(submission_id, read)

    # The executors' labels ------------------------------------------------------------------

    def note_executor(self, executor: str, labels: Sequence[str]) -> None:
        # Claims come many times a second; one write a second per executor is enough.
        key = tuple(labels)
        moment = self._clock.monotonic()
        last = self._noted.get(executor)
        if last is not None and last[0] == key and moment - last[1] < routing.NOTE_EVERY_S:
            return
        self._noted[executor] = (key, moment)
        self._db.once(
            "INSERT INTO runner_executor_labels (executor, labels, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (executor) DO UPDATE SET labels = excluded.labels,"
            " seen_at = excluded.seen_at",
            [executor, routing.encode(key), db_time(self._now())],
        )

    def live_labels(self, *, within_s: float) -> builtins.list[tuple[str, ...]]:
        since = db_time(self._now() - timedelta(seconds=within_s))
        rows = self._db.once(
            "SELECT DISTINCT labels FROM runner_executor_labels WHERE seen_at >= ?", [since]
        )
        return [routing.decode(r["labels"]) for r in rows]

    def _keep_identity(self, job: JobRecord) -> None:
        """Keep a claimed job's identity for its completion (popped there)."""
        kept = self._identities
        kept[job.id] = {name: getattr(job, name) for name in _IDENTITY}
        if len(kept) > IDENTITIES_KEPT:
            # The oldest claim (dicts keep their order): its job ended elsewhere, was
            # reset, or failed; its completion, if one comes, reads its identity back.
            # Another thread changing the dict meanwhile leaves it to the next claim.
            with contextlib.suppress(RuntimeError, StopIteration):
                kept.pop(next(iter(kept)), None)

    def complete(self, job_id: str, lease: str, result: Mapping[str, Any]) -> JobRecord:
        # The usual case in one conditional UPDATE: the job is processing under this
        # lease. Anything else (a retried call, a lost lease) is decided as every event.
        written = states.completed_fields(result=result, now=self._now())
        sets, params = _sets(written)
        # A job claimed here reads back 6 columns; one claimed elsewhere its identity too.
        identity = self._identities.pop(job_id, None)
        read, returning, decoders = _read_back(tuple(written), identity is None)
        rows = self._db.once_tuples(
            _complete_sql(sets, returning), [*params, job_id, lease_hash(lease)]
        )
        if rows:
            return _written_record(read, decoders, rows[0], written, identity)
        return super().complete(job_id, lease, result)

    def _held(self, tx: Transaction, job_id: str, lease: str) -> JobRecord:
        stored = _stored(self._row(tx, job_id))
        states.require_held(stored, lease)
        return stored.record

    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int:
        def work(tx: Transaction) -> int:
            job = self._held(tx, job_id, lease)
            now = db_time(self._now())
            added = 0
            for seq, text in chunks:
                added += tx.execute(
                    "INSERT INTO runner_job_logs (job_id, attempt, seq, body, created_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, attempt, seq) DO NOTHING",
                    [job_id, job.attempts, int(seq), text, now],
                )
            return added

        return self._run(work)

    def logs(self, job_id: str, *, after: int = 0, limit: int = 500) -> builtins.list[LogChunk]:
        with self._db.transaction(write=False) as tx:
            if tx.scalar("SELECT id FROM runner_jobs WHERE id = ?", [job_id]) is None:
                raise not_found(job_id)
            rows = tx.all(
                "SELECT id, attempt, seq, body, created_at FROM runner_job_logs"
                " WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                [job_id, after, max(1, min(limit, MAX_LOG_PAGE))],
            )
        return [
            LogChunk(
                cursor=int(r["id"]),
                attempt=int(r["attempt"]),
                seq=int(r["seq"]),
                text=r["body"],
                created_at=parse_db_time(r["created_at"]),
            )
            for r in rows
        ]

    def record_step(
        self, job_id: str, lease: str, *, step: int, status: str, exit_code: int | None
    ) -> None:
        def work(tx: Transaction) -> None:
            job = self._held(tx, job_id, lease)
            tx.execute(
                "INSERT INTO runner_job_steps (job_id, attempt, step, status, exit_code, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, attempt, step) DO UPDATE"
                " SET status = excluded.status, exit_code = excluded.exit_code, at = excluded.at",
                [job_id, job.attempts, step, status, exit_code, db_time(self._now())],
            )

        self._run(work)

    def steps(self, job_id: str) -> builtins.list[StepRecord]:
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT attempt, step, status, exit_code FROM runner_job_steps"
                " WHERE job_id = ? ORDER BY attempt, step",
                [job_id],
            )
        return [
            StepRecord(
                attempt=int(r["attempt"]),
                step=int(r["step"]),
                status=r["status"],
                exit_code=None if r["exit_code"] is None else int(r["exit_code"]),
            )
            for r in rows
        ]

    def reset_stalled(self, *, stall_limit_s: float, max_resets: int) -> builtins.list[JobRecord]:
        def work(tx: Transaction) -> builtins.list[JobRecord]:
            now = self._now()
            # The same test as states.stalled, in SQL so the index finds the rows.
            rows = tx.all(
                f"SELECT {_JOB_COLUMNS} FROM runner_jobs j"  # noqa: S608
                " WHERE j.state = 'processing' AND j.heartbeat_at < ?"
                " ORDER BY j.seq" + self._lock(skip_locked=True),
                [db_time(now - timedelta(seconds=stall_limit_s))],
            )
            moves = [
                states.stall(_stored(r), limit_s=stall_limit_s, max_resets=max_resets, now=now)
                for r in rows
            ]
            return [self._write(tx, m) for m in moves if m.changed]

        return self._run(work)
