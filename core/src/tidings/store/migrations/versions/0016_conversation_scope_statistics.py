"""Views on PostgreSQL: joint statistics of the columns every view's scope tests.

A view keeps the conversations of an agent's (project, kind) pairs, in the view's states,
assigned to the agent or to nobody. PostgreSQL estimates such a condition by multiplying
each column's own frequency, as if the columns were independent. They are not: open
conversations are mostly unassigned, closed ones mostly assigned. At a million messages
the flat Active view of an agent of the smaller project was estimated at 134 open
conversations where there were 599. So the planner fetched every message of them (8,115),
sorting to keep the newest 50, instead of walking messages newest first and stopping after
50 (1,183 read). That was 35-60 ms against 7. A multivariate MCV list on these columns
gives the planner their joint frequencies; ``ANALYZE`` fills it now rather than at the next
autovacuum. SQLite: nothing here (its planner has no such statistics; its views are
planned by ``tidings.store.hints``).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

NAME = "st_conversations_scope"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE STATISTICS {NAME} (mcv) ON project_id, kind, state, assignee_id "
               "FROM conversations")  # fmt: skip
    op.execute("ANALYZE conversations")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP STATISTICS {NAME}")
