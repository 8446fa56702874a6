"""Search on SQLite: message id -> conversation id from a narrow index (SQLite only).

A rare search collects its matching message ids from FTS5 and maps each to its
conversation (``tidings.store.search.matching_conversations``). Through the messages'
primary key every match reads its wide row (text, recipients, meta): near the plans'
crossover (~5,000 matches at a million messages) that was a third of the query. An index
of ``(id, conversation_id)`` answers the same from a few pages: 29 -> 24 ms for 4,500
matches, 6.5 -> 3.9 ms for 700. SQLite's planner prefers the primary key for ``id IN``, so
the query names the index. PostgreSQL maps through ``message_search.conversation_id``:
nothing to do there.

Revision ID: 0013
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE INDEX ix_messages_id_conversation ON messages (id, conversation_id)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP INDEX ix_messages_id_conversation")
