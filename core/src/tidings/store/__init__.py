"""The store: one SQLAlchemy async engine over SQLite (embedded) or PostgreSQL.

Services use ``Store.write()`` for a transaction that changes data (committed or rolled back
as a unit) and ``Store.read()`` to read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.store import tables
from tidings.store.engine import DEFAULT_DATABASE_URL, async_url, create_engine
from tidings.store.migrate import current_revision, head_revision, upgrade

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Store",
    "async_url",
    "current_revision",
    "dialect_insert",
    "head_revision",
    "tables",
    "upgrade",
]


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite has one writer at a time. Writers of this process queue here and get the
        # database the moment it is free; left to SQLite's busy handler they sleep in
        # growing steps (up to 100 ms) while it stands idle, which under a burst of webhooks
        # cut throughput tenfold and pushed p99 to seconds (bench/webhooks.py). A nested
        # write transaction in one task raises at once instead of waiting on itself.
        # ``fast_acquire``: a free lock is taken without a round of the event loop (anyio
        # otherwise yields once even then), which under load delayed every write
        # transaction by a whole round of the busy tasks.
        self._writer = anyio.Lock(fast_acquire=True) if engine.dialect.name == "sqlite" else None

    @classmethod
    def open(cls, database_url: str, **engine_kwargs: Any) -> Store:
        return cls(create_engine(database_url, **engine_kwargs))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: the one place callers may branch on the backend."""
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write: committed on success, rolled back on error."""
        async with AsyncExitStack() as stack:
            if self._writer is not None:
                await stack.enter_async_context(self._writer)
            conn = await stack.enter_async_context(self.engine.connect())
            await conn.execution_options(tidings_write=True)
            await stack.enter_async_context(conn.begin())
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading.

        On SQLite a transaction: one snapshot for every statement. On PostgreSQL without
        one (autocommit): at its READ COMMITTED each statement takes its own snapshot even
        inside a transaction, so BEGIN and COMMIT bought nothing but two round trips of a
        view's five to eight, and an open transaction for the length of the read. The
        connection goes back to the pool transactional again, for ``write()``.
        """
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
                return
            async with conn.begin():
                yield conn

    async def upgrade(self) -> str:
        """Bring the schema to the newest migration; returns the revision now current."""
        return await upgrade(self.engine)

    # --- channel state -------------------------------------------------------------------

    async def get_state(self, account_id: str, key: str) -> Any:
        """A channel's saved state for ``key``, or ``None`` when it has none yet."""
        async with self.read() as conn:
            row = await conn.execute(
                sa.select(tables.channel_state.c.value).where(
                    tables.channel_state.c.account_id == account_id,
                    tables.channel_state.c.key == key,
                )
            )
            return row.scalar_one_or_none()

    async def set_state(
        self, account_id: str, key: str, value: Any, conn: AsyncConnection | None = None
    ) -> None:
        """Save state; pass ``conn`` to commit it in the same transaction as the data it
        describes (e.g. the last IMAP UID with the messages up to it)."""
        if conn is None:
            async with self.write() as own:
                await self._upsert_state(own, account_id, key, value)
        else:
            await self._upsert_state(conn, account_id, key, value)

    async def _upsert_state(
        self, conn: AsyncConnection, account_id: str, key: str, value: Any
    ) -> None:
        table = tables.channel_state
        values = {
            "account_id": account_id,
            "key": key,
            "value": value,
            "updated_at": datetime.now(UTC),
        }
        stmt = self.insert(table).values(**values)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.account_id, table.c.key],
                set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
            )
        )

    def insert(self, table: sa.Table) -> Any:
        return dialect_insert(self.dialect, table)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """The backend's INSERT with ``on_conflict_do_*`` (both dialects spell it alike)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
