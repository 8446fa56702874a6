"""Opening a store: URL translation and the per-backend settings, in one place.

Users write ``sqlite:///./tidings.db`` or ``postgresql://…``; the async drivers
(aiosqlite, psycopg 3) are chosen here. Every SQLite/PostgreSQL difference that is not a
column type lives in this module.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tidings.errors import ConfigError
from tidings.store import sqlite_connection

DEFAULT_DATABASE_URL = "sqlite:///./tidings.db"

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def async_url(database_url: str) -> URL:
    """Map a user's database URL to the async driver tidings uses."""
    try:
        url = make_url(database_url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"not a database URL: {exc}", field="database_url") from None
    backend = url.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _DRIVERS:
        raise ConfigError(
            f"unsupported database {backend!r}: use sqlite:///path or postgresql://…",
            field="database_url",
        )
    if "+" not in url.drivername:
        url = url.set(drivername=_DRIVERS[backend])
    return url


class _SqliteConnector:
    """Opens the engine's connections as ours (one trip to the driver thread per statement:
    see `sqlite_connection`), all telling one checkpointer about their commits."""

    def __init__(self) -> None:
        self.checkpointer: sqlite_connection.Checkpointer | None = None

    def __call__(self, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        # The URL's arguments as SQLAlchemy parsed them.
        if self.checkpointer is None and not _in_memory(cargs, cparams):
            # Opened, used and closed on the checkpointer's thread.
            self.checkpointer = sqlite_connection.Checkpointer(
                partial(sqlite3.connect, *cargs, **{**cparams, "check_same_thread": True})
            )
        opener = partial(sqlite_connection.connect, checkpointer=self.checkpointer)
        return dialect.dbapi.connect(*cargs, async_creator_fn=opener, **cparams)

    def stop(self, _engine: Any) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()


def _in_memory(cargs: Any, cparams: Any) -> bool:
    name = str(cargs[0]) if cargs else str(cparams.get("database", ""))
    return name in ("", ":memory:") or "mode=memory" in name


MMAP_BYTES = 1 << 30
"""How much of a SQLite database file each connection reads through a memory map."""

WAL_AUTOCHECKPOINT_PAGES = 10_000
"""SQLite's own checkpoint, in the committing connection, once the log holds this many
pages: only if the checkpointer (`sqlite_connection.Checkpointer`) falls behind."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" event below issues BEGIN itself,
    # so write transactions can take the lock up front (BEGIN IMMEDIATE) instead of failing
    # with SQLITE_BUSY when a read transaction tries to upgrade.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Pages read through a memory map rather than a read() into each connection's own small
    # cache: a view reading thousands of pages cost ~15 % less at a million messages.
    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("tidings_write") else "DEFERRED"
    driver = conn.connection.driver_connection
    if isinstance(driver, sqlite_connection.Connection):
        driver.begin(mode)  # runs with the transaction's first statement: one crossing less
    else:
        conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, **kwargs)
        connector = _SqliteConnector()
        event.listen(engine.sync_engine, "do_connect", connector)
        event.listen(engine.sync_engine, "engine_disposed", connector.stop)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    # No JIT: a view's walk is estimated far above jit_above_cost (its plan costs every
    # row, the LIMIT stops after a page), and compiling it took 50-70 ms of a 100 ms view
    # at a million messages.
    kwargs.setdefault("connect_args", {}).setdefault("options", "-c jit=off")
    return create_async_engine(url, **kwargs)
