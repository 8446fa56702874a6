"""Search on PostgreSQL: every indexed word, so a prefix is searched as the words it begins.

A rare search collects its matches from the GIN index of ``message_search``. For a prefix
(``kurier:*``) GIN cannot intersect posting lists as it does for whole words: it gathers
every row of every word with that prefix into a bitmap first, and only then combines
them. At a million messages ``kurier:* & paczkomat:*`` took 65-100 ms that way, while
``kurier & paczkomat`` took 15 ms. ``search_vocabulary`` lists each word the search
tables hold (``tidings.store.search`` adds new ones), compared bytewise (``C``) so a
prefix is a range of its index; ``search.plan`` turns each query token into the few
words it begins, and keeps the prefix when they are many. A word may be listed twice when
two transactions add it at once (no unique key, so ingestion never waits on another's
new words); the lookup reads distinct words. SQLite: nothing here (FTS5's prefix indexes,
0008, answer prefixes directly).

Revision ID: 0015
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute('CREATE TABLE search_vocabulary (word TEXT COLLATE "C" NOT NULL)')
    op.execute(
        "INSERT INTO search_vocabulary (word) SELECT word FROM ts_stat("
        "'SELECT vector FROM message_search UNION ALL SELECT vector FROM conversation_search'"
        ") ORDER BY word"
    )
    op.execute("CREATE INDEX ix_search_vocabulary_word ON search_vocabulary (word)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE search_vocabulary")
