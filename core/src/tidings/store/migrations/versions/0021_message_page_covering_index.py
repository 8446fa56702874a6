"""Flat message views on PostgreSQL: the page chosen from the index alone.

A flat view picks its page's 50 ids among every message of the conversations in view
(``Conversations.messages``), ordered by ``sent_at`` then ``id``. SQLite's index of
messages by ``(conversation_id, sent_at)`` holds each row's id (the rowid) already;
PostgreSQL's does not, so it read every candidate message's wide row for its id: 'messages
mine' of one agent at a million messages, 3,218 candidates, took 3,525 buffers, and from a
cold cache 60-70 ms. With ``id`` carried in the index (``INCLUDE``) the choice is an
index-only scan. SQLite: nothing here.

Revision ID: 0021
Revises: 0018
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0018"
branch_labels = None
depends_on = None


def _rebuild(definition: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE INDEX ix_messages_conversation_new ON messages {definition}")
    op.execute("DROP INDEX ix_messages_conversation")
    op.execute("ALTER INDEX ix_messages_conversation_new RENAME TO ix_messages_conversation")


def upgrade() -> None:
    _rebuild("(conversation_id, sent_at) INCLUDE (id)")


def downgrade() -> None:
    _rebuild("(conversation_id, sent_at)")
