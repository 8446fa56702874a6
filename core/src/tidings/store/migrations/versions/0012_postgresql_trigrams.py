"""Participant and subject filters on PostgreSQL: trigram indexes (``pg_trgm``).

The views filter on a substring of a participant's address and of the subject, ignoring
case: ``lower(column) LIKE '%text%'``. Without an index that reads every row (89-101 ms
p95 for the participant filter at a million messages). A GIN index of ``pg_trgm``'s
trigrams of ``lower(column)`` answers such a ``LIKE`` from the index for a text of three
characters or more, the way SQLite's trigram table ``participant_search`` (0010) does, and
the planner can still walk a view in order instead when most rows match. ``pg_trgm`` is a
trusted extension (PostgreSQL 13+): a database owner may create it. SQLite: nothing here.

Revision ID: 0012
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0002"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_participants_address_trigrams": ("participants", "address_key"),
    "ix_conversations_subject_trigrams": ("conversations", "subject"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, (table, column) in _INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {table} USING gin (lower({column}) gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in _INDEXES:
        op.execute(f"DROP INDEX {name}")
