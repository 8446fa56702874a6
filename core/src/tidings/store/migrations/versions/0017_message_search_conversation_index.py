"""Search on PostgreSQL: a message's search row found by its conversation.

A common search walks the view and tests each conversation whose words hold every token
against its messages (``tidings.store.search.conversations_matching``). Reaching them
through ``messages`` read each message's row and then its search row by primary key:
for 'termin dostawa' at a million messages, 2,466 search rows of 162 conversations took
12,600 of the query's 16,600 buffers. ``message_search`` already holds the conversation
id; indexed, the test reads the conversation's search rows directly: the query went from
19 to 9 ms. SQLite: nothing here (its FTS5 table cannot be indexed by an unindexed
column; it keeps reaching them through ``messages``).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX ix_message_search_conversation ON message_search (conversation_id)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_message_search_conversation")
