"""What made the coordinator's claim-and-complete cheaper (issue 21) still does what it did.

A spec is parsed once per submission, not once per claim (and a secret set since still
reaches the claim); a read-only block sends no BEGIN and survives a dropped PostgreSQL
connection; a secret resolves through its namespaces in one query with the same
precedence; the executor endpoints answer as before; the memo stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from runner.queue import service
from runner.queue.bundle import Bundle
from runner.queue.memo import Memo
from runner.secrets.crypto import Keyring, new_master_key
from runner.secrets.store import SqlSecretStore
from runner.secrets.value import Secret
from runner.spec import load_spec_text
from runner.spec.models import BatchSpec
from tests import test_secrets_support as support
from tests.test_queue_support import (
    SPEC_WITH_SECRET,
    TOKEN_VALUE,
    World,
    sqlite_world,
    write_spec,
)
from tests.test_secrets_support import Backend

backend = support.backend
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sqlite_world(tmp_path) as w:
        yield w


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the specs the coordinator parses from now on."""
    parsed: list[str] = []

    def counting(text: str, name: str) -> BatchSpec:
        parsed.append(name)
        return load_spec_text(text, name)

    monkeypatch.setattr("runner.queue.service.load_spec_text", counting)
    return parsed


def test_a_spec_is_parsed_once_per_submission_and_claims_still_read_secrets_afresh(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = count_parses(monkeypatch)
    alice, executor = world.client("alice"), world.client("exec")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    spec = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
    ids = {j["id"] for j in alice.submit(spec, "user:alice")["jobs"]}
    assert len(ids) == 2 and len(parsed) == 1
    first = executor.claim("ex-a")
    # A new version set between the claims is the one the next claim reveals.
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE + "-v2"))
    second = executor.claim("ex-b")
    assert first is not None and second is not None
    assert {first.job_id, second.job_id} == ids
    assert [s.reveal() for s in first.secrets.values()] == [TOKEN_VALUE]
    assert [s.reveal() for s in second.secrets.values()] == [TOKEN_VALUE + "-v2"]
    assert len(parsed) == 1, "the claims reused the submission's parsed spec"
    # The answers of the executor endpoints are the job, as before.
    done = executor.complete(first.job_id, first.lease, {"status": "unchanged"})
    assert done["id"] == first.job_id and done["state"] == "completed"
    assert "result" not in done


def test_a_restarted_coordinator_parses_each_submission_once_again(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = world.client("alice")
    alice.secret_set("TOKEN", "user:alice", Secret(TOKEN_VALUE))
    spec = Bundle.from_spec_file(write_spec(tmp_path / "spec", SPEC_WITH_SECRET))
    alice.submit(spec, "user:alice")
    parsed = count_parses(monkeypatch)
    world.coordinator._specs = Memo(service.SPECS_KEPT)  # what a restart leaves
    executor = world.client("exec")
    assert executor.claim("ex-a") is not None and executor.claim("ex-b") is not None
    assert len(parsed) == 1


def test_the_memo_keeps_the_most_recently_used_answers_only() -> None:
    memo: Memo[str, int] = Memo(2)
    made: list[str] = []

    def make(key: str) -> int:
        made.append(key)
        return len(made)

    assert memo.get("a", lambda: make("a")) == 1
    assert memo.get("b", lambda: make("b")) == 2
    assert memo.get("a", lambda: make("a")) == 1  # kept; now the most recent
    memo.put("c", 9)  # drops b, the least recently used
    assert len(memo) == 2
    assert memo.get("b", lambda: make("b")) == 3
    with pytest.raises(ValueError, match="boom"):
        memo.get("d", lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert memo.get("d", lambda: 4) == 4, "a failed make keeps nothing"
    with pytest.raises(ValueError, match="at least one"):
        Memo(0)


def test_read_blocks_see_each_commit_and_take_no_locks(backend: Backend) -> None:
    """Without BEGIN a read block's statements each see the latest commit (as read
    committed did in a transaction); a lock needs a write transaction on PostgreSQL."""
    with backend.connect() as db, backend.connect() as other:
        db.once("CREATE TABLE IF NOT EXISTS seen (n INTEGER)")
        with db.transaction(write=False) as tx:
            assert tx.scalar("SELECT COUNT(*) AS n FROM seen") == 0
            with other.transaction() as writer:
                writer.execute("INSERT INTO seen (n) VALUES (1)")
            assert tx.scalar("SELECT COUNT(*) AS n FROM seen") == 1
            if db.dialect == "postgresql":
                with pytest.raises(RuntimeError, match="write transactions"):
                    tx.lock("test:read")
                # Each statement is a transaction of its own: no BEGIN came before it.
                assert tx.scalar("SELECT now() = statement_timestamp() AS alone") is True


@pytest.mark.postgres
def test_a_read_survives_a_dropped_postgresql_connection(postgres_url: str) -> None:
    with support.fresh_postgres_database(postgres_url) as url:
        from runner.db import connect

        with connect(url) as db:
            with db.transaction(write=False) as tx:
                pid = tx.scalar("SELECT pg_backend_pid() AS pid")
            # ``once`` keeps a cursor per thread: on this connection for now.
            assert db.once("SELECT pg_backend_pid() AS pid") == [{"pid": pid}]
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            with db.transaction(write=False) as tx:
                again = tx.scalar("SELECT pg_backend_pid() AS pid")
            assert again != pid
            # ... and on the new one once the old one is gone.
            assert db.once("SELECT pg_backend_pid() AS pid") == [{"pid": again}]


def test_a_secret_resolves_through_its_namespaces_in_one_query(backend: Backend) -> None:
    store = SqlSecretStore(backend.connect(), Keyring([new_master_key()]))
    try:
        store.set("GH_TOKEN", "global", Secret("global-value-1234"), actor="admin")
        found = store.resolve("gh_token", "user:alice")
        assert found is not None and found.namespace == "global"
        store.set("GH_TOKEN", "user:alice", Secret("alice-value-1234"), actor="alice")
        mine = store.resolve("GH_TOKEN", "user:alice")
        assert mine is not None and mine.namespace == "user:alice" and mine.overrides_global
        theirs = store.resolve("GH_TOKEN", "user:bob")
        assert theirs is not None and theirs.namespace == "global"
        assert store.resolve("GH_TOKEN", "user:alice", scope="codeintel") is None
        store.remove("GH_TOKEN", "global", actor="admin")
        assert store.resolve("GH_TOKEN", "user:bob") is None
    finally:
        store.close()
