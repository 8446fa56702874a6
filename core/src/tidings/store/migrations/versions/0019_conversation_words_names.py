"""Search: each conversation's words also hold its customer's name.

A common search walks a view and tests each conversation: its words
(``conversation_words``, 0011) and then its messages, *or* its customer's name. The name
was tested for every conversation whose words said no — a lookup in the name index each,
6.5 of the 25 ms 'termin dostawa' cost at a million messages on SQLite. With the name's
words among the conversation's words, that one row says no for both
(``tidings.store.search.conversations_matching``); ``tidings.store.search`` adds the words
of new and changed names from now on, and this fills in those of the existing names.

Revision ID: 0019
Revises: 0011
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "INSERT INTO conversation_words (conversation_id, vector) "
            "SELECT conversation_id, strip(vector) FROM conversation_search "
            "WHERE vector <> ''::tsvector "
            "ON CONFLICT (conversation_id) "
            "DO UPDATE SET vector = conversation_words.vector || excluded.vector"
        )
        return
    # Appended whole: a word the row already holds is repeated, which the test ignores.
    op.execute(
        "INSERT INTO conversation_words (conversation_id, tokens) "
        "SELECT rowid, tokens FROM conversation_search "
        "WHERE tokens <> '' AND rowid IN (SELECT id FROM conversations) "
        "ON CONFLICT (conversation_id) "
        "DO UPDATE SET tokens = conversation_words.tokens || ' ' || excluded.tokens"
    )


def downgrade() -> None:
    """Nothing to undo: the words may only hold more than the walk needs (see 0011)."""
