"""SQLite through `tidings.store.sqlite_connection`: same answers, one driver trip a statement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tidings.store import Store, sqlite_connection

pytestmark = pytest.mark.anyio

_meta = sa.MetaData()
ITEMS = sa.Table(
    "items",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = Store.open(f"sqlite:///{tmp_path / 'conn.db'}")
    async with s.engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
    yield s
    await s.close()


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
    original = sqlite_connection.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    async with store.read() as conn:  # open the pooled connection before counting
        await conn.execute(sa.text("SELECT 1"))
    monkeypatch.setattr(sqlite_connection.Connection, "_execute", counted)
    async with store.write() as conn:
        await conn.execute(sa.insert(ITEMS).values(name="a"))
        rows = (await conn.execute(sa.select(ITEMS.c.name))).all()
    assert rows == [("a",)]
    # BEGIN IMMEDIATE, the INSERT, the SELECT (with its rows), and the commit; the pool's
    # rollback on return finds no open transaction and stays on this side.
    assert trips == ["_run", "_run", "_run", "commit"]
