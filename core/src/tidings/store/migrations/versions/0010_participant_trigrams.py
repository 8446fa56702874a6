"""Participants: an FTS5 trigram index over address keys for the participant filter (SQLite).

The conversation views filter on a substring of a participant's address (digits of a
phone number, part of an email). ``LIKE '%text%'`` reads every participant row: 30 to 70 ms
at a million messages. FTS5's trigram tokenizer answers a substring of three characters or
more from its index. It is an external-content table (the keys stay only in
``participants``), kept in step by triggers, so no code that writes participants changes.
PostgreSQL's filter is left as it is.

Revision ID: 0010
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE VIRTUAL TABLE participant_search USING fts5(address_key, "
        "content = 'participants', content_rowid = 'rowid', tokenize = 'trigram')"
    )
    op.execute(
        "CREATE TRIGGER participant_search_insert AFTER INSERT ON participants BEGIN "
        "INSERT INTO participant_search (rowid, address_key) "
        "VALUES (new.rowid, new.address_key); END"
    )
    op.execute(
        "CREATE TRIGGER participant_search_delete AFTER DELETE ON participants BEGIN "
        "INSERT INTO participant_search (participant_search, rowid, address_key) "
        "VALUES ('delete', old.rowid, old.address_key); END"
    )
    op.execute(
        "CREATE TRIGGER participant_search_update AFTER UPDATE ON participants BEGIN "
        "INSERT INTO participant_search (participant_search, rowid, address_key) "
        "VALUES ('delete', old.rowid, old.address_key); "
        "INSERT INTO participant_search (rowid, address_key) "
        "VALUES (new.rowid, new.address_key); END"
    )
    op.execute("INSERT INTO participant_search (participant_search) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER participant_search_{trigger}")
    op.execute("DROP TABLE participant_search")
