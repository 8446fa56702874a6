"""Search: the words of each conversation, so the walking plan tests one row per conversation.

A common search walks a view in order and tests each conversation. Testing its messages'
documents one by one reads ~10 of them for every conversation that does not match, which
is most of them: near the plans' crossover (a query in ~1 % of messages) that was 25-45 ms
of CPU at a million messages on SQLite. ``conversation_words`` holds every word the
conversation's messages ever held (``tidings.store.search.index_messages`` adds them), so
one row answers "no" for most conversations and only the others have their messages read.
A plain table, not a full-text index: only ever read by key. SQLite keeps the words as
text, PostgreSQL as a ``tsvector`` (its ``||`` merges words atomically under concurrent
ingestion). Both are filled from the existing search index here.

Revision ID: 0011
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0002"
branch_labels = None
depends_on = None

_CHUNK = 5_000
"""Conversations filled per statement on SQLite (bounded memory on a large database)."""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE conversation_words ("
            " conversation_id BIGINT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,"
            " vector TSVECTOR NOT NULL)"
        )
        op.execute(
            "INSERT INTO conversation_words (conversation_id, vector) "
            "SELECT s.conversation_id, array_to_tsvector(array_agg(DISTINCT w.lexeme)) "
            "FROM message_search AS s, unnest(s.vector) AS w "
            "GROUP BY s.conversation_id"
        )
        return
    op.execute(
        "CREATE TABLE conversation_words ("
        " conversation_id INTEGER PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,"
        " tokens TEXT NOT NULL)"
    )
    high = bind.execute(sa.text("SELECT max(id) FROM conversations")).scalar()
    for start in range(0, (high or 0) + 1, _CHUNK):
        words: dict[int, dict[str, None]] = {}
        rows = bind.execute(
            sa.text(
                "SELECT m.conversation_id, s.tokens FROM messages AS m "
                "JOIN message_search AS s ON s.rowid = m.id "
                "WHERE m.conversation_id >= :a AND m.conversation_id < :b"
            ),
            {"a": start, "b": start + _CHUNK},
        )
        for cid, tokens in rows:
            words.setdefault(cid, {}).update(dict.fromkeys(tokens.split()))
        filled = [{"cid": cid, "tokens": " ".join(w)} for cid, w in words.items() if w]
        if filled:
            bind.execute(
                sa.text(
                    "INSERT INTO conversation_words (conversation_id, tokens) "
                    "VALUES (:cid, :tokens)"
                ),
                filled,
            )


def downgrade() -> None:
    op.execute("DROP TABLE conversation_words")
