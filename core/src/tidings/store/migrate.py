"""Running Alembic from inside tidings (``tidings db upgrade``, ``Store.upgrade``).

The migration scripts ship in the package (``tidings/store/migrations``), so an installed
tidings can upgrade a database with no alembic.ini on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions: it costs half a second of start-up that only
# commands touching the schema should pay.

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The schema the code expects: its migration heads, comma-joined.

    Features may add migrations on parallel branches (each depending on an older
    revision); ``upgrade`` applies every branch, so the schema is the set of heads.
    """
    from alembic.script import ScriptDirectory

    return ",".join(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(conn: sa.Connection) -> str | None:
        heads = MigrationContext.configure(conn).get_current_heads()
        return ",".join(sorted(heads)) if heads else None

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> str:
    from alembic import command

    def run(conn: sa.Connection) -> None:
        command.upgrade(alembic_config(conn), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)
    current = await current_revision(engine)
    assert current is not None
    return current
