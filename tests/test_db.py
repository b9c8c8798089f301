"""The database layer: one SQL dialect, transactions, migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import migrations as registry
from runner.db import connect, db_time, display_url, parse_db_time, sqlite_path, to_pyformat
from runner.errors import BusyError, IntegrityError, StoreError
from runner.migrations import Migration
from tests import test_secrets_support as support
from tests.test_secrets_support import Backend

backend = support.backend

THINGS = Migration(
    9001,
    "test: things",
    """
    CREATE TABLE things (
        id {{AUTO_ID}},
        name TEXT NOT NULL UNIQUE,
        payload {{BLOB}},
        flag INTEGER NOT NULL DEFAULT 0
    );
    -- a comment; with a semicolon
    CREATE INDEX things_flag ON things (flag);
    """,
)
AUDIT = Migration(
    9002,
    "test: trigger",
    {
        "sqlite": """
CREATE TABLE notes (body TEXT);
CREATE TRIGGER notes_frozen BEFORE DELETE ON notes
BEGIN SELECT RAISE(ABORT, 'notes are frozen'); END;
""",
        "postgresql": """
CREATE TABLE notes (body TEXT);
CREATE FUNCTION notes_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'notes are frozen'; END; $$;
CREATE TRIGGER notes_frozen BEFORE DELETE ON notes
    FOR EACH ROW EXECUTE FUNCTION notes_frozen();
""",
    },
)


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///tmp/x/runner.db") == "/tmp/x/runner.db"
    assert sqlite_path("sqlite:////tmp/x/runner.db") == "/tmp/x/runner.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    with pytest.raises(StoreError, match="ABSOLUTE"):
        sqlite_path("sqlite://relative.db")


def test_unsupported_urls_and_unreachable_servers_say_what_to_do() -> None:
    with pytest.raises(StoreError, match="RUNNER_DATABASE_URL") as info:
        connect("mysql://root:hunter2hunter2@localhost/db")
    assert "hunter2hunter2" not in str(info.value)
    with pytest.raises(StoreError, match="cannot connect") as info:
        connect("postgresql://me:pa55word-x@127.0.0.1:1/nothing", busy_timeout_s=1)
    assert "pa55word-x" not in str(info.value)
    assert info.value.hint


def test_display_url_masks_the_password() -> None:
    assert display_url("postgresql://u:secretpw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert display_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_placeholders_translate_outside_quotes_only() -> None:
    assert to_pyformat("SELECT ? WHERE a = ?") == "SELECT %s WHERE a = %s"
    assert to_pyformat("SELECT '?', \"?\" , ?") == "SELECT '?', \"?\" , %s"
    assert to_pyformat("SELECT 'it''s ?' , ?") == "SELECT 'it''s ?' , %s"
    assert to_pyformat("SELECT 5 % 2 -- why?\n, ?") == "SELECT 5 %% 2 -- why?\n, %s"
    assert to_pyformat("SELECT 'a%b' LIKE ?") == "SELECT 'a%%b' LIKE %s"


@settings(max_examples=50, deadline=None)
@given(
    st.datetimes(max_value=datetime(9000, 1, 1), timezones=st.just(UTC)),
    st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3650)),
)
def test_stored_times_round_trip_and_sort_as_text(moment: datetime, delta: timedelta) -> None:
    assert parse_db_time(db_time(moment)) == moment
    assert db_time(moment) < db_time(moment + delta)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        db_time(datetime(2024, 1, 1))


def test_migrations_apply_once_in_order(backend: Backend) -> None:
    with backend.connect() as db:
        assert db.migrate([AUDIT, THINGS]) == [9001, 9002]
        assert db.migrate([THINGS, AUDIT]) == []
        applied = db.applied_migrations()
        assert applied[9001] == "test: things"
        assert applied[9002] == "test: trigger"
    # A second connection finds them applied.
    with backend.connect() as db:
        assert db.migrate([THINGS, AUDIT]) == []


def test_connect_applies_every_registered_migration(backend: Backend) -> None:
    with backend.connect() as db:
        applied = db.applied_migrations()
    assert {m.version for m in registry.registered()} <= set(applied)
    assert 100 in applied


def test_a_renamed_migration_is_refused(backend: Backend) -> None:
    with backend.connect() as db:
        db.migrate([THINGS])
        renamed = Migration(9001, "test: something else", "SELECT 1;")
        with pytest.raises(StoreError, match="9001"):
            db.migrate([renamed])


def test_registry_refuses_two_migrations_with_one_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", {})
    registry.register(THINGS)
    registry.register(THINGS)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(Migration(9001, "other", "SELECT 1;"))
    assert registry.registered() == [THINGS]
    with pytest.raises(ValueError, match="share version"):
        registry.ordered([THINGS, Migration(9001, "other", "SELECT 1;")])


def test_rows_blobs_and_autoincrement(backend: Backend) -> None:
    with backend.connect() as db:
        db.migrate([THINGS])
        with db.transaction() as tx:
            first = tx.scalar(
                "INSERT INTO things (name, payload, flag) VALUES (?, ?, ?) RETURNING id",
                ["a", b"\x00\xffbytes", True],
            )
            second = tx.scalar(
                "INSERT INTO things (name, payload) VALUES (?, ?) RETURNING id", ["b", None]
            )
            assert second > first
            assert tx.execute("UPDATE things SET flag = ? WHERE name LIKE 'a%'", [2]) == 1
        with db.transaction(write=False) as tx:
            rows = tx.all("SELECT name, payload, flag FROM things ORDER BY id")
            assert tx.one("SELECT name FROM things WHERE name = ?", ["zzz"]) is None
        assert rows == [
            {"name": "a", "payload": b"\x00\xffbytes", "flag": 2},
            {"name": "b", "payload": None, "flag": 0},
        ]


def test_an_exception_rolls_the_transaction_back(backend: Backend) -> None:
    with backend.connect() as db:
        db.migrate([THINGS])

        def insert_then_fail() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO things (name) VALUES (?)", ["x"])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            insert_then_fail()
        with db.transaction() as tx:
            assert tx.scalar("SELECT COUNT(*) AS n FROM things") == 0
            # A nested block joins the outer transaction.
            with db.transaction() as inner:
                assert inner is tx
                inner.execute("INSERT INTO things (name) VALUES (?)", ["y"])
        with db.transaction(write=False) as tx:
            assert tx.scalar("SELECT COUNT(*) AS n FROM things") == 1


def test_constraint_and_trigger_failures_become_store_errors(backend: Backend) -> None:
    with backend.connect() as db:
        db.migrate([THINGS, AUDIT])
        with db.transaction() as tx:
            tx.execute("INSERT INTO things (name) VALUES (?)", ["dup"])
            tx.execute("INSERT INTO notes (body) VALUES (?)", ["hello"])
        with pytest.raises(IntegrityError) as info, db.transaction() as tx:
            tx.execute("INSERT INTO things (name) VALUES (?)", ["dup"])
        assert info.value.hint
        with pytest.raises(StoreError, match="frozen"), db.transaction() as tx:
            tx.execute("DELETE FROM notes")
        # The connection is still usable afterwards.
        with db.transaction(write=False) as tx:
            assert tx.scalar("SELECT COUNT(*) AS n FROM notes") == 1


def test_run_retries_busy_transactions(backend: Backend) -> None:
    with backend.connect() as db:
        calls: list[int] = []

        def flaky(tx: object) -> str:
            calls.append(1)
            if len(calls) < 3:
                raise BusyError("busy", hint="retry")
            return "done"

        assert db.run(flaky) == "done"
        assert len(calls) == 3
        calls.clear()
        with pytest.raises(BusyError):
            db.run(flaky, attempts=1)


def test_writers_are_serialised(backend: Backend) -> None:
    """Two connections: the second writer of a locked key waits for the first to commit."""
    with backend.connect() as first, backend.connect() as second:
        first.migrate([THINGS])
        order: list[str] = []
        holding = threading.Event()

        def hold() -> None:
            with first.transaction() as tx:
                tx.lock("test:thing")
                tx.execute("INSERT INTO things (name) VALUES (?)", ["first"])
                holding.set()
                time.sleep(0.3)
                order.append("first commits")

        thread = threading.Thread(target=hold)
        thread.start()
        holding.wait(5)
        with second.transaction() as tx:
            tx.lock("test:thing")
            order.append("second writes")
            names = [r["name"] for r in tx.all("SELECT name FROM things")]
        thread.join()
        assert order == ["first commits", "second writes"]
        assert names == ["first"]


def test_sqlite_files_are_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    with connect(f"sqlite:///{path}") as db:
        with db.transaction(write=False) as tx:
            assert tx.scalar("PRAGMA journal_mode") == "wal"
        assert db.dialect == "sqlite"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_transaction_sqlite_rolled_back_itself_is_not_reported_as_committed(
    tmp_path: Path,
) -> None:
    # SQLite ends a transaction itself on some errors (a full disk, an I/O error); a
    # block that caught the statement's error and went on must not look committed.
    with connect(f"sqlite:///{tmp_path / 'x.db'}") as db:
        db.migrate([THINGS])

        def insert_then_lose_it() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO things (name) VALUES (?)", ["lost"])
                db._sqlite().execute("ROLLBACK")  # as SQLite does after SQLITE_FULL

        with pytest.raises(StoreError, match="rolled back") as info:
            insert_then_lose_it()
        assert info.value.hint
        with db.transaction() as tx:
            assert tx.scalar("SELECT COUNT(*) AS n FROM things") == 0
            tx.execute("INSERT INTO things (name) VALUES (?)", ["kept"])
        with db.transaction(write=False) as tx:
            assert tx.scalar("SELECT COUNT(*) AS n FROM things") == 1


def test_closed_database_says_so(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'x.db'}")
    db.close()
    with pytest.raises(StoreError, match="closed"), db.transaction() as tx:
        tx.execute("SELECT 1")


def test_once_tuples_gives_the_rows_a_cursor_gives(backend: Backend) -> None:
    """``once_tuples`` (on PostgreSQL, run by libpq from a statement it prepared) reads
    back exactly what ``once`` reads: numbers as numbers, NULL as None, JSON as text."""
    with backend.connect() as db:
        db.migrate([THINGS])
        inserted = db.once_tuples(
            "INSERT INTO things (name, payload, flag) VALUES (?, ?, ?) RETURNING name, flag",
            ["ä ' quoted", None, 7],
        )
        assert inserted == [("ä ' quoted", 7)]
        for _ in range(3):  # the second and later runs reuse what the first prepared
            echoed = db.once_tuples("SELECT ? AS n, ? AS s, ? AS t", [5, "x", True])
            assert echoed == [
                tuple(db.once("SELECT ? AS n, ? AS s, ? AS t", [5, "x", True])[0].values())
            ]
        assert echoed == [(5, "x", 1)]
        assert db.once_tuples("UPDATE things SET flag = flag + ? WHERE name = ?", [1, "none"]) == []
        assert db.once_tuples("SELECT name FROM things WHERE flag = ?", [7]) == [("ä ' quoted",)]
        assert db.once_tuples("SELECT ? * 2 AS n", [0.25]) == [(0.5,)]
        with pytest.raises(IntegrityError):
            db.once_tuples("INSERT INTO things (name) VALUES (?) RETURNING id", ["ä ' quoted"])
        if backend.kind == "postgres":
            # What libpq cannot take as text goes as psycopg sends it, with its answers.
            assert db.once_tuples("SELECT ? + 1 AS n", [2**70]) == [(2**70 + 1,)]
            # NUL would be cut short by libpq: refused as psycopg refuses it.
            with pytest.raises(StoreError, match="NUL"):
                db.once_tuples("INSERT INTO things (name) VALUES (?) RETURNING id", ["a\x00b"])
            prepared = db.once("SELECT name FROM pg_prepared_statements WHERE name LIKE 'runner_%'")
            assert len(prepared) >= 3  # each statement once, on this thread's connection
        assert db.once("SELECT COUNT(*) AS n FROM things")[0]["n"] == 1


def test_once_tuples_on_postgresql_survives_a_dropped_connection(backend: Backend) -> None:
    """A connection the server dropped (a restart) fails one statement at most; the next
    runs on a new connection, which prepares its statements again."""
    if backend.kind != "postgres":
        pytest.skip("PostgreSQL's connections only")
    with backend.connect() as db, backend.connect() as other:
        db.migrate([THINGS])
        select = "SELECT name FROM things WHERE flag = ?"
        assert db.once_tuples(select, [0]) == []
        pid = db.once_tuples("SELECT pg_backend_pid()")[0][0]
        other.once("SELECT pg_terminate_backend(?)", [pid])
        time.sleep(0.2)
        with contextlib.suppress(StoreError):
            db.once_tuples(select, [0])
        db.once("INSERT INTO things (name) VALUES (?)", ["after"])
        assert db.once_tuples(select, [0]) == [("after",)]
        assert db.once_tuples("SELECT pg_backend_pid()")[0][0] != pid


def test_postgresql_connections_follow_the_threads_that_use_them(backend: Backend) -> None:
    """A statement with ``index_order`` runs where the planner may not sort, on a pooled
    connection (one per statement running at once); every other runs as planned on its
    thread's own, which is closed once its thread has ended."""
    if backend.kind != "postgres":
        pytest.skip("PostgreSQL's connections only")
    show = "SELECT current_setting('enable_sort')"
    with backend.connect() as db, backend.connect() as watcher:

        def mine() -> int:
            rows = watcher.once(
                "SELECT COUNT(*) AS n FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(rows[0]["n"])

        assert db.once_tuples(show, index_order=True) == [("off",)]
        assert db.once_tuples(show) == [("on",)]
        assert db.once(show.replace(")", ") AS s"))[0]["s"] == "on"
        baseline = mine()  # this thread's and one pooled

        def claim_like() -> None:
            assert db.once_tuples(show, index_order=True) == [("off",)]
            assert db.once_tuples("SELECT 1") == [(1,)]

        for _ in range(3):  # rounds of threads that come and go, as a bench's drains
            threads = [threading.Thread(target=claim_like) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert db.once_tuples("SELECT 2") == [(2,)]
        # One round's threads' connections at most (the last round's, closed by the next
        # thread to connect) and the pool's, not one per thread that ever ran.
        assert mine() <= baseline + 6 + 6
        done = threading.Thread(target=lambda: db.once("SELECT 3"))
        done.start()
        done.join()
        assert mine() <= baseline + 1 + 6


def test_once_tuples_on_postgresql_outlives_psycopg_dropping_prepared_statements(
    backend: Backend,
) -> None:
    """psycopg deallocates every prepared statement of its connection after a rollback
    (its own cache's rule), those ``once_tuples`` prepared too: they are prepared again."""
    if backend.kind != "postgres":
        pytest.skip("PostgreSQL's prepared statements only")
    with backend.connect() as db:
        db.migrate([THINGS])
        select = "SELECT COUNT(*) FROM things WHERE flag = ?"
        assert db.once_tuples(select, [0]) == [(0,)]
        for _ in range(6):  # psycopg prepares a statement it has run 5 times
            db.once("SELECT name FROM things WHERE flag = ?", [1])

        def rolled_back() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO things (name) VALUES (?)", ["gone"])
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            rolled_back()
        db.once("SELECT name FROM things WHERE flag = ?", [1])  # psycopg: DEALLOCATE ALL
        assert db.once_tuples(select, [0]) == [(0,)]
        assert db.once_tuples(select, [0]) == [(0,)]
