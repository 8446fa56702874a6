"""Views: the open conversations in view order (a partial index, both stores).

See ``tidings.store.tables_indexes.conversations_open_sort``: the Active views (states
new and assigned) walk it in order and stop after a page instead of sorting every open
conversation the agent may see.

Revision ID: 0014
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    where = sa.text("state IN ('new', 'assigned')")
    op.create_index(
        "ix_conversations_open_sort",
        "conversations",
        ["starred", "last_message_at", "id"],
        postgresql_where=where,
        sqlite_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_open_sort", table_name="conversations")
