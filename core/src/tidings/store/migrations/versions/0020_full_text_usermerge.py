"""Search on SQLite: FTS5 merges a level of its indexes from two segments, not four.

``tidings.store.search.compact_step`` merges the full-text indexes' segments in the
background; with ``usermerge`` 2 it leaves at most one per level (3 at a million messages,
against 13 with FTS5's default of 4), and every query looks its tokens up in each
segment. The setting is kept in each index's own configuration. PostgreSQL: nothing here.

Revision ID: 0020
Revises: 0008, 0010
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = ("0008", "0010")  # 0008 made message_search and conversation_search anew
branch_labels = None
depends_on = None

TABLES = ("message_search", "conversation_search", "participant_search")


def _usermerge(segments: int) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:  # our constant names and an int only
        op.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('usermerge', {segments:d})")  # noqa: S608


def upgrade() -> None:
    _usermerge(2)


def downgrade() -> None:
    _usermerge(4)
