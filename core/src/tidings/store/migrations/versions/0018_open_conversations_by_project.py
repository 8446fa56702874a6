"""Views on PostgreSQL: the open conversations of each project in view order.

An agent of one project sees a small part of the open conversations. Without this index
PostgreSQL fetched every open conversation of the project the agent may see and sorted
them, testing a search on each first: ``search active (agent): 'faktur'`` for an agent of
the smallest project tested 727 conversations, 14,000 buffers, 14-19 ms. Walking this
index in view order it stops after a page: 793 buffers, 3 ms. The view's scope names one
``project_id =`` per project (``tidings.conversations.queries.visible``), so an agent of
one project gets this walk; agents of several projects and supervisors keep
``ix_conversations_open_sort`` (0014). SQLite: nothing here (its views do not use an
index on the project, see ``tidings.store.hints``).

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX ix_conversations_open_project ON conversations "
        "(project_id, starred, last_message_at, id) WHERE state IN ('new', 'assigned')"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_conversations_open_project")
