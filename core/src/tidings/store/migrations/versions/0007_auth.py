"""Agent credentials: password hashes and API tokens (tidings.store.tables_auth).

Revision ID: 0007
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.store.types import Id, UTCDateTime

revision = "0007"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_passwords",
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("hash", sa.String(300), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_agent_passwords_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", name="pk_agent_passwords"),
        comment="scrypt hash of an agent's password (tidings.auth.passwords).",
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("name", sa.String(100), nullable=False, server_default=""),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("last_used_at", UTCDateTime, nullable=True),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_api_tokens_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
        sqlite_autoincrement=True,
        comment="Bearer tokens: only their SHA-256 is stored; the token is shown once.",
    )
    op.create_index("ix_api_tokens_agent", "api_tokens", ["agent_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_api_tokens_agent", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("agent_passwords")
