"""SQLite through `tidings.store.sqlite_connection`: same answers, one driver trip a statement."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from tidings.store import Store, engine, sqlite_connection
from tidings.store.sqlite_connection import deferred_writes, execute_many
from tidings.store.types import UTCDateTime

pytestmark = pytest.mark.anyio

_meta = sa.MetaData()
ITEMS = sa.Table(
    "items",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
)
TYPED = sa.Table(
    "typed",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=True),
    sa.Column("data", sa.JSON, nullable=True),
    sa.Column("flag", sa.Boolean, nullable=True),
    sa.Column("note", sa.String(50), nullable=True),
)


async def count_trips(store: Store, monkeypatch: pytest.MonkeyPatch, trips: list[str]) -> None:
    """From now on each crossing to the driver thread is named in ``trips``: the function
    run there, after "N+" when N deferred statements ran before it."""
    original = sqlite_connection.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(fn, "__name__", repr(fn))
        if fn is sqlite_connection._after:
            name = f"{len(args[1])}+{args[2].__name__}"
        trips.append(name)
        return await original(self, fn, *args, **kwargs)

    async with store.read() as conn:  # open the pooled connection before counting
        await conn.execute(sa.text("SELECT 1"))
    monkeypatch.setattr(sqlite_connection.Connection, "_execute", counted)


async def names(store: Store) -> list[str]:
    async with store.read() as conn:
        return list((await conn.execute(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))).scalars())


@pytest.fixture
def anyio_backend(each_event_loop: Any) -> Any:
    """uvloop (what deployments run on) and asyncio's own loop alike."""
    return each_event_loop


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = Store.open(f"sqlite:///{tmp_path / 'conn.db'}")
    async with s.engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
    yield s
    await s.close()


async def test_connections_are_set_up_for_concurrent_use(store: Store) -> None:
    """WAL (readers beside one writer), NORMAL syncs, foreign keys, a busy wait, pages
    read through a memory map, and SQLite's own checkpoint only as a safety net."""
    pragmas = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "mmap_size",
               "wal_autocheckpoint")  # fmt: skip
    async with store.read() as conn:
        got = {p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar_one() for p in pragmas}
    assert got == {
        "journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 30000,
        "mmap_size": engine.MMAP_BYTES, "wal_autocheckpoint": engine.WAL_AUTOCHECKPOINT_PAGES,
    }  # fmt: skip


async def test_the_engine_opens_our_connection(store: Store) -> None:
    async with store.read() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite_connection.Connection)


async def test_rows_rowcount_and_lastrowid_come_back(store: Store) -> None:
    async with store.write() as conn:
        first = await conn.execute(sa.insert(ITEMS).values(name="a"))
        assert first.inserted_primary_key == (1,)
        await conn.execute(sa.insert(ITEMS), [{"name": "b"}, {"name": "c"}, {"name": "d"}])
        changed = await conn.execute(
            sa.update(ITEMS).where(ITEMS.c.id > 2).values(name="x" + ITEMS.c.name)
        )
        assert changed.rowcount == 2
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(ITEMS.c.id, ITEMS.c.name).order_by(ITEMS.c.id))).all()
        assert rows == [(1, "a"), (2, "b"), (3, "xc"), (4, "xd")]
        one = (await conn.execute(sa.select(ITEMS.c.name).where(ITEMS.c.id == 2))).scalar_one()
        assert one == "b"
        none = (await conn.execute(sa.select(ITEMS.c.name).where(ITEMS.c.id == 99))).first()
        assert none is None
        partial = await conn.execute(sa.select(ITEMS.c.id).order_by(ITEMS.c.id))
        assert partial.fetchmany(3) == [(1,), (2,), (3,)]
        assert partial.fetchmany(3) == [(4,)]


async def test_errors_are_sqlalchemys_and_roll_back(store: Store) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with store.write() as conn:
            await conn.execute(sa.insert(ITEMS).values(name="same"))
            await conn.execute(sa.insert(ITEMS).values(name="same"))
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        async with store.read() as conn:
            await conn.execute(sa.text("SELECT * FROM missing"))
    async with store.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(ITEMS))).scalar() == 0


async def test_each_statement_is_one_trip_to_the_driver_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    async with store.write() as conn:
        await conn.execute(sa.insert(ITEMS).values(name="a"))
        rows = (await conn.execute(sa.select(ITEMS.c.name))).all()
    assert rows == [("a",)]
    # BEGIN IMMEDIATE with the INSERT, the SELECT (with its rows), and the commit; the
    # pool's rollback on return finds no open transaction and stays on this side.
    assert trips == ["1+_run", "_run", "commit"]


async def test_a_transaction_that_runs_nothing_costs_no_trip(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    async with store.write():
        pass
    async with store.read():
        pass
    assert trips == []


async def test_begin_immediate_takes_the_write_lock_before_the_first_statement(
    store: Store, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "conn.db", timeout=0, isolation_level=None)
    try:
        async with store.write() as conn:
            await conn.execute(sa.select(ITEMS.c.id))  # a read, yet the write lock is ours
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released by the commit
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_free_write_lock_is_taken_on_the_loops_thread_and_nothing_crosses(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    ran_on: list[int] = []
    original = sqlite_connection._run

    def run(conn: sqlite3.Connection, sql: str, parameters: Any) -> Any:
        ran_on.append(threading.get_ident())
        return original(conn, sql, parameters)

    monkeypatch.setattr(sqlite_connection, "_run", run)
    other = sqlite3.connect(tmp_path / "conn.db", timeout=0, isolation_level=None)
    try:
        async with store.write() as conn, deferred_writes(conn):
            await conn.execute(sa.insert(ITEMS).values(name="a"))  # takes the lock here
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # it is ours
            await conn.execute(sa.insert(ITEMS), [{"name": "b"}, {"name": "c"}])  # waits
            rows = (await conn.execute(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))).scalars()
            assert list(rows) == ["a", "b", "c"]  # the waiting write ran first
            updated = await conn.execute(
                sa.update(ITEMS).where(ITEMS.c.id > 1).values(name="x" + ITEMS.c.name)
            )
            assert updated.rowcount == 2  # answered at once, not deferred
            timeout = (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar_one()
            assert timeout == 30_000  # zero only while the lock was tried
            await conn.execute(sa.insert(ITEMS), [{"name": "d"}])  # waits for the commit
        other.execute("BEGIN IMMEDIATE")  # the commit let go of the lock
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert trips == []  # BEGIN, statements and COMMIT: all on the loop's thread
    assert set(ran_on) == {threading.get_ident()}
    assert await names(store) == ["a", "xb", "xc", "d"]
    # A transaction of deferred writes alone takes the lock at its commit, here too.
    trips.clear()
    async with store.write() as conn, deferred_writes(conn):
        await conn.execute(sa.insert(ITEMS), [{"name": "e"}, {"name": "f"}])
    assert trips == []
    # A read transaction holds no write lock: its statements keep crossing (its commit,
    # which writes nothing, does not: see test_a_transaction_that_changed_no_row_...).
    async with store.read() as conn, deferred_writes(conn):
        await conn.execute(sa.select(ITEMS.c.id))
        await conn.execute(sa.select(ITEMS.c.id))
    assert trips == ["1+run", "run"]


async def test_a_write_lock_held_elsewhere_is_waited_for_on_the_driver_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Another connection's write lock is never waited for on the loop's thread: the BEGIN
    crosses, with the writes deferred so far and the statement that needs them, and waits
    there (``busy_timeout``); the lock then ours, the rest runs on the loop's thread."""
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    other = sqlite3.connect(
        tmp_path / "conn.db", timeout=0, isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release() -> None:
        other.execute("ROLLBACK")
        released.set()

    timer = threading.Timer(0.3, release)
    try:
        async with store.write() as conn, deferred_writes(conn):
            await conn.execute(sa.insert(ITEMS), [{"name": "a"}, {"name": "b"}, {"name": "c"}])
            await conn.execute(
                sa.update(ITEMS)
                .where(ITEMS.c.name == sa.bindparam("old"))
                .values(name=sa.bindparam("new")),
                [{"old": "b", "new": "y"}, {"old": "c", "new": "z"}],
            )
            assert trips == []  # BEGIN IMMEDIATE and both writes wait on this side
            timer.start()
            seen = (await conn.execute(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))).scalars()
            assert released.is_set()  # it waited for the other connection...
            assert list(seen) == ["a", "y", "z"]  # ...then ran the writes, then the SELECT
            await conn.execute(sa.insert(ITEMS), [{"name": "d"}, {"name": "e"}])
            timeout = (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar_one()
            assert timeout == 30_000
    finally:
        timer.cancel()
        other.close()
    # One crossing: BEGIN, both writes and the SELECT; the last write and COMMIT ran here.
    assert trips == ["3+_run"]
    assert await names(store) == ["a", "y", "z", "d", "e"]


async def test_a_transaction_that_changed_no_row_ends_on_the_loops_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with store.write() as conn:
        await conn.execute(sa.insert(ITEMS).values(name="a"))
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    other = sqlite3.connect(tmp_path / "conn.db", isolation_level=None)
    try:
        async with store.read() as conn:
            assert await _names_in(conn) == ["a"]
            other.execute("INSERT INTO items (name) VALUES ('b')")
            assert await _names_in(conn) == ["a"]  # one snapshot for the transaction
        assert trips == ["1+_run", "_run"]  # the commit did not cross...
        async with store.read() as conn:
            assert await _names_in(conn) == ["a", "b"]  # ...and it ended the snapshot
        trips.clear()
        # One that ends in a rollback, as the pool's reset after an error does.
        with pytest.raises(LookupError):
            async with store.read() as conn:
                await conn.execute(sa.select(ITEMS.c.id))
                raise LookupError
        assert trips == ["1+_run"]
        # A DEFERRED transaction that changed rows crosses for its commit, as a write does;
        # so does an IMMEDIATE one whatever it ran.
        trips.clear()
        async with store.engine.begin() as conn:
            await conn.execute(sa.update(ITEMS).where(ITEMS.c.name == "b").values(name="c"))
        async with store.write() as conn:
            await conn.execute(sa.select(ITEMS.c.id))
        assert trips == ["1+_run", "commit", "1+_run", "commit"]
        other.execute("BEGIN IMMEDIATE")  # nobody holds the write lock any more
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await names(store) == ["a", "c"]


async def _names_in(conn: Any) -> list[str]:
    return list((await conn.execute(sa.select(ITEMS.c.name).order_by(ITEMS.c.id))).scalars())


async def test_a_failing_statement_holding_the_lock_raises_and_nothing_commits(
    store: Store,
) -> None:
    async with store.write() as conn, deferred_writes(conn):
        await conn.execute(sa.insert(ITEMS).values(name="first"))
        with pytest.raises(sa.exc.IntegrityError):  # on this thread, from its own execute
            await conn.execute(sa.insert(ITEMS).values(name="first"))
        await conn.rollback()
    with pytest.raises(sa.exc.IntegrityError) as raised:
        async with store.write() as conn, deferred_writes(conn):
            await conn.execute(sa.insert(ITEMS).values(name="first"))
            await conn.execute(sa.insert(ITEMS), [{"name": "same"}, {"name": "same"}])
            await conn.execute(sa.select(ITEMS.c.id))  # the waiting write fails here
    assert "raised by a deferred statement" in "".join(getattr(raised.value.orig, "__notes__", []))
    assert await names(store) == []
    async with store.write() as conn, deferred_writes(conn):  # the connection is usable again
        await conn.execute(sa.insert(ITEMS).values(name="ok"))
    assert await names(store) == ["ok"]


async def test_a_deferred_write_that_fails_fails_the_next_statement_and_nothing_commits(
    store: Store,
) -> None:
    twice = [{"name": "same"}, {"name": "same"}]
    with pytest.raises(sa.exc.IntegrityError) as raised:
        async with store.write() as conn, deferred_writes(conn):
            await conn.execute(sa.insert(ITEMS), [{"name": "first"}, {"name": "second"}])
            await conn.execute(sa.insert(ITEMS), twice)  # no error here yet
            await conn.execute(sa.select(ITEMS.c.id))
    assert "raised by a deferred statement: INSERT INTO items" in "".join(
        getattr(raised.value.orig, "__notes__", [])
    )
    with pytest.raises(sa.exc.IntegrityError):  # the commit runs them: it raises
        async with store.write() as conn, deferred_writes(conn):
            await conn.execute(sa.insert(ITEMS), [{"name": "first"}, {"name": "second"}])
            await conn.execute(sa.insert(ITEMS), twice)
    assert await names(store) == []


async def test_a_rollback_drops_the_deferred_writes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    with pytest.raises(LookupError):
        async with store.write() as conn, deferred_writes(conn):
            await conn.execute(sa.insert(ITEMS), [{"name": "a"}, {"name": "b"}])
            raise LookupError
    assert trips == []  # SQLite never saw the transaction: nothing to undo
    async with store.write() as conn:
        await conn.execute(sa.insert(ITEMS), [{"name": "c"}, {"name": "d"}])
    assert await names(store) == ["c", "d"]


async def test_outside_a_block_or_a_transaction_writes_cross_at_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    async with store.write() as conn:
        await conn.execute(sa.insert(ITEMS), [{"name": "a"}, {"name": "b"}])
    async with store.engine.connect() as conn:
        async with deferred_writes(conn):  # no transaction yet: nothing is deferred
            await conn.execute(sa.insert(ITEMS), [{"name": "c"}, {"name": "d"}])
            assert trips == ["1+_run_many", "commit", "1+_run_many"]
        await conn.commit()
    assert await names(store) == ["a", "b", "c", "d"]


def typed_rows(first: int) -> list[dict[str, Any]]:
    warsaw = timezone(timedelta(hours=2))
    return [
        {"id": first, "at": datetime(2025, 3, 1, 8, 0, tzinfo=UTC), "data": {"a": [1, "ż"]},
         "flag": True, "note": "x"},
        {"id": first + 1, "at": datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=warsaw), "data": None,
         "flag": False, "note": None},
        {"id": first + 2, "at": None, "data": [], "flag": None, "note": "ö"},
    ]  # fmt: skip


def stored_rows(tmp_path: Path, sql: str) -> list[Any]:
    """``sql``'s rows read from the database file by a connection of its own: the text
    SQLite holds, not what SQLAlchemy's result processors make of it."""
    raw = sqlite3.connect(tmp_path / "conn.db")
    try:
        return raw.execute(sql).fetchall()
    finally:
        raw.close()


async def test_execute_many_writes_what_sqlalchemy_writes_without_its_per_row_work(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    async with store.write() as conn:
        await conn.execute(sa.insert(TYPED), typed_rows(1))  # SQLAlchemy's own way
    trips.clear()
    async with store.write() as conn, deferred_writes(conn):
        await execute_many(conn, sa.insert(TYPED), typed_rows(11))
        moved = [{"old": 11, "new": 21, "at": datetime(2026, 1, 1, tzinfo=UTC)}]
        await execute_many(
            conn,
            sa.update(TYPED)
            .where(TYPED.c.id == sa.bindparam("old"))
            .values(id=sa.bindparam("new"), at=sa.bindparam("at")),
            moved,
        )
        assert trips == []  # both wait on this side, as deferred writes do
    assert trips == []  # the commit took the free write lock here and ran them
    stored = stored_rows(tmp_path, "SELECT id, at, data, flag, note FROM typed ORDER BY id")
    assert stored[:3] == [
        (1, "2025-03-01 08:00:00.000000", '{"a": [1, "\\u017c"]}', 1, "x"),
        (2, "0999-01-02 01:04:05.000006", "null", 0, None),
        (3, None, "[]", None, "\u00f6"),
    ]
    # The same text, byte for byte, as SQLAlchemy's path; the UPDATE moved row 11.
    assert stored[3:] == [(12, *stored[1][1:]), (13, *stored[2][1:]),
                          (21, "2026-01-01 00:00:00.000000", *stored[0][2:])]  # fmt: skip
    async with store.read() as conn:
        back = (await conn.execute(sa.select(TYPED).where(TYPED.c.id == 12))).one()
    assert back.at == datetime(999, 1, 2, 1, 4, 5, 6, tzinfo=UTC)  # aware UTC, as ever


async def test_execute_many_takes_the_values_a_statement_sets_itself(
    store: Store, tmp_path: Path
) -> None:
    # ``.values(note=None, flag=True)`` are parameters no row names; a row naming only the
    # bound ones must get them as SQLAlchemy's own path does.
    async with store.write() as conn:
        await conn.execute(sa.insert(TYPED), typed_rows(1))
    statement = (
        sa.update(TYPED)
        .where(TYPED.c.id == sa.bindparam("b_id"))
        .values(note=None, flag=True, at=sa.bindparam("b_at"))
    )
    when = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    async with store.write() as conn, deferred_writes(conn):
        await execute_many(conn, statement, [{"b_id": 1, "b_at": when}])
    async with store.write() as conn:
        await conn.execute(statement, [{"b_id": 2, "b_at": when}])  # SQLAlchemy's own way
    stored = stored_rows(tmp_path, "SELECT id, at, flag, note FROM typed ORDER BY id")
    assert stored[:2] == [
        (1, "2026-02-03 04:05:06.000000", 1, None),
        (2, "2026-02-03 04:05:06.000000", 1, None),
    ]


async def test_execute_many_outside_deferred_writes_is_conn_execute(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    await count_trips(store, monkeypatch, trips)
    async with store.write() as conn:
        await execute_many(conn, sa.insert(ITEMS), [{"name": "a"}, {"name": "b"}])
        assert trips == ["1+_run_many"]  # SQLAlchemy's executemany, at once
    with pytest.raises(sa.exc.IntegrityError) as raised:
        async with store.write() as conn, deferred_writes(conn):
            await execute_many(conn, sa.insert(ITEMS), [{"name": "c"}, {"name": "c"}])
            await conn.execute(sa.select(ITEMS.c.id))  # the waiting write fails here
    assert "raised by a deferred statement: INSERT INTO items" in "".join(
        getattr(raised.value.orig, "__notes__", [])
    )
    assert await names(store) == ["a", "b"]


def in_the_file(path: Path) -> list[str]:
    """The item names the database file itself holds, its WAL not read."""
    raw = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return [row[0] for row in raw.execute("SELECT name FROM items ORDER BY id")]
    except sqlite3.OperationalError:  # the table is still only in the WAL
        return []
    finally:
        raw.close()


async def test_commits_are_checkpointed_by_a_thread_of_their_own(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "conn.db"
    async with store.read() as conn:
        checkpointer = (await conn.get_raw_connection()).driver_connection.checkpointer
    assert isinstance(checkpointer, sqlite_connection.Checkpointer)
    woken: list[int] = []
    wake = checkpointer.committed
    monkeypatch.setattr(checkpointer, "committed", lambda: woken.append(1))
    async with store.write() as conn:
        await conn.execute(sa.insert(ITEMS), [{"name": "a"}, {"name": "b"}])
    async with store.read() as conn:
        await conn.execute(sa.select(ITEMS.c.id))
    assert woken == [1]  # the write's commit, not the read's
    assert in_the_file(path) == []  # the commit itself did not checkpoint
    before = checkpointer.checkpoints

    def checkpointed() -> bool:
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == before and time.monotonic() < deadline:
            time.sleep(0.01)
        return checkpointer.checkpoints > before

    wake()
    assert await anyio.to_thread.run_sync(checkpointed)
    assert in_the_file(path) == ["a", "b"]
    thread = checkpointer._thread
    assert thread is not None
    assert thread.name == "sqlite-checkpoint"
    await store.close()  # disposing of the engine ends the thread
    assert not thread.is_alive()
    assert checkpointer._thread is None


async def test_a_database_in_memory_has_no_checkpointer() -> None:
    memory = Store.open("sqlite://")
    try:
        async with memory.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x)"))
            raw = (await conn.get_raw_connection()).driver_connection
        assert raw.checkpointer is None
    finally:
        await memory.close()
