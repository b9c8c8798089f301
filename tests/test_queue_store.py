"""The job store contract, on memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runner.db import Database, connect
from runner.errors import JobNotFoundError, LeaseLostError
from runner.queue.models import FailState, NewJob, Submission, new_id
from runner.queue.store import JobStore, SqlJobStore
from runner.queue.tokens import SqlTokenStore, TokenStore, hash_token
from runner.testing.queue import MemoryJobStore, MemoryTokenStore
from tests.test_queue_support import ManualClock, fresh_postgres_database

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
]

Opener = Callable[[], Database]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Opener | None]]:
    kind: str = request.param
    if kind == "memory":
        yield kind, None
        return
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'queue.db'}"
        yield kind, lambda: connect(url)
        return
    base: str = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(base) as url:
        opened: list[Database] = []

        def open_pg() -> Database:
            db = connect(url)
            opened.append(db)
            return db

        yield kind, open_pg
        for db in opened:
            db.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(backend: tuple[str, Opener | None], clock: ManualClock) -> JobStore:
    _, opener = backend
    if opener is None:
        return MemoryJobStore(clock=clock)
    return SqlJobStore(opener(), clock=clock)


@pytest.fixture
def tokens(backend: tuple[str, Opener | None], clock: ManualClock) -> TokenStore:
    _, opener = backend
    if opener is None:
        return MemoryTokenStore(clock=clock)
    return SqlTokenStore(opener(), clock=clock)


def submit(
    store: JobStore, namespace: str, count: int = 1, *, clock: ManualClock | None = None
) -> list[str]:
    sub = Submission(
        id=new_id("sub"),
        namespace=namespace,
        submitter=namespace.split(":", 1)[1],
        spec_name="spec.yaml",
        bundle={"spec": {"name": "spec.yaml", "text": "name: x\n"}, "files": []},
        created_at=(clock or ManualClock()).now(),
    )
    jobs = [
        NewJob(
            namespace=namespace,
            submitter=sub.submitter,
            repository=f"github.com/o/r{i}",
            branch="main",
            commit="0" * 40,
            path="",
            payload={"index": i},
        )
        for i in range(count)
    ]
    return [j.id for j in store.add_submission(sub, jobs)]


def test_a_submission_queues_its_jobs_in_order(store: JobStore) -> None:
    ids = submit(store, "user:alice", 3)
    listed = store.list()
    assert [j.id for j in listed] == ids
    assert {j.state for j in listed} == {"queued"}
    assert store.payload(ids[1]) == {"index": 1}
    assert store.list(namespaces=["user:bob"]) == []
    assert [j.id for j in store.list(namespaces=["user:alice"], limit=2)] == ids[1:]


def test_claim_hands_out_each_job_once_with_a_lease(store: JobStore) -> None:
    ids = submit(store, "user:alice", 2)
    first = store.claim("ex1")
    second = store.claim("ex2")
    assert first is not None and second is not None
    assert {first.job.id, second.job.id} == set(ids)
    assert first.job.state == "processing" and first.job.executor == "ex1"
    assert first.attempt == 1 and first.token != second.token
    assert first.payload["index"] in (0, 1)
    assert first.bundle["spec"]["name"] == "spec.yaml"
    assert store.claim("ex3") is None


def test_fairness_one_job_of_another_namespace_is_among_the_first_two(store: JobStore) -> None:
    submit(store, "user:alice", 100)
    (late,) = submit(store, "org:team")
    claimed = [store.claim("ex"), store.claim("ex")]
    assert late in {c.job.id for c in claimed if c is not None}
    # And the queue keeps alternating while both have work.
    submit(store, "org:team", 2)
    names = [c.job.namespace for c in (store.claim("ex") for _ in range(4)) if c is not None]
    assert names.count("org:team") == 2


def test_a_run_of_claims_in_one_namespace_keeps_the_turns_and_the_order(store: JobStore) -> None:
    submit(store, "user:alice", 4)
    submit(store, "org:team", 1)
    claimed = [store.claim("ex") for _ in range(2)]
    assert {c.job.namespace for c in claimed if c is not None} == {"user:alice", "org:team"}
    # alice claims alone now: the first claim gives her the latest turn, which the
    # next ones leave as it is.
    assert (c := store.claim("ex")) is not None and c.job.namespace == "user:alice"
    turns = _turns(store)
    for _ in range(2):
        assert (c := store.claim("ex")) is not None and c.job.namespace == "user:alice"
    if turns is not None:
        assert turns["user:alice"] > turns["org:team"]
        assert _turns(store) == turns
    # Another namespace with work is served next all the same.
    submit(store, "user:bob", 2)
    submit(store, "user:alice", 2)
    names = [c.job.namespace for c in (store.claim("ex") for _ in range(4)) if c is not None]
    assert names[0] == "user:bob" and sorted(names) == ["user:alice"] * 2 + ["user:bob"] * 2


def test_a_namespace_tied_for_the_latest_turn_moves_behind_the_other(store: JobStore) -> None:
    if not isinstance(store, SqlJobStore):
        pytest.skip("only the SQL stores keep turn rows that two claims can tie")
    submit(store, "user:alice", 3)
    submit(store, "org:team", 3)
    # Both at turn 7, alice arrived first: she is first, and her claim must move her
    # behind the team (as two claims at once on PostgreSQL can leave them).
    store._db.once("UPDATE runner_job_fairness SET last_claim = 7")
    names = [c.job.namespace for c in (store.claim("ex") for _ in range(4)) if c is not None]
    assert names == ["user:alice", "org:team", "user:alice", "org:team"]


def _turns(store: JobStore) -> dict[str, int] | None:
    if not isinstance(store, SqlJobStore):
        return None
    rows = store._db.once("SELECT namespace, last_claim FROM runner_job_fairness")
    return {str(r["namespace"]): int(r["last_claim"]) for r in rows}


def test_a_result_is_stored_as_sent_whatever_its_text(store: JobStore) -> None:
    # A lone surrogate (sent escaped in JSON) cannot be written as UTF-8: it is kept too.
    result = {"status": "changed", "text": "é \ud800", "n": [1, 2.5, None], "deep": {"k": True}}
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    assert store.complete(job_id, lease.token, result).result == result
    stored = store.get(job_id)
    assert stored is not None and stored.result == result


def test_a_stale_lease_is_refused_everywhere(store: JobStore, clock: ManualClock) -> None:
    (job_id,) = submit(store, "user:alice")
    old = store.claim("ex-dead")
    assert old is not None
    clock.advance(60)
    reset = store.reset_stalled(stall_limit_s=30, max_resets=3)
    assert [j.id for j in reset] == [job_id]
    assert reset[0].state == "queued" and reset[0].resets == 1
    new = store.claim("ex-alive")
    assert new is not None and new.job.id == job_id and new.attempt == 2
    with pytest.raises(LeaseLostError):
        store.append_logs(job_id, old.token, [(0, "late\n")])
    with pytest.raises(LeaseLostError):
        store.record_step(job_id, old.token, step=1, status="finished", exit_code=0)
    with pytest.raises(LeaseLostError):
        store.complete(job_id, old.token, {"late": True})
    with pytest.raises(LeaseLostError):
        store.fail(job_id, old.token, state="failed", error="late", max_attempts=3)
    assert store.heartbeat("ex-dead", {job_id: old.token}).lost == (job_id,)
    store.append_logs(job_id, new.token, [(0, "fresh\n")])
    done = store.complete(job_id, new.token, {"status": "unchanged"})
    assert done.state == "completed" and done.result == {"status": "unchanged"}
    assert [c.text for c in store.logs(job_id)] == ["fresh\n"]


def test_completion_is_idempotent_and_final(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    first = store.complete(job_id, lease.token, {"n": 1})
    again = store.complete(job_id, lease.token, {"n": 2})
    assert first.result == again.result == {"n": 1}
    with pytest.raises(LeaseLostError):
        store.fail(job_id, lease.token, state="failed", error="x", max_attempts=3)
    assert store.claim("ex") is None


def test_log_chunks_are_idempotent_and_paged(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    assert store.append_logs(job_id, lease.token, [(0, "a\n"), (1, "b\n")]) == 2
    assert store.append_logs(job_id, lease.token, [(1, "b again\n"), (2, "c\n")]) == 1
    page = store.logs(job_id, limit=2)
    assert [c.text for c in page] == ["a\n", "b\n"]
    rest = store.logs(job_id, after=page[-1].cursor)
    assert [c.text for c in rest] == ["c\n"]
    assert store.logs(job_id, after=rest[-1].cursor) == []


def test_errored_jobs_are_retried_until_max_attempts(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    for attempt in (1, 2):
        lease = store.claim("ex")
        assert lease is not None and lease.attempt == attempt
        rec = store.fail(job_id, lease.token, state="errored", error="engine down", max_attempts=3)
        assert rec.state == "errored"
    lease = store.claim("ex")
    assert lease is not None
    rec = store.fail(job_id, lease.token, state="errored", error="engine down", max_attempts=3)
    assert rec.state == "failed"
    assert rec.error == "engine down (gave up after 3 attempts)"
    assert store.claim("ex") is None


def test_a_failed_step_is_permanent(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    rec = store.fail(job_id, lease.token, state="failed", error="exit 1", max_attempts=3)
    assert rec.state == "failed" and rec.finished_at is not None
    assert store.claim("ex") is None


def test_cancel_queued_at_once_and_running_through_the_heartbeat(store: JobStore) -> None:
    running, waiting = submit(store, "user:alice", 2)
    lease = store.claim("ex")
    assert lease is not None and lease.job.id == running
    assert store.request_cancel(waiting).state == "canceled"
    rec = store.request_cancel(running)
    assert rec.state == "processing" and rec.cancel_requested
    answer = store.heartbeat("ex", {running: lease.token})
    assert answer.cancel == (running,) and answer.lost == ()
    done = store.fail(running, lease.token, state="canceled", error="canceled", max_attempts=3)
    assert done.state == "canceled"
    assert store.claim("ex") is None


def test_resetter_fails_a_job_after_max_resets(store: JobStore, clock: ManualClock) -> None:
    (_job_id,) = submit(store, "user:alice")
    for _ in range(3):
        assert store.claim("ex") is not None
        clock.advance(31)
        assert [j.state for j in store.reset_stalled(stall_limit_s=30, max_resets=3)] == ["queued"]
    assert store.claim("ex") is not None
    clock.advance(31)
    (final,) = store.reset_stalled(stall_limit_s=30, max_resets=3)
    assert final.state == "failed" and final.resets == 3
    assert "reset 3 times" in (final.error or "")


def test_heartbeats_keep_a_job_from_being_reset(store: JobStore, clock: ManualClock) -> None:
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    for _ in range(4):
        clock.advance(20)
        assert store.heartbeat("ex", {job_id: lease.token}).lost == ()
        assert store.reset_stalled(stall_limit_s=30, max_resets=3) == []


def test_a_stalled_job_being_canceled_ends_canceled(store: JobStore, clock: ManualClock) -> None:
    (job_id,) = submit(store, "user:alice")
    assert store.claim("ex") is not None
    store.request_cancel(job_id)
    clock.advance(31)
    (rec,) = store.reset_stalled(stall_limit_s=30, max_resets=3)
    assert rec.state == "canceled"


def test_step_results_are_kept_per_attempt(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    store.record_step(job_id, lease.token, step=1, status="started", exit_code=None)
    store.record_step(job_id, lease.token, step=1, status="finished", exit_code=0)
    store.record_step(job_id, lease.token, step=2, status="skipped", exit_code=None)
    assert [(s.step, s.status, s.exit_code) for s in store.steps(job_id)] == [
        (1, "finished", 0),
        (2, "skipped", None),
    ]


def test_concurrent_claimers_never_share_a_job(backend: tuple[str, Opener | None]) -> None:
    _kind, opener = backend
    stores: list[Any]
    if opener is None:
        shared = MemoryJobStore()
        stores = [shared, shared, shared]
    else:
        # Separate connections, as separate coordinator processes would have.
        stores = [SqlJobStore(opener()) for _ in range(3)]
    ids = submit(stores[0], "user:alice", 30)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(s: Any) -> None:
        while True:
            lease = s.claim("ex")
            if lease is None:
                return
            with lock:
                claimed.append(lease.job.id)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(ids)


def test_tokens_are_stored_hashed_and_can_be_revoked(
    tokens: TokenStore, backend: tuple[str, Opener | None], clock: ManualClock
) -> None:
    record, token = tokens.create("user", "alice")
    assert len(token) >= 43 and token.startswith("rnr_")
    assert tokens.authenticate("rnr_" + "x" * 43) is None
    assert tokens.authenticate(token + "x") is None
    found = tokens.authenticate(token)
    assert found is not None and found.owner == "alice" and found.kind == "user"
    listed = {t.id: t for t in tokens.list()}
    assert listed[record.id].last_used_at == clock.now()
    tokens.revoke(record.id)
    assert tokens.authenticate(token) is None
    assert listed[record.id].revoked_at is None and tokens.list()[0].revoked_at is not None
    _kind, opener = backend
    if opener is not None:
        assert isinstance(tokens, SqlTokenStore)
        with tokens._db.transaction(write=False) as tx:
            rows = tx.all("SELECT * FROM runner_tokens")
        dump = repr(rows)
        assert token not in dump and token[4:] not in dump
        assert hash_token(token) in dump


def test_a_record_reads_back_as_it_was_built(store: JobStore, clock: ManualClock) -> None:
    sub = Submission(
        id=new_id("sub"),
        namespace="org:acme",
        submitter="alice",
        spec_name="spec.yaml",
        bundle={},
        created_at=clock.now(),
    )
    new = NewJob(
        namespace="org:acme",
        submitter="alice",
        repository="github.com/o/r",
        branch="main",
        commit="0" * 40,
        path="sub/dir",
        payload={},
        labels=("gpu", "linux"),
    )
    built = store.add_submission(sub, [new])
    read = [store.get(job.id) for job in built]
    assert read == built and [hash(r) for r in read] == [hash(b) for b in built]
    assert [vars(r) for r in read] == [vars(b) for b in built]


def test_every_answer_is_what_the_store_then_reads(store: JobStore, clock: ManualClock) -> None:
    first, second = submit(store, "user:alice", 2)
    lease = store.claim("ex")
    assert lease is not None and lease.job == store.get(lease.job.id)
    clock.advance(5)
    assert store.request_cancel(second) == store.get(second)
    done = store.complete(first, lease.token, {"status": "changed", "n": [1, 2]})
    assert done == store.get(first)
    assert done.finished_at == clock.now() and done.started_at is not None
    assert store.complete(first, lease.token, {"ignored": True}) == done


def test_a_retried_end_report_changes_nothing(store: JobStore, clock: ManualClock) -> None:
    errored, failed, canceled = submit(store, "user:alice", 3)
    leases = {}
    for _ in range(3):
        lease = store.claim("ex")
        assert lease is not None
        leases[lease.job.id] = lease.token
    ends: list[tuple[str, FailState]] = [
        (errored, "errored"),
        (failed, "failed"),
        (canceled, "canceled"),
    ]
    first = {
        job_id: store.fail(job_id, leases[job_id], state=state, error="x", max_attempts=3)
        for job_id, state in ends
    }
    clock.advance(5)
    for job_id, state in ends:
        again = store.fail(job_id, leases[job_id], state=state, error="y", max_attempts=3)
        assert again == first[job_id] == store.get(job_id)
        assert again.state == state and again.error == "x"
    assert first[errored].finished_at is None
    assert first[failed].finished_at == first[canceled].finished_at is not None
    # The errored job waits for another claim; the report cannot turn into another end.
    with pytest.raises(LeaseLostError):
        store.complete(errored, leases[errored], {})
    with pytest.raises(LeaseLostError):
        store.fail(errored, leases[errored], state="failed", error="z", max_attempts=3)


def test_a_retried_report_after_giving_up_stays_failed(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    gave_up = store.fail(job_id, lease.token, state="errored", error="down", max_attempts=1)
    assert gave_up.state == "failed" and gave_up.error == "down (gave up after 1 attempts)"
    again = store.fail(job_id, lease.token, state="errored", error="down", max_attempts=5)
    assert again == gave_up


def test_an_errored_job_is_claimed_again_under_a_new_lease(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    first = store.claim("ex1")
    assert first is not None
    store.fail(job_id, first.token, state="errored", error="engine down", max_attempts=3)
    second = store.claim("ex2")
    assert second is not None and second.job.id == job_id
    assert second.attempt == 2 and second.job.executor == "ex2"
    assert second.job.error == "engine down" and second.job.finished_at is None
    assert store.heartbeat("ex1", {job_id: first.token}).lost == (job_id,)
    with pytest.raises(LeaseLostError):
        store.append_logs(job_id, first.token, [(0, "late\n")])
    assert store.heartbeat("ex2", {job_id: second.token}).lost == ()


def test_cancel_of_an_errored_job_is_at_once_and_of_an_ended_one_does_nothing(
    store: JobStore,
) -> None:
    errored, done = submit(store, "user:alice", 2)
    first, second = store.claim("ex"), store.claim("ex")
    assert first is not None and second is not None
    assert (first.job.id, second.job.id) == (errored, done)
    store.fail(errored, first.token, state="errored", error="x", max_attempts=3)
    store.complete(done, second.token, {"status": "unchanged"})
    canceled = store.request_cancel(errored)
    assert canceled.state == "canceled" and canceled.finished_at is not None
    ended = store.get(done)
    assert store.request_cancel(done) == ended
    assert ended is not None and ended.state == "completed" and not ended.cancel_requested
    assert store.claim("ex") is None


def test_writes_after_the_end_are_refused(store: JobStore) -> None:
    (job_id,) = submit(store, "user:alice")
    lease = store.claim("ex")
    assert lease is not None
    store.complete(job_id, lease.token, {"status": "unchanged"})
    with pytest.raises(LeaseLostError):
        store.append_logs(job_id, lease.token, [(0, "late\n")])
    with pytest.raises(LeaseLostError):
        store.record_step(job_id, lease.token, step=1, status="finished", exit_code=0)
    answer = store.heartbeat("ex", {job_id: lease.token, "job_missing": "x"})
    assert answer.lost == (job_id, "job_missing") and answer.cancel == ()


def test_unknown_jobs_are_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFoundError):
        store.request_cancel("job_missing")
    with pytest.raises(JobNotFoundError):
        store.complete("job_missing", "lease", {})
    with pytest.raises(JobNotFoundError):
        store.fail("job_missing", "lease", state="failed", error="x", max_attempts=3)
    assert store.get("job_missing") is None


def test_a_requeued_job_forgets_its_executor(store: JobStore, clock: ManualClock) -> None:
    (job_id,) = submit(store, "user:alice")
    assert store.claim("ex-dead") is not None
    clock.advance(31)
    (rec,) = store.reset_stalled(stall_limit_s=30, max_resets=3)
    assert rec == store.get(job_id)
    assert rec.executor is None and rec.heartbeat_at is None and rec.finished_at is None
    assert rec.error == "executor ex-dead sent no heartbeat for 30 s; requeued"
    assert store.reset_stalled(stall_limit_s=30, max_resets=3) == []


def test_a_completion_answers_the_job_as_stored_after_what_happened_while_it_ran(
    backend: tuple[str, Opener | None], clock: ManualClock
) -> None:
    """The SQL store keeps a claimed job's identity and reads back only the state it
    did not write: a heartbeat and a cancel request while the job ran must show, and a
    job claimed through another replica (which kept nothing) must complete the same."""
    _kind, opener = backend
    if opener is None:
        stores: list[Any] = [MemoryJobStore(clock=clock)] * 2
    else:
        stores = [SqlJobStore(opener(), clock=clock) for _ in range(2)]
    here, there = stores
    mine, theirs = submit(here, "org:acme", 2, clock=clock)
    lease = here.claim("ex-1")
    other = there.claim("ex-2")
    assert lease is not None and other is not None
    assert (lease.job.id, other.job.id) == (mine, theirs)
    clock.advance(3)
    here.heartbeat("ex-1", {mine: lease.token})
    here.request_cancel(mine)
    clock.advance(2)
    done = here.complete(mine, lease.token, {"status": "changed", "n": [1, 2]})
    assert done == here.get(mine) == there.get(mine)
    assert vars(done) == vars(here.get(mine))
    assert done.cancel_requested and done.heartbeat_at == done.started_at + timedelta(seconds=3)
    assert done.state == "completed" and done.result == {"status": "changed", "n": [1, 2]}
    # Completed through the replica that did not claim it: the whole row read back.
    done_there = here.complete(theirs, other.token, {"status": "unchanged"})
    assert vars(done_there) == vars(there.get(theirs))
    assert done_there.executor == "ex-2" and done_there.repository == "github.com/o/r1"


def test_identities_kept_are_bounded_and_an_evicted_job_completes_the_same(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(store, SqlJobStore):
        pytest.skip("only the SQL store keeps claimed jobs' identities")
    monkeypatch.setattr("runner.queue.store.IDENTITIES_KEPT", 2)
    submit(store, "user:alice", 4)
    leases = [store.claim("ex") for _ in range(4)]
    assert all(lease is not None for lease in leases)
    assert len(store._identities) == 2  # the two oldest claims were let go
    for lease in leases:
        assert lease is not None
        done = store.complete(lease.job.id, lease.token, {"status": "unchanged"})
        assert vars(done) == vars(store.get(lease.job.id))
    assert store._identities == {}


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("statistics", ["of a full queue", "of an empty queue"])
def test_a_postgresql_claim_reads_its_index_whatever_the_statistics_say(
    store: JobStore, statistics: str
) -> None:
    """The claim is planned with sorting disabled and asks for an order only the claim
    index gives: stale statistics cannot lead it to walk every job done (those of a full
    queue) or to sort every job queued (those of an empty one)."""
    if not isinstance(store, SqlJobStore) or store.db.dialect != "postgresql":
        pytest.skip("PostgreSQL plans from statistics")
    import psycopg

    from runner.db import UNSORTED_OPTIONS, to_pyformat

    db = store.db
    if statistics == "of an empty queue":
        db.once("ANALYZE runner_jobs")
    submit(store, "user:alice", 300)
    if statistics == "of a full queue":
        db.once("ANALYZE runner_jobs")
    claims: list[tuple[str, list[Any], bool]] = []
    run = db.once_tuples

    def spy(sql: str, params: Any = (), **options: Any) -> list[tuple[Any, ...]]:
        if "lease_hash = ? WHERE seq" in sql:
            claims.append((sql, list(params), bool(options.get("index_order"))))
        return run(sql, params, **options)

    db.once_tuples = spy  # type: ignore[method-assign]
    for _ in range(200):  # the oldest jobs done, the rest queued behind them
        lease = store.claim("ex")
        assert lease is not None
        store.complete(lease.job.id, lease.token, {"status": "unchanged"})
    sql, params, index_order = claims[-1]
    assert index_order
    with psycopg.connect(db.url, options=UNSORTED_OPTIONS) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + to_pyformat(sql), params).fetchone()
        conn.rollback()  # EXPLAIN ANALYZE ran the claim
    assert row is not None
    plan = row[0][0]["Plan"]
    nodes = list(_plan_nodes(plan))
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Bitmap Heap Scan")]
    picks = [n for n in nodes if n.get("Relation Name") == "runner_jobs" and "Index Name" in n]
    assert {n["Index Name"] for n in picks} <= {"runner_jobs_claim_order", "runner_jobs_pkey"}
    pick = [n for n in picks if n["Index Name"] == "runner_jobs_claim_order"]
    assert pick and all(n.get("Rows Removed by Filter", 0) == 0 for n in pick)
    # The primary key is looked up by the seq picked, not walked.
    assert all(n["Actual Rows"] <= 1 for n in picks if n["Index Name"] == "runner_jobs_pkey")
