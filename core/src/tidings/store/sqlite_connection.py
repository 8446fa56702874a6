"""SQLite connections that cross to the driver thread once per statement, not four times.

aiosqlite runs each sqlite3 call on the connection's own thread and wakes the event loop
when it is done. SQLAlchemy's adapter makes four such calls for every statement: create a
cursor, execute, fetch all rows, close. Each crossing costs a queue put, a thread wake-up,
a wake-up of the event loop and a wait for the GIL on both sides, far more than SQLite
spends on a small indexed statement. An agent's reply (about twenty statements) spent most
of its CPU in these crossings (cProfile of the conversation benchmark's agents: 87 per
service call).

:class:`Connection` keeps aiosqlite's thread and its API, but its cursors run the whole
statement — execute, fetch every row, close — in one call on the driver thread and keep
the rows, ``description``, ``rowcount`` and ``lastrowid`` on the event-loop side. Fetching
and closing are then plain reads of that copy.

The one thing given up is streaming: a server-side cursor (``stream()``, ``yield_per``)
would hold all its rows at once. tidings reads SQLite in pages (views, search, the
outbox's batches), never by streaming a result, so nothing uses it.

Statements that answer nothing wait on this side and run, in order, on the next crossing
(before the next statement that crosses, or before the commit): a transaction's BEGIN
always, and inside :func:`deferred_writes` its ``executemany`` statements (multi-row
INSERTs and UPDATEs: no rows come back, and SQLAlchemy reads nothing else from them). A
batch's write transaction then crosses about once per read, not once per statement.
On a busy machine each crossing costs far more than its CPU: the wake-up of the other
thread (a futex, an IPI on a virtual machine) kept the loop off its core for ~0.5 ms per
statement in the mail sync benchmark.

Inside :func:`deferred_writes`, once a write transaction's ``BEGIN IMMEDIATE`` has run, the
write lock is ours and no statement can wait on another connection (WAL: readers never
block a writer), so its statements (with the writes waiting before them) and its commit run
on the event loop's thread, without crossing. Timed in the mail sync (5,000
messages, 17 crossings per batch of 50), a crossing waited ~1.3 ms to start and ~0.4 ms to
hand its answer back, around ~0.3 ms of SQLite's work.
The ``BEGIN IMMEDIATE`` itself is first tried on the event loop's thread with SQLite's busy
timeout at zero: when no other connection holds the write lock (a worker alone on its
database, nearly always) it is ours at once, and the whole transaction runs without a
crossing. Only when another connection holds it does the BEGIN cross, to wait for it on the
driver thread (``busy_timeout``) rather than stall the loop. Under load a crossing costs far
more than its CPU: the loop runs every task that became ready before it comes back to the
transaction, twice per crossing, and the process's other writers queue behind the lock
meanwhile. The SMS worker's claim and recording transactions (two crossings each) held the
lock for 30-80 ms a batch with fifty sends in flight; without the crossings the worker's
CPU per message fell by a tenth to a fifth (``bench/README.md``, session 10).

A transaction begun ``DEFERRED`` that changed no row (a read: every ``store.read()``) ends
on the event loop's thread too. Its COMMIT only lets go of the read snapshot: no lock to
wait for, nothing to write. Which transactions changed rows ``total_changes`` tells
(triggers' changes included); one that ran only DDL commits here as well, which is correct,
merely not off the loop.

A write's commit does not checkpoint the WAL (copy it into the database file and sync
both) in the committing connection, as SQLite's automatic checkpoint does once the log
holds 1,000 pages: a :class:`Checkpointer` thread does it after commits, at most once a
second. In the mail sync one commit in five ran that checkpoint, 30-85 ms each, with the
event loop waiting for it (~17 ms per commit on average, ~2 ms without). With
``synchronous=NORMAL`` a WAL commit syncs nothing either: one made on the event loop's
thread (above) appends the transaction's pages to the log, no more.

:func:`execute_many` runs a Core statement's ``executemany`` inside :func:`deferred_writes`
without SQLAlchemy's per-row work: a batch's multi-row writes spent more of the event
loop's CPU in SQLAlchemy building each row's parameter dict and running it through the
type processors one call at a time (~12 % of the loop in the mail sync) than SQLite spent
writing them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from operator import itemgetter
from typing import Any

import aiosqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

log = logging.getLogger("tidings.store")

Row = tuple[Any, ...]
_Outcome = tuple[Any, int, int | None, list[Row], bool]
_Deferred = list[tuple[str, list[Any] | None]]
_BEGIN_IMMEDIATE = ("BEGIN IMMEDIATE", None)


def _run(conn: sqlite3.Connection, sql: str, parameters: Any) -> _Outcome:
    """On the driver thread: the statement and everything SQLAlchemy will read from it."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, conn.in_transaction
    finally:
        cursor.close()


def _run_many(conn: sqlite3.Connection, sql: str, parameters: Iterable[Any]) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.executemany(sql, parameters)
        return None, cursor.rowcount, cursor.lastrowid, [], conn.in_transaction
    finally:
        cursor.close()


def _after(
    conn: sqlite3.Connection, deferred: _Deferred, fn: Callable[..., _Outcome], *args: Any
) -> _Outcome:
    """On the driver thread: the deferred statements in order, then ``fn``. One that fails
    raises here, and ``fn`` does not run (its caller sees the error the earlier statement
    made, with a note naming it)."""
    for sql, parameters in deferred:
        try:
            if parameters is None:  # BEGIN
                conn.execute(sql)
            else:
                _run_many(conn, sql, parameters)
        except sqlite3.Error as exc:
            exc.add_note(f"raised by a deferred statement: {sql[:200]}")
            raise
    return fn(conn, *args)


def _commit(conn: sqlite3.Connection) -> _Outcome:
    conn.commit()
    return None, -1, None, [], conn.in_transaction


class Cursor:
    """The aiosqlite cursor interface SQLAlchemy uses, answered from one driver call."""

    __slots__ = ("_conn", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._rows: deque[Row] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, Cursor]:
        # `await conn.cursor()` works as with aiosqlite, without a trip to the thread.
        yield from ()
        return self

    async def execute(self, sql: str, parameters: Any = None) -> Cursor:
        self._keep(await self._conn.on_thread(_run, sql, parameters or ()))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        conn = self._conn
        if conn.deferring and conn.open:
            # Runs on the next crossing; nothing to read from it meanwhile (the DB-API's
            # "cannot be determined" rowcount).
            conn.deferred.append((sql, list(parameters)))
            self._keep((None, -1, None, [], True))
        else:
            self._keep(await conn.on_thread(_run_many, sql, parameters))
        return self

    def _keep(self, outcome: _Outcome) -> None:
        self.description, self.rowcount, self.lastrowid, rows, self._conn.open = outcome
        self._rows = deque(rows)

    async def fetchone(self) -> Row | None:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Row]:
        count = min(len(self._rows), self.arraysize if size is None else size)
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> Sequence[Row]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()


class Connection(aiosqlite.Connection):
    """aiosqlite's connection (its thread, close) with :class:`Cursor`.

    ``open`` says whether SQLite had a transaction open after the last statement. Without
    one, ``commit`` and ``rollback`` are no-ops in sqlite3; here they also skip the trip —
    the pool's rollback of every connection handed back after a commit is one of those.
    """

    open = True  # unknown until the first statement: take the trip
    checkpointer: Checkpointer | None = None
    """Told about each write this connection commits (see :class:`Checkpointer`)."""
    deferring = False
    """Inside :func:`deferred_writes`: ``executemany`` waits for the next crossing."""
    holding = False
    """The open transaction took the write lock inside :func:`deferred_writes`: it ends
    (commit or rollback) on the event loop's thread, even after the block."""
    busy_timeout: int | None = None
    """SQLite's busy timeout (ms) as the connection was set up, read on first need."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: _Deferred = []
        self._changes_at_begin: int | None = None
        """``total_changes`` when a DEFERRED transaction began (None: IMMEDIATE, or none)."""

    def begin(self, mode: str) -> None:
        """Start a transaction (``BEGIN DEFERRED`` or ``IMMEDIATE``) with its first
        statement, in the same crossing. An IMMEDIATE one still takes the write lock
        before that statement runs; a transaction that runs none costs no crossing."""
        self.deferred.append((f"BEGIN {mode}", None))
        self.open = True
        # Read on this thread: every call on the connection is awaited, none runs now.
        self._changes_at_begin = self._conn.total_changes if mode == "DEFERRED" else None

    @property
    def locked(self) -> bool:
        """Inside :func:`deferred_writes`, holding the write lock: statements run on the
        event loop's thread."""
        return self.holding and self.deferring

    def _read_only(self) -> bool:
        """The open transaction began DEFERRED and has changed no row (see the module)."""
        return self._changes_at_begin == self._conn.total_changes

    def _unseen(self) -> bool:
        """The transaction's BEGIN is still waiting: SQLite has not seen it yet."""
        return bool(self.deferred) and self.deferred[0][1] is None

    async def commit(self) -> None:
        if not self.holding and len(self.deferred) > 1:
            # Only deferred writes since the BEGIN (they wait only inside the block).
            self._begin_here()
        if self._unseen() and len(self.deferred) == 1:  # nothing to commit
            self.deferred.clear()
            self.open = False
        if self.open:
            if self.holding:
                # The write lock is ours: the waiting writes and the commit wait on nothing.
                # One that fails raises here; the transaction stays open for the rollback.
                deferred, self.deferred = self.deferred, []
                _after(self._conn, deferred, _commit)
            elif self.deferred:  # in the same crossing: they fail, nothing is committed
                await self.on_thread(_commit)
            elif self._read_only():
                self._conn.commit()  # ends the read snapshot, on this thread
                self.open = False
                return
            else:
                await super().commit()
            self.open = self.holding = False
            if self.checkpointer is not None:
                self.checkpointer.committed()
        self._changes_at_begin = None

    async def rollback(self) -> None:
        if self._unseen():
            self.open = False
        self.deferred.clear()  # never run: what they would have written is undone anyway
        if self.open:
            if self.holding or self._read_only():
                self._conn.rollback()
            else:
                await super().rollback()
            self.open = False
        self.holding = False
        self._changes_at_begin = None

    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)

    async def on_thread(self, fn: Callable[..., _Outcome], *args: Any) -> _Outcome:
        """``fn(sqlite3_connection, *args)`` on the driver thread, after the deferred
        statements: one crossing. Holding the write lock (``locked``, or taken here at
        once: ``_lock_here``), on this thread."""
        if self.deferring and not self.holding:
            self._begin_here()
        if self.locked:
            if self.deferred:
                deferred, self.deferred = self.deferred, []
                return _after(self._conn, deferred, fn, *args)
            return fn(self._conn, *args)
        locks = self.deferring and self._begins_immediate()
        if self.deferred:
            deferred, self.deferred = self.deferred, []
            args = (deferred, fn, *args)
            fn = _after
        result: _Outcome = await self._execute(fn, self._conn, *args)  # type: ignore[no-untyped-call]
        if locks and result[4]:
            self.holding = True
        return result

    def _begins_immediate(self) -> bool:
        """A write transaction's BEGIN is still waiting."""
        return bool(self.deferred) and self.deferred[0] == _BEGIN_IMMEDIATE

    def _begin_here(self) -> None:
        """Take the write lock for the waiting ``BEGIN IMMEDIATE`` on this thread, if it is
        free right now; the transaction then ends on this thread too (``holding``)."""
        if self._begins_immediate() and self._lock_here():
            del self.deferred[0]
            self.holding = True

    def _lock_here(self) -> bool:
        """``BEGIN IMMEDIATE`` on this thread if the write lock is free right now; False,
        with nothing begun, when another connection holds it (see the module)."""
        conn = self._conn
        if self.busy_timeout is None:
            self.busy_timeout = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout}")
        return True


class Checkpointer:
    """Checkpoints one database's WAL on a thread of its own, off the commits' path.

    Each write commit wakes it (:meth:`committed`); it then runs a PASSIVE checkpoint, which
    waits for no reader or writer, and sleeps ``interval`` before it looks again, so a
    stream of commits is checkpointed about once per interval and a lone commit at once.
    The log is synced to disk by each checkpoint (``synchronous=NORMAL``), so a commit is
    on disk within about ``interval`` plus one checkpoint, however little is written (SQLite's
    automatic checkpoint waited for 1,000 pages). Connections keep SQLite's automatic
    checkpoint as a safety net, at :data:`tidings.store.engine.WAL_AUTOCHECKPOINT_PAGES`.
    The thread starts with the first commit and ends with :meth:`stop`.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], interval: float = 1.0) -> None:
        self._connect = connect
        self.interval = interval
        self.checkpoints = 0
        """Checkpoints run so far."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def committed(self) -> None:
        self._wake.set()
        if self._thread is None:
            with self._start:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="sqlite-checkpoint", daemon=True
                    )
                    self._thread.start()

    def stop(self) -> None:
        """End the thread (after the checkpoint under way); a later commit starts another."""
        with self._start:
            self._stopping.set()
            self._wake.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self._stopping.clear()

    def _run(self) -> None:
        conn = self._connect()
        try:
            while self._wake.wait() and not self._stopping.is_set():
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # tried again after the next commit
                    log.warning("checkpointing the SQLite log failed: %s", exc)
                self.checkpoints += 1
                if self._stopping.wait(self.interval):
                    return
        finally:
            conn.close()


def connect(database: str, checkpointer: Checkpointer | None = None, **kwargs: Any) -> Connection:
    """Open like ``aiosqlite.connect``: the arguments are ``sqlite3.connect``'s, and the
    ``checkpointer`` told about the writes this connection commits."""
    # Used from the event loop's thread as well while a write transaction holds the lock
    # (``Connection.locked``), never from two threads at once: every call is awaited.
    kwargs["check_same_thread"] = False
    connector: Callable[[], sqlite3.Connection] = partial(sqlite3.connect, database, **kwargs)
    connection = Connection(connector, iter_chunk_size=64)
    # As SQLAlchemy does for aiosqlite's own connections: a connection the pool never
    # closed must not keep the interpreter from exiting.
    connection._thread.daemon = True
    # Named, so profilers and /proc/PID/task tell the driver's CPU from the loop's.
    connection._thread.name = "sqlite-driver"
    connection.checkpointer = checkpointer
    return connection


@asynccontextmanager
async def deferred_writes(conn: AsyncConnection) -> AsyncIterator[None]:
    """Within the block, ``conn``'s multi-row writes wait for its next crossing to the
    driver thread, and once a write transaction holds the lock its statements run on this
    thread (see the module's docstring); a no-op on PostgreSQL, whose driver pipelines by
    itself, and outside a transaction.

    The price: a failing multi-row write raises from the next statement, or from the
    commit, not from its own ``execute``; either way the transaction
    commits nothing of it. Only for code that does not catch a write's error to go on, and
    whose statements are short (they hold up the event loop while they run).
    """
    driver = None
    if conn.dialect.name == "sqlite" and conn.in_transaction():
        driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, Connection) or driver.deferring:
        yield
        return
    driver.deferring = True
    try:
        yield
    finally:
        driver.deferring = False


@dataclass(frozen=True)
class _Positional:
    """A statement compiled once for SQLite, and how a row's values become its parameters
    (the same processors SQLAlchemy applies: JSON text, UTC datetimes as naive text)."""

    sql: str
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def parameters(self, rows: Iterable[Mapping[str, Any]]) -> list[Sequence[Any]]:
        values, processors = self.values, self.processors
        if not processors:
            return [values(row) for row in rows]
        out: list[Sequence[Any]] = []
        for row in rows:
            line = list(values(row))
            for index, process in processors:
                line[index] = process(line[index])
            out.append(line)
        return out


@lru_cache(maxsize=256)
def _positional(
    statement: Executable, dialect: Dialect, keys: tuple[str, ...]
) -> _Positional | None:
    """``statement`` for rows with ``keys``; None when SQLAlchemy would add values of its
    own to each row (Python-side column defaults), which only its own path computes."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    names = compiled.positiontup
    if compiled.insert_prefetch or compiled.update_prefetch or not names:
        return None
    # Values the statement itself sets (``.values(error_code=None)``) are parameters no row
    # names: SQLAlchemy takes them from the statement, and so do we.
    fixed: dict[str, Any] = {}
    for name in names:
        if name not in keys:
            bind = compiled.binds[name]
            if bind.required or bind.callable is not None:
                return None
            fixed[name] = bind.value
    getter = itemgetter(*names)
    by_row: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
        getter if len(names) > 1 else lambda row: (getter(row),)
    )
    values = (lambda row: by_row({**fixed, **row})) if fixed else by_row
    processors = []
    for index, name in enumerate(names):
        bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors.append((index, process))
    return _Positional(compiled.string, values, tuple(processors))


async def execute_many(
    conn: AsyncConnection, statement: Executable, rows: Sequence[Mapping[str, Any]]
) -> None:
    """``conn.execute(statement, rows)`` for a statement that answers nothing (INSERT,
    UPDATE, DELETE with bind parameters); every row has the same keys.

    Inside :func:`deferred_writes` on SQLite the rows go to the driver as positional
    parameters, converted by the column types' processors in one loop (see the module);
    the statement then waits like any deferred write, and an error it raises comes from
    the next statement, wrapped by SQLAlchemy as usual. Anywhere else, and for statements
    whose rows SQLAlchemy must complete, it is ``conn.execute``.
    """
    if not rows:
        return
    if conn.dialect.name == "sqlite" and conn.in_transaction() and conn.sync_connection:
        # Inside a transaction the pooled connection is there: no I/O to reach it.
        driver = conn.sync_connection.connection.driver_connection
        if isinstance(driver, Connection) and driver.deferring and driver.open:
            plan = _positional(statement, conn.dialect, tuple(rows[0]))
            if plan is not None:
                await driver.cursor().executemany(plan.sql, plan.parameters(rows))  # waits
                return
    await conn.execute(statement, rows)
