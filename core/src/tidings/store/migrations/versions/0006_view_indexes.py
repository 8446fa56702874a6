"""Indexes for the conversation views (tidings.store.tables_indexes)

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_conversations_state_sort": ["state", "starred", "last_message_at", "id"],
    "ix_conversations_created": ["created_at"],
    "ix_conversations_closed": ["closed_at"],
}


def upgrade() -> None:
    for name, columns in _INDEXES.items():
        op.create_index(name, "conversations", columns, unique=False)


def downgrade() -> None:
    for name in reversed(_INDEXES):
        op.drop_index(name, table_name="conversations")
