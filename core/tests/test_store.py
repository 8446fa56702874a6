"""The store on both backends: migrations, transactions, time zones, channel state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tidings import Address, ContactType
from tidings.contacts import add_contact, find_by_address
from tidings.errors import ConfigError
from tidings.store import Store, async_url, current_revision, head_revision, tables
from tidings.store.tables_indexes import made_by_migrations

pytestmark = pytest.mark.anyio


async def test_upgrade_reaches_head_and_is_idempotent(store: Store) -> None:
    assert await current_revision(store.engine) == head_revision()
    assert await store.upgrade() == head_revision()


async def test_migrations_produce_exactly_the_declared_schema(store: Store) -> None:
    def diff(conn: sa.Connection) -> list[object]:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, type_, _: not made_by_migrations(name, type_),
            },
        )
        return list(compare_metadata(ctx, tables.metadata))

    async with store.read() as conn:
        assert await conn.run_sync(diff) == []


async def test_postgresql_sessions_plan_without_jit(postgres_url: str) -> None:
    """Views are short queries with high estimated costs: JIT compiling would dominate."""
    store = Store.open(postgres_url)
    try:
        async with store.read() as conn:
            assert (await conn.execute(sa.text("SHOW jit"))).scalar_one() == "off"
    finally:
        await store.close()


async def test_write_rolls_back_on_error(store: Store) -> None:
    await store.set_state("acct", "k", {"uid": 1})
    with pytest.raises(RuntimeError):
        async with store.write() as conn:
            await store.set_state("acct", "k2", {"uid": 2}, conn=conn)
            raise RuntimeError
    assert await store.get_state("acct", "k") == {"uid": 1}
    assert await store.get_state("acct", "k2") is None


async def test_postgresql_reads_hold_no_transaction(postgres_url: str) -> None:
    """A read on PostgreSQL runs without BEGIN and COMMIT (each statement has its own
    snapshot at READ COMMITTED either way), and the connection it used still writes
    atomically afterwards."""
    store = Store.open(postgres_url, pool_size=1, max_overflow=0)  # one connection, reused
    try:
        await store.upgrade()
        await store.set_state("acct", "k", {"uid": 1})
        async with store.read() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
            assert raw.info.transaction_status.name == "IDLE"  # not INTRANS: nothing open
        with pytest.raises(RuntimeError):
            async with store.write() as conn:
                await store.set_state("acct", "k", {"uid": 2}, conn=conn)
                assert (await conn.get_raw_connection()).driver_connection is raw
                assert raw.info.transaction_status.name == "INTRANS"
                raise RuntimeError
        assert await store.get_state("acct", "k") == {"uid": 1}
    finally:
        await store.close()


async def test_channel_state_upserts(store: Store) -> None:
    assert await store.get_state("mbox", "INBOX") is None
    await store.set_state("mbox", "INBOX", {"uidvalidity": 7, "last_uid": 10})
    await store.set_state("mbox", "INBOX", {"uidvalidity": 7, "last_uid": 42})
    await store.set_state("other", "INBOX", {"uidvalidity": 1, "last_uid": 1})
    assert await store.get_state("mbox", "INBOX") == {"uidvalidity": 7, "last_uid": 42}


async def test_datetimes_come_back_aware_utc(store: Store) -> None:
    warsaw = timezone(timedelta(hours=1))
    when = datetime(2026, 11, 22, 13, 30, tzinfo=warsaw)
    async with store.write() as conn:
        await conn.execute(
            sa.insert(tables.channel_state).values(
                account_id="a", key="k", value={}, updated_at=when
            )
        )
    async with store.read() as conn:
        got = (await conn.execute(sa.select(tables.channel_state.c.updated_at))).scalar_one()
    assert got == when
    assert got.tzinfo == UTC


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        async with store.write() as conn:
            await conn.execute(
                sa.insert(tables.channel_state).values(
                    account_id="a", key="k", value={}, updated_at=datetime(2026, 1, 1)
                )
            )


async def test_concurrent_writers_do_not_fail(store: Store) -> None:
    """SQLite write transactions take the lock up front (BEGIN IMMEDIATE): no SQLITE_BUSY."""

    async def bump(i: int) -> None:
        async with store.write() as conn:
            await store.set_state("acct", f"k{i % 5}", {"i": i}, conn=conn)
            await conn.execute(sa.select(tables.channel_state))
            await store.set_state("acct", "counter", {"last": i}, conn=conn)

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(bump, i)
    async with store.read() as conn:
        count = await conn.execute(sa.select(sa.func.count()).select_from(tables.channel_state))
        assert count.scalar_one() == 6


async def test_contacts_are_found_by_normalised_address(store: Store) -> None:
    cid = await add_contact(
        store,
        type=ContactType.ORGANISATION,
        display_name="ACME sp. z o.o.",
        addresses=[Address.email("Biuro@ACME.pl"), Address.phone("+48 22 100 20 30")],
        vip=True,
    )
    (match,) = await find_by_address(store, Address.email("Biuro@acme.PL"))
    assert match.external_id == str(cid)
    assert match.type is ContactType.ORGANISATION
    assert match.vip
    assert [a.key for a in match.addresses] == ["email:Biuro@acme.pl", "phone:+48221002030"]
    assert await find_by_address(store, Address.email("biuro@acme.pl")) == []  # local part kept
    psid = Address.scoped("77", scope="page1")
    await add_contact(store, type=ContactType.PERSON, display_name="P", addresses=[psid])
    assert await find_by_address(store, Address.scoped("77", scope="page2")) == []
    assert len(await find_by_address(store, psid)) == 1


async def test_deleting_a_contact_removes_its_addresses(store: Store) -> None:
    cid = await add_contact(
        store, type=ContactType.PERSON, display_name="X", addresses=[Address.phone("+48600100200")]
    )
    async with store.write() as conn:
        await conn.execute(sa.delete(tables.contacts).where(tables.contacts.c.id == cid))
    async with store.read() as conn:
        left = await conn.execute(sa.select(sa.func.count()).select_from(tables.contact_addresses))
        assert left.scalar_one() == 0


def test_database_urls_map_to_async_drivers() -> None:
    assert async_url("sqlite:///./x.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert async_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        async_url("mysql://u@h/db")
    with pytest.raises(ConfigError, match="database_url"):
        async_url("not a url")
