"""The job store: one table of jobs on SQLite or PostgreSQL, the same SQL on both.

``JobStore`` is the seam; ``SqlJobStore`` implements it on ``runner.db`` and
``runner.queue.fake.MemoryJobStore`` in memory (one contract suite runs on
all three).

Claiming is one write transaction: ``BEGIN IMMEDIATE`` on SQLite (writers
take turns), ``FOR UPDATE OF j SKIP LOCKED`` on PostgreSQL (concurrent
claimers pass over each other's rows). The next job comes from the namespace
served least recently, so one namespace's hundred jobs cannot starve
another's one. Every executor write names the job and its lease; a write
whose lease is not the job's current one raises ``LeaseLostError``.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from runner.db import BusyError, Database, Transaction, db_time, parse_db_time, utcnow
from runner.queue import schema
from runner.queue.models import (
    CLAIMABLE_STATES,
    FailState,
    HeartbeatAnswer,
    JobNotFoundError,
    JobRecord,
    JobState,
    Lease,
    LeaseLostError,
    LogChunk,
    NewJob,
    StepRecord,
    Submission,
    lease_hash,
    new_id,
    new_lease,
)

Clock = Callable[[], datetime]
MAX_LOG_PAGE = 1000


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

    def claim(self, executor: str) -> Lease | None:
        """The next job, fairly across namespaces, now ``processing`` under a new lease."""
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


# Shared by every implementation ------------------------------------------------


def not_found(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job {job_id}", hint="see `runner jobs list` for the ids")


def lease_lost(job_id: str) -> LeaseLostError:
    return LeaseLostError(
        f"job {job_id} is no longer held under this lease: it was reset, ended or claimed again",
        hint="stop working on it; the coordinator has handed it on or ended it",
    )


def gave_up(error: str, attempts: int) -> str:
    return f"{error} (gave up after {attempts} attempts)"


def stalled_message(executor: str | None, limit_s: float) -> str:
    return f"executor {executor or '?'} sent no heartbeat for {limit_s:g} s"


def too_many_resets(executor: str | None, limit_s: float, resets: int) -> str:
    return (
        f"{stalled_message(executor, limit_s)}; the job was already reset {resets} times, "
        "so it is not retried"
    )


# The SQL implementation ----------------------------------------------------------------------


def _opt_time(text: str | None) -> datetime | None:
    return parse_db_time(text) if text else None


def _job(row: Mapping[str, Any]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        submission_id=row["submission_id"],
        namespace=row["namespace"],
        submitter=row["submitter"],
        state=cast(JobState, row["state"]),
        repository=row["repository"],
        branch=row["branch"],
        commit=row["commit_sha"],
        path=row["path"],
        executor=row["executor"],
        attempts=int(row["attempts"]),
        resets=int(row["resets"]),
        cancel_requested=bool(row["cancel_requested"]),
        error=row["error"],
        created_at=parse_db_time(row["created_at"]),
        started_at=_opt_time(row["started_at"]),
        heartbeat_at=_opt_time(row["heartbeat_at"]),
        finished_at=_opt_time(row["finished_at"]),
        result=json.loads(row["result"]) if row["result"] else None,
    )


_JOB_COLUMNS = (
    "id, submission_id, namespace, submitter, state, repository, branch, commit_sha, path,"
    " executor, attempts, resets, cancel_requested, error, created_at, started_at,"
    " heartbeat_at, finished_at, result"
)


class SqlJobStore:
    def __init__(self, db: Database, *, clock: Clock = utcnow) -> None:
        self._db = db
        self._clock = clock
        db.migrate(schema.MIGRATIONS)

    @property
    def db(self) -> Database:
        return self._db

    def _now(self) -> str:
        return db_time(self._clock())

    def _run(self, work: Callable[[Transaction], Any], *, write: bool = True) -> Any:
        return self._db.run(work, write=write, retry_on=(BusyError,))

    def _skip_locked(self) -> str:
        return " FOR UPDATE OF j SKIP LOCKED" if self._db.dialect == "postgresql" else ""

    def _row(self, tx: Transaction, job_id: str) -> dict[str, Any]:
        row = tx.one(
            f"SELECT {_JOB_COLUMNS}, lease_hash FROM runner_jobs WHERE id = ?",  # noqa: S608
            [job_id],
        )
        if row is None:
            raise not_found(job_id)
        return row

    def _held(self, tx: Transaction, job_id: str, lease: str) -> dict[str, Any]:
        row = self._row(tx, job_id)
        if row["lease_hash"] != lease_hash(lease) or row["state"] != "processing":
            raise lease_lost(job_id)
        return row

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
            ids = []
            for job in jobs:
                job_id = new_id("job")
                ids.append(job_id)
                tx.execute(
                    "INSERT INTO runner_jobs (id, submission_id, namespace, submitter, state,"
                    " repository, branch, commit_sha, path, payload, created_at)"
                    " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                    [
                        job_id,
                        submission.id,
                        job.namespace,
                        job.submitter,
                        job.repository,
                        job.branch,
                        job.commit,
                        job.path,
                        json.dumps(job.payload),
                        db_time(submission.created_at),
                    ],
                )
            return [_job(self._row(tx, i)) for i in ids]

        result: list[JobRecord] = self._run(work)
        return result

    def get(self, job_id: str) -> JobRecord | None:
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                f"SELECT {_JOB_COLUMNS} FROM runner_jobs WHERE id = ?",  # noqa: S608
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
            where = f" WHERE namespace IN ({', '.join('?' for _ in namespaces)})"
            params.extend(sorted(namespaces))
        params.append(max(1, limit))
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT {_JOB_COLUMNS} FROM runner_jobs{where}"  # noqa: S608
                " ORDER BY seq DESC LIMIT ?",
                params,
            )
        return [_job(r) for r in reversed(rows)]

    # Claiming ----------------------------------------------------------------------

    def claim(self, executor: str) -> Lease | None:
        lease = new_lease()
        states = ", ".join(f"'{s}'" for s in CLAIMABLE_STATES)

        def work(tx: Transaction) -> Lease | None:
            picked = tx.one(
                "SELECT j.id, j.namespace FROM runner_jobs j"  # noqa: S608
                " LEFT JOIN runner_job_fairness f ON f.namespace = j.namespace"
                f" WHERE j.state IN ({states})"
                " ORDER BY COALESCE(f.last_claim, 0), j.seq LIMIT 1" + self._skip_locked(),
            )
            if picked is None:
                return None
            now = self._now()
            changed = tx.execute(
                "UPDATE runner_jobs SET state = 'processing', executor = ?, lease_hash = ?,"  # noqa: S608
                " attempts = attempts + 1, started_at = ?, heartbeat_at = ?, finished_at = NULL"
                f" WHERE id = ? AND state IN ({states})",
                [executor, lease_hash(lease), now, now, picked["id"]],
            )
            if not changed:
                return None
            tx.execute(
                "INSERT INTO runner_job_fairness (namespace, last_claim) VALUES"
                " (?, (SELECT COALESCE(MAX(last_claim), 0) + 1 FROM runner_job_fairness))"
                " ON CONFLICT (namespace) DO UPDATE SET last_claim = excluded.last_claim",
                [picked["namespace"]],
            )
            row = self._row(tx, picked["id"])
            extra = tx.one(
                "SELECT j.payload, s.bundle FROM runner_jobs j"
                " JOIN runner_submissions s ON s.id = j.submission_id WHERE j.id = ?",
                [picked["id"]],
            )
            assert extra is not None
            job = _job(row)
            return Lease(
                job=job,
                token=lease,
                attempt=job.attempts,
                payload=json.loads(extra["payload"]),
                bundle=json.loads(extra["bundle"]),
            )

        result: Lease | None = self._run(work)
        return result

    def heartbeat(self, executor: str, leases: Mapping[str, str]) -> HeartbeatAnswer:
        def work(tx: Transaction) -> HeartbeatAnswer:
            now = self._now()
            cancel: list[str] = []
            lost: list[str] = []
            for job_id, lease in sorted(leases.items()):
                changed = tx.execute(
                    "UPDATE runner_jobs SET heartbeat_at = ?"
                    " WHERE id = ? AND lease_hash = ? AND state = 'processing'",
                    [now, job_id, lease_hash(lease)],
                )
                if not changed:
                    lost.append(job_id)
                    continue
                if tx.scalar("SELECT cancel_requested FROM runner_jobs WHERE id = ?", [job_id]):
                    cancel.append(job_id)
            return HeartbeatAnswer(cancel=tuple(cancel), lost=tuple(lost))

        result: HeartbeatAnswer = self._run(work)
        return result

    # Executor writes ----------------------------------------------------------------------------

    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int:
        def work(tx: Transaction) -> int:
            row = self._held(tx, job_id, lease)
            now = self._now()
            added = 0
            for seq, text in chunks:
                added += tx.execute(
                    "INSERT INTO runner_job_logs (job_id, attempt, seq, body, created_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, attempt, seq) DO NOTHING",
                    [job_id, row["attempts"], int(seq), text, now],
                )
            return added

        result: int = self._run(work)
        return result

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
            row = self._held(tx, job_id, lease)
            tx.execute(
                "INSERT INTO runner_job_steps (job_id, attempt, step, status, exit_code, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, attempt, step) DO UPDATE"
                " SET status = excluded.status, exit_code = excluded.exit_code, at = excluded.at",
                [job_id, row["attempts"], step, status, exit_code, self._now()],
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

    def _repeat_or_lost(self, row: Mapping[str, Any], job_id: str, lease: str, state: str) -> bool:
        """True when this exact end was already written under this lease (a retried call)."""
        if row["lease_hash"] != lease_hash(lease):
            raise lease_lost(job_id)
        if row["state"] == "processing":
            return False
        if row["state"] == state:
            return True
        raise lease_lost(job_id)

    def complete(self, job_id: str, lease: str, result: Mapping[str, Any]) -> JobRecord:
        def work(tx: Transaction) -> JobRecord:
            row = self._row(tx, job_id)
            if not self._repeat_or_lost(row, job_id, lease, "completed"):
                tx.execute(
                    "UPDATE runner_jobs SET state = 'completed', result = ?, error = NULL,"
                    " finished_at = ? WHERE id = ? AND lease_hash = ? AND state = 'processing'",
                    [json.dumps(result), self._now(), job_id, lease_hash(lease)],
                )
            return _job(self._row(tx, job_id))

        record: JobRecord = self._run(work)
        return record

    def fail(
        self, job_id: str, lease: str, *, state: FailState, error: str, max_attempts: int
    ) -> JobRecord:
        def work(tx: Transaction) -> JobRecord:
            row = self._row(tx, job_id)
            final: str = state
            message = error
            if state == "errored" and int(row["attempts"]) >= max_attempts:
                final = "failed"
                message = gave_up(error, int(row["attempts"]))
            if row["state"] == "failed" and state == "errored":
                final = "failed"  # a retried report after giving up
            if not self._repeat_or_lost(row, job_id, lease, final):
                finished = None if final == "errored" else self._now()
                tx.execute(
                    "UPDATE runner_jobs SET state = ?, error = ?, finished_at = ?"
                    " WHERE id = ? AND lease_hash = ? AND state = 'processing'",
                    [final, message, finished, job_id, lease_hash(lease)],
                )
            return _job(self._row(tx, job_id))

        record: JobRecord = self._run(work)
        return record

    def request_cancel(self, job_id: str) -> JobRecord:
        states = ", ".join(f"'{s}'" for s in CLAIMABLE_STATES)

        def work(tx: Transaction) -> JobRecord:
            self._row(tx, job_id)
            now = self._now()
            tx.execute(
                "UPDATE runner_jobs SET state = 'canceled', finished_at = ?,"  # noqa: S608
                " error = 'canceled before an executor claimed it'"
                f" WHERE id = ? AND state IN ({states})",
                [now, job_id],
            )
            tx.execute(
                "UPDATE runner_jobs SET cancel_requested = 1 WHERE id = ? AND state = 'processing'",
                [job_id],
            )
            return _job(self._row(tx, job_id))

        record: JobRecord = self._run(work)
        return record

    def reset_stalled(self, *, stall_limit_s: float, max_resets: int) -> builtins.list[JobRecord]:
        def work(tx: Transaction) -> builtins.list[JobRecord]:
            now = self._clock()
            threshold = db_time(now - timedelta(seconds=stall_limit_s))
            rows = tx.all(
                "SELECT j.id, j.executor, j.resets, j.cancel_requested, j.lease_hash"  # noqa: S608
                " FROM runner_jobs j WHERE j.state = 'processing' AND j.heartbeat_at < ?"
                " ORDER BY j.seq" + self._skip_locked(),
                [threshold],
            )
            changed: list[str] = []
            for row in rows:
                guard = [row["id"], row["lease_hash"]]
                if row["cancel_requested"]:
                    done = tx.execute(
                        "UPDATE runner_jobs SET state = 'canceled', finished_at = ?, error = ?"
                        " WHERE id = ? AND lease_hash = ? AND state = 'processing'",
                        [
                            db_time(now),
                            f"canceled; {stalled_message(row['executor'], stall_limit_s)}",
                            *guard,
                        ],
                    )
                elif int(row["resets"]) >= max_resets:
                    done = tx.execute(
                        "UPDATE runner_jobs SET state = 'failed', finished_at = ?, error = ?"
                        " WHERE id = ? AND lease_hash = ? AND state = 'processing'",
                        [
                            db_time(now),
                            too_many_resets(row["executor"], stall_limit_s, int(row["resets"])),
                            *guard,
                        ],
                    )
                else:
                    done = tx.execute(
                        "UPDATE runner_jobs SET state = 'queued', resets = resets + 1,"
                        " lease_hash = NULL, executor = NULL, heartbeat_at = NULL, error = ?"
                        " WHERE id = ? AND lease_hash = ? AND state = 'processing'",
                        [
                            f"{stalled_message(row['executor'], stall_limit_s)}; requeued",
                            *guard,
                        ],
                    )
                if done:
                    changed.append(row["id"])
            return [_job(self._row(tx, i)) for i in changed]

        result: builtins.list[JobRecord] = self._run(work)
        return result
