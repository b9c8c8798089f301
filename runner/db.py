"""A small database layer: SQLite and PostgreSQL behind one SQL dialect.

Callers write SQL once, with ``?`` placeholders, in the common subset of both
dialects (``INSERT ... ON CONFLICT``, ``RETURNING`` and partial indexes work in
both); the PostgreSQL backend translates placeholders. Rows come back as
dicts. Times are stored as fixed-width RFC 3339 text in UTC (``db_time``), so
they sort and compare the same way in both.

Concurrency: a write transaction on SQLite is ``BEGIN IMMEDIATE`` (one writer
at a time, others wait up to the busy timeout); on PostgreSQL it is an
ordinary read-committed transaction, and ``Transaction.lock(key)`` takes a
transaction-scoped advisory lock to serialise writers of one thing (a no-op
on SQLite, where writers are serialised already). A read-only block sends
no ``BEGIN``/``COMMIT``: its statements each see their own snapshot, as they
would under PostgreSQL's read committed in a transaction; callers never
relied on more (the same code runs on both).

Driver exceptions are translated here into ``StoreError`` subclasses.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from runner.clock import SYSTEM_CLOCK
from runner.errors import BusyError, IntegrityError, StoreError
from runner.migrations import Dialect, Migration, ordered, registered

if TYPE_CHECKING:
    # psycopg is imported where a PostgreSQL URL is opened: a local run on SQLite
    # (every `runner run`) does not pay for loading it.
    import psycopg

Row = dict[str, Any]
Params = Sequence[Any]
T = TypeVar("T")

MIGRATIONS_TABLE = "runner_schema_migrations"


def db_time(moment: datetime) -> str:
    """The stored form of a time: RFC 3339 in UTC, fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware time in UTC")
    m = moment.astimezone(UTC)
    # strftime's %Y does not zero-pad years before 1000 on every platform.
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    )


def parse_db_time(text: str) -> datetime:
    # fromisoformat reads db_time's form (and its Z) many times faster than strptime.
    return datetime.fromisoformat(text).astimezone(UTC)


def display_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def sqlite_path(url: str) -> str:
    """``sqlite:///abs/path.db`` (or ``sqlite:////abs/path.db``) to a file path."""
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest in ("/:memory:", ":memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise StoreError(
            f"unsupported SQLite URL {url!r}",
            hint="write it as sqlite:///ABSOLUTE/PATH/runner.db",
        )
    return "/" + rest.lstrip("/")


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s``, leaving quoted text and comments alone."""
    return _placeholders(sql, numbered=False)


@lru_cache(maxsize=64)
def to_numbered(sql: str) -> str:
    """``?`` placeholders to PostgreSQL's own ``$1``, ``$2``… (a statement libpq prepares)."""
    return _placeholders(sql, numbered=True)


def _placeholders(sql: str, *, numbered: bool) -> str:
    out: list[str] = []
    count = 0
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            text = sql[i : end + 1]
            out.append(text if numbered else text.replace("%", "%%"))
            i = end + 1
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end] if numbered else sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "?":
            count += 1
            out.append(f"${count}" if numbered else "%s")
            i += 1
        elif ch == "%" and not numbered:
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def lock_id(key: str) -> int:
    """A stable signed 64-bit number for an advisory lock named ``key``."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_SQLITE_BUSY = re.compile(r"locked|busy", re.IGNORECASE)


def _psycopg_errors() -> Any:
    """``psycopg.errors`` if a PostgreSQL database was opened, else None (nothing can raise it)."""
    return sys.modules.get("psycopg.errors")


def _translate(exc: Exception) -> StoreError:
    pg = _psycopg_errors()
    if isinstance(exc, sqlite3.IntegrityError) or (pg and isinstance(exc, pg.IntegrityError)):
        return IntegrityError(
            f"the database refused a write: {_first_line(exc)}",
            hint="retry; if it persists, report it",
        )
    if (pg and isinstance(exc, pg.SerializationFailure | pg.DeadlockDetected)) or (
        isinstance(exc, sqlite3.OperationalError) and _SQLITE_BUSY.search(str(exc))
    ):
        return BusyError(
            f"the database is busy: {_first_line(exc)}",
            hint="retry in a moment; another runner process holds a write lock",
        )
    return StoreError(
        f"database error: {_first_line(exc)}",
        hint="check the database (RUNNER_DATABASE_URL) and retry; rerun with --debug for details",
    )


def _driver_errors() -> tuple[type[Exception], ...]:
    """The drivers' error classes, psycopg's only once it is loaded."""
    pg = _psycopg_errors()
    return (sqlite3.Error, pg.Error) if pg else (sqlite3.Error,)


class Transaction:
    """One open transaction. Use it only inside its ``with`` block."""

    def __init__(self, db: Database, *, write: bool) -> None:
        self._db = db
        self.write = write

    @property
    def dialect(self) -> Dialect:
        return self._db.dialect

    def _cursor_execute(self, sql: str, params: Params) -> Any:
        db = self._db
        try:
            if db.dialect == "postgresql":
                import psycopg

                adapted = [int(p) if isinstance(p, bool) else p for p in params]
                conn = db._pg()
                try:
                    return conn.execute(to_pyformat(sql), adapted)
                except psycopg.OperationalError:
                    # A read runs outside any transaction (see _pg_transaction): after a
                    # server restart it is simply asked again on a new connection.
                    if self.write or not conn.broken:
                        raise
                    return db._new_pg().execute(to_pyformat(sql), adapted)
            return db._sqlite().execute(sql, tuple(params))
        except _driver_errors() as exc:
            raise _translate(exc) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cursor = self._cursor_execute(sql, params)
        return int(cursor.rowcount or 0)

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._cursor_execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._cursor_execute(sql, params).fetchall())

    def tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """``all``, each row a tuple in the statement's column order (``once_tuples``)."""
        db = self._db
        if db.dialect == "postgresql":
            return [tuple(row.values()) for row in self.all(sql, params)]
        cursor = db._sqlite_tuple_cursor
        if cursor is None:
            cursor = db._sqlite_tuples()
        try:
            rows: list[tuple[Any, ...]] = cursor.execute(sql, tuple(params)).fetchall()
        except _driver_errors() as exc:
            raise _translate(exc) from exc
        return rows

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self._cursor_execute(sql, params).fetchone()
        if row is None:
            return None
        return next(iter(row.values()))

    def lock(self, key: str, *, shared: bool = False) -> None:
        """Serialise with other transactions locking ``key`` until this one ends."""
        if self.dialect == "postgresql":
            if not self.write:
                raise RuntimeError("locks are taken in write transactions")
            fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
            self._cursor_execute(f"SELECT {fn}(?)", [lock_id(key)])

    def script(self, script: str) -> None:
        """Run a multi-statement script (a migration); no parameters."""
        db = self._db
        try:
            if db.dialect == "postgresql":
                db._pg().execute(script.encode())
                return
            conn = db._sqlite()
            for statement in _split_sqlite(script):
                conn.execute(statement)
        except _driver_errors() as exc:
            raise _translate(exc) from exc


def _split_sqlite(script: str) -> Iterator[str]:
    # executescript() would commit the open transaction first; split instead,
    # using SQLite's own notion of a complete statement (triggers have inner ';').
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()
    ):
        yield buffer


def _sqlite_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, values, strict=True)}


# A statement run with ``once_tuples(index_order=True)`` is planned with sorting
# disabled: the queue's claim asks for its namespace's first job in an order only the
# claim's own index gives (``runner.queue.store.CLAIM_ORDER``), so the one plan left is
# that index's, whatever the statistics say. Planned from statistics instead, the
# claim's cost came to grow with the queue as the statistics went stale, which a queue's
# churn makes them: with those of a full queue it walked every job already done in
# order; with those of an empty one it sorted every queued job (3 ms a claim with 3,000
# queued, and claims fell from 2,800 a second to 470 in eight rounds, issue 21).
UNSORTED_OPTIONS = "-c enable_sort=off"
# Idle connections of that kind kept open: one per executor claiming at once.
UNSORTED_KEPT = 16
# SQLSTATE 26000: the prepared statement named does not exist (any more).
_NO_SUCH_STATEMENT = b"26000"
# PostgreSQL's type of a parameter it should infer from the statement, and of a bigint.
_UNKNOWN_OID = 0
_INT8_OID = 20
_INT8_RANGE = range(-(2**63), 2**63)


def _text_params(
    params: Params, encoding: str
) -> tuple[list[bytes | None], tuple[int, ...]] | None:
    """Each parameter in PostgreSQL's text form and its type, for ``_PgPrepared``.

    Text and NULL go untyped, for PostgreSQL to infer from the statement as it does for
    psycopg's text; an integer goes as a bigint, so a statement reads it as a number
    wherever psycopg's would. None when a value is of a type only psycopg's adapters
    know, or is text libpq would cut short (it reads text parameters as C strings,
    which end at a NUL): psycopg then sends (or refuses) it.
    """
    values: list[bytes | None] = []
    types: list[int] = []
    for value in params:
        if value is None:
            values.append(None)
            types.append(_UNKNOWN_OID)
        elif isinstance(value, str):
            if "\x00" in value:
                return None
            values.append(value.encode(encoding))
            types.append(_UNKNOWN_OID)
        elif isinstance(value, int):  # a bool too: an integer, as ``_once`` sends it
            if value not in _INT8_RANGE:
                return None
            values.append(str(int(value)).encode())
            types.append(_INT8_OID)
        else:
            return None
    return values, tuple(types)


def _cursor_rows(cursor: Any, sql: str, params: Params) -> list[Any]:
    """``sql`` run on a psycopg cursor (a bool sent as an integer) and its rows, if any."""
    adapted = [int(p) if isinstance(p, bool) else p for p in params]
    result = cursor.execute(to_pyformat(sql), adapted).pgresult
    # Whether rows came back, from the result itself: ``description`` builds a Column
    # per column, a tenth of a claim's Python time.
    return list(cursor.fetchall()) if result and result.nfields else []


class _PgPrepared:
    """One thread's connection's statements for ``Database.once_tuples``, prepared on the
    server once and then run by libpq itself.

    The claim and the completion are a statement each, many times a second. Through a
    psycopg cursor each spent 60-90 µs of the interpreter's time (its query conversion,
    adapters and prepared-statement bookkeeping, in Python), as much as the rest of the
    coordinator's cycle, and a coordinator's threads take turns at that lock (issue 21).
    Here a statement costs a third of that. Its parameters go as text with the types
    ``_text_params`` gives them (a statement is prepared once per set of types, as
    psycopg does); its rows are loaded by psycopg's own loaders, so they are the values
    a cursor gives. A statement PostgreSQL cannot prepare this way is left to the cursor.
    """

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        from psycopg.adapt import Transformer

        self.conn = conn
        self._names: dict[tuple[str, tuple[int, ...]], bytes | None] = {}
        self._made = 0  # names are never used twice on a connection
        self._rows = Transformer(conn)
        self._encoding = conn.info.encoding

    def run(self, sql: str, params: Params) -> list[tuple[Any, ...]] | None:
        """The statement's rows, or None: the cursor must run it (see the class)."""
        import psycopg
        from psycopg.pq import DiagnosticField, ExecStatus

        sent = _text_params(params, self._encoding)
        if sent is None:
            return None
        values, types = sent
        key = (sql, types)
        for _ in range(2):
            name = self._names.get(key, b"")
            if name is None:
                return None
            pgconn = self.conn.pgconn
            if not name:
                self._made += 1
                name = f"runner_{self._made}".encode()
                text = to_numbered(sql).encode(self._encoding)
                if pgconn.prepare(name, text, types).status != ExecStatus.COMMAND_OK:
                    self._names[key] = None
                    return None
                self._names[key] = name
            # None is SQL NULL to libpq (psycopg passes it so; its stubs leave it out).
            result = pgconn.exec_prepared(name, cast("list[bytes]", values))
            if result.error_field(DiagnosticField.SQLSTATE) != _NO_SUCH_STATEMENT:
                break
            # psycopg deallocates every prepared statement of its connection after a
            # rollback or a DROP (its own cache's rule), ours too: nothing ran, so
            # prepare again (once) under new names.
            self._names.clear()
        status = result.status
        if status == ExecStatus.TUPLES_OK:
            self._rows.set_pgresult(result)
            rows: list[tuple[Any, ...]] = self._rows.load_rows(0, result.ntuples, tuple)
            return rows
        if status == ExecStatus.COMMAND_OK:
            return []
        raise psycopg.errors.error_from_result(result, encoding=self._encoding)

    def rows(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        """``run``, or psycopg's cursor on this connection where ``run`` leaves it."""
        fast = self.run(sql, params)
        if fast is not None:
            return fast
        from psycopg.rows import tuple_row

        return _cursor_rows(self.conn.cursor(row_factory=tuple_row), sql, params)


class SqliteWrite:
    """A write transaction on SQLite's one connection, as a plain context manager.

    ``Database.transaction`` opens it on SQLite, and the coordinator's turn opens it
    directly (``Database.write_turn``): a generator's enter and exit, with the calls
    around them, were a tenth of a claim-and-complete cycle's interpreter time (issue
    21). It takes the connection's lock, begins (IMMEDIATE: it writes), commits when the
    block ends and rolls back on an exception; in a thread's open write transaction it
    joins that one. One use per instance.
    """

    __slots__ = ("_db", "_tx")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._tx: Transaction | None = None

    def __enter__(self) -> Transaction:
        db = self._db
        outer: Transaction | None = getattr(db._local, "tx", None)
        if outer is not None:
            if not outer.write:
                raise RuntimeError("cannot write inside a read-only transaction")
            return outer
        tx = Transaction(db, write=True)
        db._lock.acquire()
        try:
            db._sqlite().execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            db._lock.release()
            if isinstance(exc, _driver_errors()):
                raise _translate(exc) from exc
            raise
        db._local.tx = tx
        self._tx = tx
        return tx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        if tx is None:  # joined an outer transaction, which ends it
            return
        self._tx = None
        db = self._db
        try:
            conn = db._sqlite()
            if exc_type is not None:
                conn.rollback()
                return
            if not conn.in_transaction:
                # SQLite rolled it back itself (a full disk, an I/O error) in a statement
                # whose error the block caught and went on from: nothing of it was
                # written, and committing now would do nothing and say nothing.
                raise StoreError(
                    "the database rolled back a transaction after an error inside it",
                    hint="check the disk holding the database, then try again",
                )
            try:
                conn.commit()
            except _driver_errors() as error:
                conn.rollback()
                raise _translate(error) from error
        finally:
            db._local.tx = None
            db._lock.release()


class Database:
    """A connection to the state database. Safe to share between threads."""

    def __init__(
        self,
        *,
        dialect: Dialect,
        url: str,
        sqlite_conn: sqlite3.Connection | None = None,
        pg_conn: psycopg.Connection[Row] | None = None,
    ) -> None:
        self.dialect: Dialect = dialect
        self.url = url
        self._sqlite_conn = sqlite_conn
        self._sqlite_tuple_cursor: sqlite3.Cursor | None = None
        self._pg_conn = pg_conn
        # SQLite's one connection, taken in turns. An RLock wakes a waiter at each
        # release: with 8 threads claiming in one process most wakes are lost races
        # (1.3 context switches a claim), but the server claims on one thread, and a
        # lock whose waiters slept and retried instead made its event loop oversleep
        # behind the stalled-job resetter (BENCHMARKS.md, coordfloor).
        self._lock = threading.RLock()
        self._local = threading.local()
        # PostgreSQL: one connection per thread (a server serves requests in
        # parallel), each replaced when the server dropped it (a restart).
        # Each open one, with the thread it serves (None: the one opened with the database).
        self._pg_conns: dict[psycopg.Connection[Row], threading.Thread | None] = {}
        self._pg_factory: Callable[..., psycopg.Connection[Row]] | None = None
        # Connections whose planner may not sort (``once_tuples(index_order=True)``):
        # idle ones, and every one open (closed with the database).
        self._unsorted_idle: list[_PgPrepared] = []
        self._unsorted_open: list[psycopg.Connection[Row]] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        if pg_conn is not None:
            self._local.pg = pg_conn
            self._pg_conns[pg_conn] = None

    def __repr__(self) -> str:
        return f"Database({self.dialect}, {display_url(self.url)!r})"

    def _sqlite(self) -> sqlite3.Connection:
        if self._sqlite_conn is None:
            raise StoreError("the database is closed", hint="open it again")
        return self._sqlite_conn

    def _pg(self) -> psycopg.Connection[Row]:
        if self._closed or self._pg_conn is None:
            raise StoreError("the database is closed", hint="open it again")
        conn: psycopg.Connection[Row] | None = getattr(self._local, "pg", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._new_pg()
        return conn

    def _pg_cursor(self, *, tuples: bool = False) -> psycopg.Cursor[Any]:
        """This thread's cursor on its connection, for ``once``: one made per statement
        (and its adapters map copied) was a tenth of psycopg's time per statement.
        ``tuples``: its other cursor, giving rows as tuples (``once_tuples``)."""
        conn = self._pg()
        slot = "pg_tuple_cursor" if tuples else "pg_cursor"
        cursor: psycopg.Cursor[Any] | None = getattr(self._local, slot, None)
        if cursor is None or cursor.connection is not conn:
            if tuples:
                from psycopg.rows import tuple_row

                cursor = conn.cursor(row_factory=tuple_row)
            else:
                cursor = conn.cursor()
            setattr(self._local, slot, cursor)
        return cursor

    def _pg_prepared(self) -> _PgPrepared:
        """This thread's connection's prepared statements (``once_tuples``)."""
        conn = self._pg()
        kept: _PgPrepared | None = getattr(self._local, "pg_prepared", None)
        if kept is None or kept.conn is not conn:
            kept = _PgPrepared(conn)
            self._local.pg_prepared = kept
        return kept

    @contextmanager
    def _pg_unsorted(self) -> Iterator[_PgPrepared]:
        """A connection from the pool whose planner may not sort, for one statement.

        As many are open as statements ran at once (``UNSORTED_KEPT`` of them kept
        idle): a claim at a time per executor's request, not one per server thread.
        """
        with self._pool_lock:
            if self._closed or self._pg_factory is None:
                raise StoreError("the database is closed", hint="open it again")
            kept = self._unsorted_idle.pop() if self._unsorted_idle else None
        if kept is None:
            conn = self._pg_factory(UNSORTED_OPTIONS)
            kept = _PgPrepared(conn)
            with self._pool_lock:
                self._unsorted_open = [c for c in self._unsorted_open if not c.closed]
                self._unsorted_open.append(conn)
        try:
            yield kept
        finally:
            conn = kept.conn
            with self._pool_lock:
                back = (
                    not (conn.closed or self._closed) and len(self._unsorted_idle) < UNSORTED_KEPT
                )
                if back:
                    self._unsorted_idle.append(kept)
            if not back:
                conn.close()

    def _sqlite_tuples(self) -> sqlite3.Cursor:
        """The cursor of ``once_tuples`` on SQLite's one connection (used under ``_lock``)."""
        conn = self._sqlite()
        cursor = self._sqlite_tuple_cursor
        if cursor is None or cursor.connection is not conn:
            cursor = conn.cursor()
            cursor.row_factory = None
            self._sqlite_tuple_cursor = cursor
        return cursor

    def _new_pg(self) -> psycopg.Connection[Row]:
        if self._pg_factory is None:
            raise StoreError("the database connection was lost", hint="open it again")
        conn = self._pg_factory()
        self._local.pg = conn
        me = threading.current_thread()
        with self._lock:
            # A thread that ended leaves its connection behind: closed here, or a process
            # whose threads come and go (8 a round in the coordinator bench) ran out of
            # the server's connections.
            for c, owner in list(self._pg_conns.items()):
                if owner is not None and not owner.is_alive():
                    c.close()
                if c.closed:
                    del self._pg_conns[c]
            self._pg_conns[conn] = me
        return conn

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        """A transaction that commits when the block ends and rolls back on an exception.

        A nested call on the same thread joins the outer transaction.
        """
        outer: Transaction | None = getattr(self._local, "tx", None)
        if outer is not None:
            if write and not outer.write:
                raise RuntimeError("cannot write inside a read-only transaction")
            yield outer
            return
        if write and self.dialect == "sqlite":
            with SqliteWrite(self) as tx:
                yield tx
            return
        tx = Transaction(self, write=write)
        self._local.tx = tx
        try:
            if self.dialect == "postgresql":
                yield from self._pg_transaction(tx)
            else:
                # One SQLite connection is shared: its transactions take turns.
                with self._lock:
                    yield tx  # no BEGIN/COMMIT, as on PostgreSQL (_pg_transaction)
        finally:
            self._local.tx = None

    def _pg_transaction(self, tx: Transaction) -> Iterator[Transaction]:
        if not tx.write:
            # Read committed gives each statement its own snapshot inside a transaction
            # too, so a read-only block loses nothing without BEGIN and COMMIT, and a
            # lone SELECT is one round trip instead of three (most of a claim's reads).
            yield tx
            return
        import psycopg

        conn = self._pg()
        try:
            begin = conn.transaction()
            try:
                begin.__enter__()
            except psycopg.OperationalError:
                # The server dropped the connection (a restart): nothing of this
                # transaction has happened yet, so reconnect and begin again.
                conn = self._new_pg()
                begin = conn.transaction()
                begin.__enter__()
            try:
                yield tx
            except BaseException as exc:
                begin.__exit__(type(exc), exc, exc.__traceback__)
                raise
            begin.__exit__(None, None, None)
        except _driver_errors() as exc:
            raise _translate(exc) from exc

    def run(
        self,
        work: Callable[[Transaction], T],
        *,
        write: bool = True,
        attempts: int = 5,
        retry_on: tuple[type[StoreError], ...] = (BusyError,),
    ) -> T:
        """Run ``work`` in a transaction, retrying it from scratch on ``retry_on`` errors."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction(write=write) as tx:
                    return work(tx)
            except retry_on:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def write_turn(self) -> AbstractContextManager[object]:
        """``transaction()`` to write on SQLite, without a generator's cost (``SqliteWrite``)."""
        if self.dialect != "sqlite":
            raise RuntimeError("write turns are SQLite's")
        return SqliteWrite(self)

    def turns(self) -> AbstractContextManager[object]:
        """Held around a unit of work of several statements and their Python, on SQLite.

        SQLite's one connection is taken statement by statement in turns anyway;
        taking it once for a whole claim spares the threads waiting for it the
        hand-offs of the interpreter's lock between statements (a fifth more claims
        with 8 threads, issue 21). Re-entrant; nothing on PostgreSQL.
        """
        return self._lock if self.dialect == "sqlite" else nullcontext()

    def once(self, sql: str, params: Params = (), *, attempts: int = 5) -> list[Row]:
        """Run one statement as a transaction of its own and return its rows.

        No ``BEGIN`` and ``COMMIT`` around it: on PostgreSQL that is one round
        trip instead of three, which is most of a claim's or a completion's
        cost. Inside an open transaction it joins it. Retried on ``BusyError``.
        """
        outer: Transaction | None = getattr(self._local, "tx", None)
        if outer is not None:
            return outer.all(sql, params)
        rows: list[Row] = self._once(sql, params, attempts, tuples=False)
        return rows

    def once_tuples(
        self, sql: str, params: Params = (), *, attempts: int = 5, index_order: bool = False
    ) -> list[tuple[Any, ...]]:
        """``once``, each row a tuple in the statement's column order.

        For the queue's claim and completion, which read their rows by position: a
        row as a dict cost 4 µs of a cycle's Python per row on SQLite (its
        ``description`` built again for every row), more than decoding the record.

        ``index_order``: on PostgreSQL, plan the statement without sorting, so the
        order it asks for must come from an index (the claim's; see
        ``UNSORTED_OPTIONS``). Inside an open transaction it runs as any other.
        """
        outer: Transaction | None = getattr(self._local, "tx", None)
        if outer is not None:
            return outer.tuples(sql, params)
        rows: list[tuple[Any, ...]] = self._once(
            sql, params, attempts, tuples=True, index_order=index_order
        )
        return rows

    def _once(
        self, sql: str, params: Params, attempts: int, *, tuples: bool, index_order: bool = False
    ) -> list[Any]:
        for attempt in range(1, attempts + 1):
            try:
                if self.dialect == "postgresql" and index_order:
                    with self._pg_unsorted() as unsorted:
                        return unsorted.rows(sql, params)
                if self.dialect == "postgresql":
                    if tuples:
                        fast = self._pg_prepared().run(sql, params)
                        if fast is not None:
                            return fast
                    return _cursor_rows(self._pg_cursor(tuples=tuples), sql, params)
                with self._lock:
                    if tuples:
                        # SQLite answers every statement, one without rows with none.
                        return self._sqlite_tuples().execute(sql, tuple(params)).fetchall()
                    sqlite_cursor = self._sqlite().execute(sql, tuple(params))
                    return list(sqlite_cursor.fetchall()) if sqlite_cursor.description else []
            except _driver_errors() as exc:
                error = _translate(exc)
                if isinstance(error, BusyError) and attempt < attempts:
                    continue
                raise error from exc
        raise AssertionError("unreachable")

    # Migrations -------------------------------------------------------------

    def _table_exists(self, tx: Transaction, table: str) -> bool:
        if self.dialect == "postgresql":
            return tx.scalar("SELECT to_regclass(?) IS NOT NULL AS present", [table]) is True
        found = tx.scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        )
        return found is not None

    def applied_migrations(self) -> dict[int, str]:
        with self.transaction(write=False) as tx:
            if not self._table_exists(tx, MIGRATIONS_TABLE):
                return {}
            rows = tx.all(f"SELECT version, name FROM {MIGRATIONS_TABLE}")  # noqa: S608
        return {int(r["version"]): str(r["name"]) for r in rows}

    def migrate(self, migrations: Iterable[Migration] | None = None) -> list[int]:
        """Apply the given (default: every registered) migrations not applied yet.

        Returns the versions applied now. Safe when several processes start at once.
        """
        wanted = ordered(registered() if migrations is None else migrations)
        applied = self.applied_migrations()
        self._check_names(wanted, applied)
        pending = [m for m in wanted if m.version not in applied]
        done: list[int] = []
        for migration in pending:
            with self.transaction() as tx:
                tx.lock("runner:migrations")
                tx.execute(
                    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                already = tx.scalar(
                    f"SELECT name FROM {MIGRATIONS_TABLE} WHERE version = ?",  # noqa: S608
                    [migration.version],
                )
                if already is not None:
                    continue
                tx.script(migration.script(self.dialect))
                tx.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at)"  # noqa: S608
                    " VALUES (?, ?, ?)",
                    [migration.version, migration.name, db_time(SYSTEM_CLOCK.now())],
                )
                done.append(migration.version)
        return done

    @staticmethod
    def _check_names(wanted: Sequence[Migration], applied: dict[int, str]) -> None:
        for migration in wanted:
            name = applied.get(migration.version)
            if name is not None and name != migration.name:
                raise StoreError(
                    f"database migration {migration.version} is {name!r} in the database "
                    f"but {migration.name!r} in this runner",
                    hint="use the runner version that created this database, or a new database",
                )

    def close(self) -> None:
        with self._lock:
            if self._sqlite_conn is not None:
                self._sqlite_conn.close()
                self._sqlite_conn = None
                self._sqlite_tuple_cursor = None
            if self._pg_conn is not None:
                for conn in self._pg_conns:
                    conn.close()
                self._pg_conns = {}
                with self._pool_lock:
                    for conn in self._unsorted_open:
                        conn.close()
                    self._unsorted_open = []
                    self._unsorted_idle = []
                self._pg_conn = None
            self._closed = True

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect_sqlite(url: str, busy_timeout_s: float) -> Database:
    path = sqlite_path(url)
    if path != ":memory:":
        parent = Path(path).parent
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
        if not Path(path).exists():
            # SQLite gives its -wal and -shm files the mode of the database file.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = _sqlite_row
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows (destroyed ciphertexts) are overwritten, not left in free pages.
        conn.execute("PRAGMA secure_delete = ON")
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot open the SQLite database {path}: {_first_line(exc)}",
            hint="check that the folder exists and is writable, or set RUNNER_DATABASE_URL",
        ) from exc
    return Database(dialect="sqlite", url=url, sqlite_conn=conn)


def _connect_postgres(url: str, busy_timeout_s: float) -> Database:
    import psycopg
    from psycopg.rows import dict_row

    def connect_once(options: str | None = None) -> psycopg.Connection[Row]:
        try:
            conn: psycopg.Connection[Row] = psycopg.connect(
                url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, int(busy_timeout_s)),
                options=options,  # None: left out of the connection string
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the database at {display_url(url)}: {_first_line(exc)}",
                hint="check RUNNER_DATABASE_URL and that the PostgreSQL server is running",
            ) from exc
        return conn

    db = Database(dialect="postgresql", url=url, pg_conn=connect_once())
    db._pg_factory = connect_once
    return db


def connect(
    url: str,
    *,
    migrations: Iterable[Migration] | None = None,
    busy_timeout_s: float = 30.0,
) -> Database:
    """Open ``sqlite:///PATH`` or ``postgresql://…`` and apply pending migrations.

    ``migrations`` defaults to every registered one (``runner.migrations``).
    """
    if url.startswith("sqlite:"):
        db = _connect_sqlite(url, busy_timeout_s)
    elif url.startswith(("postgresql:", "postgres:")):
        db = _connect_postgres(url, busy_timeout_s)
    else:
        raise StoreError(
            f"unsupported database URL {display_url(url)!r}",
            hint="use sqlite:///PATH or postgresql://USER@HOST/DB in RUNNER_DATABASE_URL",
        )
    try:
        db.migrate(migrations)
    except BaseException:
        db.close()
        raise
    return db
