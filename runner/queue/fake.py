"""In-memory job and token stores with the SQL stores' behaviour (for tests).

One contract suite runs against these and the SQL implementations, so they
claim fairly, fence stale leases and reset stalled jobs the same way.
"""

from __future__ import annotations

import builtins
import copy
import hmac
import itertools
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from runner.db import utcnow
from runner.namespaces import check_principal_name
from runner.queue.models import (
    CLAIMABLE_STATES,
    FailState,
    HeartbeatAnswer,
    JobRecord,
    JobState,
    Lease,
    LogChunk,
    NewJob,
    StepRecord,
    Submission,
    lease_hash,
    new_id,
    new_lease,
)
from runner.queue.store import (
    MAX_LOG_PAGE,
    Clock,
    gave_up,
    lease_lost,
    not_found,
    stalled_message,
    too_many_resets,
)
from runner.queue.tokens import (
    LAST_USED_GRANULARITY,
    TOKEN_PREFIX,
    TokenKind,
    TokenRecord,
    check_kind,
    hash_token,
    new_token,
    new_token_id,
)
from runner.queue.tokens import not_found as token_not_found


@dataclass
class _Job:
    seq: int
    record: JobRecord
    payload: Mapping[str, Any]
    lease_hash: str | None = None
    logs: dict[tuple[int, int], LogChunk] = field(default_factory=dict)
    steps: dict[tuple[int, int], StepRecord] = field(default_factory=dict)


class MemoryJobStore:
    """A ``JobStore`` in memory. Thread-safe; not shared between processes."""

    def __init__(self, *, clock: Clock = utcnow) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._submissions: dict[str, Submission] = {}
        self._fairness: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._cursor = itertools.count(1)

    def _job(self, job_id: str) -> _Job:
        found = self._jobs.get(job_id)
        if found is None:
            raise not_found(job_id)
        return found

    def _held(self, job_id: str, lease: str) -> _Job:
        job = self._job(job_id)
        if job.lease_hash != lease_hash(lease) or job.record.state != "processing":
            raise lease_lost(job_id)
        return job

    def _set(self, job: _Job, **changes: Any) -> JobRecord:
        job.record = replace(job.record, **changes)
        return job.record

    def add_submission(self, submission: Submission, jobs: Sequence[NewJob]) -> list[JobRecord]:
        with self._lock:
            self._submissions[submission.id] = copy.deepcopy(submission)
            out = []
            for new in jobs:
                record = JobRecord(
                    id=new_id("job"),
                    submission_id=submission.id,
                    namespace=new.namespace,
                    submitter=new.submitter,
                    state="queued",
                    repository=new.repository,
                    branch=new.branch,
                    commit=new.commit,
                    path=new.path,
                    executor=None,
                    attempts=0,
                    resets=0,
                    cancel_requested=False,
                    error=None,
                    created_at=submission.created_at,
                    started_at=None,
                    heartbeat_at=None,
                    finished_at=None,
                )
                self._jobs[record.id] = _Job(next(self._seq), record, copy.deepcopy(new.payload))
                out.append(record)
            return out

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            found = self._jobs.get(job_id)
            return found.record if found else None

    def get_submission(self, submission_id: str) -> Submission | None:
        with self._lock:
            return self._submissions.get(submission_id)

    def payload(self, job_id: str) -> Mapping[str, Any]:
        with self._lock:
            return copy.deepcopy(self._job(job_id).payload)

    def list(
        self, *, namespaces: Collection[str] | None = None, limit: int = 1000
    ) -> builtins.list[JobRecord]:
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.seq)
            chosen = [
                j.record for j in jobs if namespaces is None or j.record.namespace in namespaces
            ]
        return chosen[-max(1, limit) :]

    def claim(self, executor: str) -> Lease | None:
        with self._lock:
            waiting = [j for j in self._jobs.values() if j.record.state in CLAIMABLE_STATES]
            if not waiting:
                return None
            job = min(waiting, key=lambda j: (self._fairness.get(j.record.namespace, 0), j.seq))
            lease = new_lease()
            now = self._clock()
            job.lease_hash = lease_hash(lease)
            record = self._set(
                job,
                state="processing",
                executor=executor,
                attempts=job.record.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
            )
            self._fairness[record.namespace] = max(self._fairness.values(), default=0) + 1
            submission = self._submissions[record.submission_id]
            return Lease(
                job=record,
                token=lease,
                attempt=record.attempts,
                payload=copy.deepcopy(job.payload),
                bundle=copy.deepcopy(submission.bundle),
            )

    def heartbeat(self, executor: str, leases: Mapping[str, str]) -> HeartbeatAnswer:
        with self._lock:
            cancel: list[str] = []
            lost: list[str] = []
            for job_id, lease in sorted(leases.items()):
                job = self._jobs.get(job_id)
                if (
                    job is None
                    or job.lease_hash != lease_hash(lease)
                    or job.record.state != "processing"
                ):
                    lost.append(job_id)
                    continue
                self._set(job, heartbeat_at=self._clock())
                if job.record.cancel_requested:
                    cancel.append(job_id)
            return HeartbeatAnswer(cancel=tuple(cancel), lost=tuple(lost))

    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int:
        with self._lock:
            job = self._held(job_id, lease)
            added = 0
            for seq, text in chunks:
                key = (job.record.attempts, int(seq))
                if key in job.logs:
                    continue
                job.logs[key] = LogChunk(
                    cursor=next(self._cursor),
                    attempt=key[0],
                    seq=key[1],
                    text=text,
                    created_at=self._clock(),
                )
                added += 1
            return added

    def logs(self, job_id: str, *, after: int = 0, limit: int = 500) -> builtins.list[LogChunk]:
        with self._lock:
            job = self._job(job_id)
            chunks = sorted(
                (c for c in job.logs.values() if c.cursor > after), key=lambda c: c.cursor
            )
        return chunks[: max(1, min(limit, MAX_LOG_PAGE))]

    def record_step(
        self, job_id: str, lease: str, *, step: int, status: str, exit_code: int | None
    ) -> None:
        with self._lock:
            job = self._held(job_id, lease)
            attempt = job.record.attempts
            job.steps[(attempt, step)] = StepRecord(
                attempt=attempt, step=step, status=status, exit_code=exit_code
            )

    def steps(self, job_id: str) -> builtins.list[StepRecord]:
        with self._lock:
            job = self._jobs.get(job_id)
            return [job.steps[k] for k in sorted(job.steps)] if job else []

    def _repeat_or_lost(self, job: _Job, lease: str, state: str) -> bool:
        if job.lease_hash != lease_hash(lease):
            raise lease_lost(job.record.id)
        if job.record.state == "processing":
            return False
        if job.record.state == state:
            return True
        raise lease_lost(job.record.id)

    def complete(self, job_id: str, lease: str, result: Mapping[str, Any]) -> JobRecord:
        with self._lock:
            job = self._job(job_id)
            if self._repeat_or_lost(job, lease, "completed"):
                return job.record
            return self._set(
                job,
                state="completed",
                result=copy.deepcopy(dict(result)),
                error=None,
                finished_at=self._clock(),
            )

    def fail(
        self, job_id: str, lease: str, *, state: FailState, error: str, max_attempts: int
    ) -> JobRecord:
        with self._lock:
            job = self._job(job_id)
            final: JobState = state
            message = error
            if state == "errored" and job.record.attempts >= max_attempts:
                final = "failed"
                message = gave_up(error, job.record.attempts)
            if job.record.state == "failed" and state == "errored":
                final = "failed"
            if self._repeat_or_lost(job, lease, final):
                return job.record
            return self._set(
                job,
                state=final,
                error=message,
                finished_at=None if final == "errored" else self._clock(),
            )

    def request_cancel(self, job_id: str) -> JobRecord:
        with self._lock:
            job = self._job(job_id)
            if job.record.state in CLAIMABLE_STATES:
                return self._set(
                    job,
                    state="canceled",
                    finished_at=self._clock(),
                    error="canceled before an executor claimed it",
                )
            if job.record.state == "processing":
                return self._set(job, cancel_requested=True)
            return job.record

    def reset_stalled(self, *, stall_limit_s: float, max_resets: int) -> builtins.list[JobRecord]:
        with self._lock:
            now = self._clock()
            threshold = now - timedelta(seconds=stall_limit_s)
            changed = []
            for job in sorted(self._jobs.values(), key=lambda j: j.seq):
                rec = job.record
                beat = rec.heartbeat_at
                if rec.state != "processing" or beat is None or beat >= threshold:
                    continue
                if rec.cancel_requested:
                    msg = f"canceled; {stalled_message(rec.executor, stall_limit_s)}"
                    changed.append(self._set(job, state="canceled", finished_at=now, error=msg))
                elif rec.resets >= max_resets:
                    msg = too_many_resets(rec.executor, stall_limit_s, rec.resets)
                    changed.append(self._set(job, state="failed", finished_at=now, error=msg))
                else:
                    job.lease_hash = None
                    changed.append(
                        self._set(
                            job,
                            state="queued",
                            resets=rec.resets + 1,
                            executor=None,
                            heartbeat_at=None,
                            error=f"{stalled_message(rec.executor, stall_limit_s)}; requeued",
                        )
                    )
            return changed


@dataclass
class _Token:
    record: TokenRecord
    token_hash: str


class MemoryTokenStore:
    """A ``TokenStore`` in memory."""

    def __init__(self, *, clock: Clock = utcnow) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}

    def create(self, kind: TokenKind, owner: str) -> tuple[TokenRecord, str]:
        check_kind(kind)
        check_principal_name(owner, f"{kind} name")
        token = new_token()
        record = TokenRecord(id=new_token_id(), kind=kind, owner=owner, created_at=self._clock())
        with self._lock:
            self._tokens[record.id] = _Token(record, hash_token(token))
        return record, token

    def authenticate(self, token: str) -> TokenRecord | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        wanted = hash_token(token)
        with self._lock:
            for item in self._tokens.values():
                if item.record.revoked_at is None and hmac.compare_digest(item.token_hash, wanted):
                    now = self._clock()
                    last = item.record.last_used_at
                    if last is None or now - last >= LAST_USED_GRANULARITY:
                        item.record = replace(item.record, last_used_at=now)
                    return item.record
        return None

    def list(self) -> builtins.list[TokenRecord]:
        with self._lock:
            return sorted(
                (t.record for t in self._tokens.values()), key=lambda r: (r.created_at, r.id)
            )

    def revoke(self, token_id: str) -> TokenRecord:
        with self._lock:
            item = self._tokens.get(token_id)
            if item is None:
                raise token_not_found(token_id)
            if item.record.revoked_at is None:
                item.record = replace(item.record, revoked_at=self._clock())
            return item.record


class InProcessExecutorApi:
    """The executor API straight onto a ``Coordinator``, with the wire's JSON round trips.

    Executor tests run on it without HTTP; every answer is serialised and
    parsed as ``CoordinatorClient`` would.
    """

    def __init__(self, coordinator: Any, token: str) -> None:
        self._c = coordinator
        self._who = coordinator.authenticate(token)

    def claim(self, executor: str | None = None) -> Any:
        import json

        from runner.queue.client import Claim

        claimed = self._c.claim(self._who, executor=executor)
        if claimed is None:
            return None
        return Claim.from_json(json.loads(json.dumps(claimed.to_json())))

    def heartbeat(self, executor: str | None, leases: Mapping[str, str]) -> HeartbeatAnswer:
        answer: HeartbeatAnswer = self._c.heartbeat(self._who, executor=executor, leases=leases)
        return answer

    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int:
        added: int = self._c.append_logs(self._who, job_id, lease=lease, chunks=list(chunks))
        return added

    def record_step(
        self, job_id: str, lease: str, *, step: int, status: str, exit_code: int | None = None
    ) -> None:
        self._c.record_step(
            self._who, job_id, lease=lease, step=step, status=status, exit_code=exit_code
        )

    def complete(self, job_id: str, lease: str, result: Mapping[str, Any]) -> Mapping[str, Any]:
        import json

        record: JobRecord = self._c.complete(
            self._who, job_id, lease=lease, result=json.loads(json.dumps(dict(result)))
        )
        return record.to_json()

    def fail(self, job_id: str, lease: str, *, state: str, error: str) -> Mapping[str, Any]:
        record: JobRecord = self._c.fail(self._who, job_id, lease=lease, state=state, error=error)
        return record.to_json()

    def cache_get(self, key: str) -> Any:
        from runner.cache import CacheEntry

        data = self._c.cache_get(self._who, key)
        return CacheEntry.from_bytes(data) if data is not None else None

    def cache_put(
        self, key: str, entry: Any, *, namespace: str, secret_refs: Sequence[str]
    ) -> None:
        import base64

        self._c.cache_put(
            self._who,
            key,
            entry=base64.b64encode(entry.to_bytes()).decode("ascii"),
            namespace=namespace,
            secret_refs=secret_refs,
        )
