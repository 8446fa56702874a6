"""Alembic environment: always run with a connection handed in by ``tidings.store.migrate``."""

from __future__ import annotations

from alembic import context

from tidings.store.tables import metadata
from tidings.store.tables_indexes import made_by_migrations

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `tidings db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=lambda name, type_, parent: not made_by_migrations(name, type_),
)
with context.begin_transaction():
    context.run_migrations()
