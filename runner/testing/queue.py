"""In-memory job and token stores with the SQL stores' behaviour, and the executor API
straight onto a coordinator, for tests and for users building on runner.

One contract suite (tests/test_queue_store.py) runs against these stores and
the SQL ones. Every change of a job's state is decided by
``runner.queue.states``, as in ``SqlJobStore``; what is left here is storage.
"""

from __future__ import annotations

import base64
import builtins
import copy
import hmac
import itertools
import json
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from runner.cache import CacheEntry
from runner.clock import SYSTEM_CLOCK, Clock
from runner.errors import RunnerError
from runner.namespaces import check_principal_name
from runner.queue import states
from runner.queue.models import (
    CLAIMABLE_STATES,
    HeartbeatAnswer,
    JobRecord,
    LogChunk,
    NewJob,
    StepRecord,
    Submission,
    new_id,
)
from runner.queue.routing import can_run
from runner.queue.store import MAX_LOG_PAGE, Claimed, Decide, JobEvents, not_found
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
from runner.secrets.delivery import UsesJson

if TYPE_CHECKING:
    from runner.queue.client import Claim, JobEnd, NextJob
    from runner.queue.service import Coordinator


@dataclass
class _Job:
    seq: int
    stored: states.StoredJob
    payload: Mapping[str, Any]
    logs: dict[tuple[int, int], LogChunk] = field(default_factory=dict)
    steps: dict[tuple[int, int], StepRecord] = field(default_factory=dict)

    @property
    def record(self) -> JobRecord:
        return self.stored.record

    def apply(self, move: states.Move) -> JobRecord:
        if move.changed:
            self.stored = states.StoredJob(move.record, move.lease_hash)
        return move.record


class MemoryJobStore(JobEvents):
    """A ``JobStore`` in memory. Thread-safe; not shared between processes."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._submissions: dict[str, Submission] = {}
        self._fairness: dict[str, int] = {}
        self._executors: dict[str, tuple[tuple[str, ...], datetime]] = {}
        self._seq = itertools.count(1)
        self._cursor = itertools.count(1)

    def _job(self, job_id: str) -> _Job:
        found = self._jobs.get(job_id)
        if found is None:
            raise not_found(job_id)
        return found

    def _held(self, job_id: str, lease: str) -> _Job:
        job = self._job(job_id)
        states.require_held(job.stored, lease)
        return job

    def _now(self) -> datetime:
        return self._clock.now()

    def _change(self, job_id: str, decide: Decide) -> JobRecord:
        with self._lock:
            job = self._job(job_id)
            return job.apply(decide(job.stored))

    def _claim_next(
        self, decide: Decide, *, executor: str, token: str, labels: Sequence[str]
    ) -> Claimed | None:
        with self._lock:
            waiting = [
                j
                for j in self._jobs.values()
                if j.record.state in CLAIMABLE_STATES and can_run(labels, j.record.labels)
            ]
            if not waiting:
                return None
            job = min(waiting, key=lambda j: (self._fairness.get(j.record.namespace, 0), j.seq))
            move = decide(job.stored)
            if not move.changed:
                return None
            record = job.apply(move)
            self._fairness[record.namespace] = max(self._fairness.values(), default=0) + 1
            bundle = self._submissions[record.submission_id].bundle
            # No claim stamp: the coordinator checks every claim of this store afresh.
            return record, copy.deepcopy(job.payload), copy.deepcopy(bundle), None

    def note_executor(self, executor: str, labels: Sequence[str]) -> None:
        with self._lock:
            self._executors[executor] = (tuple(labels), self._now())

    def live_labels(self, *, within_s: float) -> builtins.list[tuple[str, ...]]:
        since = self._now() - timedelta(seconds=within_s)
        with self._lock:
            return sorted({labels for labels, seen in self._executors.values() if seen >= since})

    # Submissions and reading -------------------------------------------------------------------

    def add_submission(self, submission: Submission, jobs: Sequence[NewJob]) -> list[JobRecord]:
        with self._lock:
            self._submissions[submission.id] = copy.deepcopy(submission)
            out = []
            for new in jobs:
                record = JobRecord.queued(new_id("job"), new, submission)
                stored = states.StoredJob(record)
                self._jobs[record.id] = _Job(next(self._seq), stored, copy.deepcopy(new.payload))
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

    # Logs, steps, the resetter (JobEvents handles the other events) ------------------------

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
                    created_at=self._now(),
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

    def complete(self, job_id: str, lease: str, result: Mapping[str, Any]) -> JobRecord:
        # A copy, as a database would keep: the caller may change its dict afterwards.
        return super().complete(job_id, lease, copy.deepcopy(dict(result)))

    def reset_stalled(self, *, stall_limit_s: float, max_resets: int) -> builtins.list[JobRecord]:
        with self._lock:
            now = self._now()
            changed = []
            for job in sorted(self._jobs.values(), key=lambda j: j.seq):
                move = states.stall(
                    job.stored, limit_s=stall_limit_s, max_resets=max_resets, now=now
                )
                if move.changed:
                    changed.append(job.apply(move))
            return changed


@dataclass
class _Token:
    record: TokenRecord
    token_hash: str


class MemoryTokenStore:
    """A ``TokenStore`` in memory."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}

    def create(self, kind: TokenKind, owner: str) -> tuple[TokenRecord, str]:
        check_kind(kind)
        check_principal_name(owner, f"{kind} name")
        token = new_token()
        record = TokenRecord(
            id=new_token_id(), kind=kind, owner=owner, created_at=self._clock.now()
        )
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
                    now = self._clock.now()
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

    def live(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            item = self._tokens.get(token_id)
            return item.record if item and item.record.revoked_at is None else None

    def revoke(self, token_id: str) -> TokenRecord:
        with self._lock:
            item = self._tokens.get(token_id)
            if item is None:
                raise token_not_found(token_id)
            if item.record.revoked_at is None:
                item.record = replace(item.record, revoked_at=self._clock.now())
            return item.record


def _wire(data: Any) -> Any:
    """``data`` after a JSON round trip, as it would cross HTTP."""
    return json.loads(json.dumps(data))


class InProcessExecutorApi:
    """The executor API straight onto a ``Coordinator``, with the wire's JSON round trips.

    Executor tests run on it without HTTP; every answer is serialised and
    parsed as ``CoordinatorClient`` would.
    """

    def __init__(self, coordinator: Coordinator, token: str) -> None:
        self._c = coordinator
        self._who = coordinator.authenticate(token)

    def claim(self, executor: str | None = None, labels: Sequence[str] = ()) -> Claim | None:
        # The client imports httpx; only a test that claims needs it.
        from runner.queue.client import Claim

        claimed = self._c.claim(self._who, executor=executor, labels=labels)
        if claimed is None:
            return None
        return Claim.from_json(_wire(claimed.to_json()))

    def heartbeat(
        self,
        executor: str | None,
        leases: Mapping[str, str],
        info: Mapping[str, Any] | None = None,
    ) -> HeartbeatAnswer:
        return self._c.heartbeat(
            self._who, executor=executor, leases=leases, info=_wire(info) if info else None
        )

    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int:
        return self._c.append_logs(self._who, job_id, lease=lease, chunks=list(chunks))

    def record_step(
        self, job_id: str, lease: str, *, step: int, status: str, exit_code: int | None = None
    ) -> None:
        self._c.record_step(
            self._who, job_id, lease=lease, step=step, status=status, exit_code=exit_code
        )

    def complete(
        self, job_id: str, lease: str, result: Mapping[str, Any], *, brokered: UsesJson = ()
    ) -> Mapping[str, Any]:
        record = self._c.complete(
            self._who, job_id, lease=lease, result=_wire(dict(result)), brokered=brokered
        )
        return record.to_json()

    def fail(
        self, job_id: str, lease: str, *, state: str, error: str, brokered: UsesJson = ()
    ) -> Mapping[str, Any]:
        record = self._c.fail(
            self._who, job_id, lease=lease, state=state, error=error, brokered=brokered
        )
        return record.to_json()

    def end_and_claim(
        self, job_id: str, lease: str, end: JobEnd, executor: str | None, labels: Sequence[str]
    ) -> NextJob:
        """As the coordinator's API does it: the end, then a claim whose error does not
        undo the end."""
        from runner.queue.client import NextJob

        if end.state == "completed":
            self.complete(job_id, lease, end.result, brokered=end.brokered)
        else:
            self.fail(job_id, lease, state=end.state, error=end.error, brokered=end.brokered)
        try:
            return NextJob(claim=self.claim(executor, labels))
        except RunnerError as exc:
            return NextJob(refused=exc)

    def cache_get(self, key: str) -> CacheEntry | None:
        data = self._c.cache_get(self._who, key)
        return CacheEntry.from_bytes(data) if data is not None else None

    def cache_put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None:
        self._c.cache_put(
            self._who,
            key,
            entry=base64.b64encode(entry.to_bytes()).decode("ascii"),
            namespace=namespace,
            secret_refs=secret_refs,
        )
