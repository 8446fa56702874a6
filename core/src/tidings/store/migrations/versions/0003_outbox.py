"""The outbound pipeline: outbox, early statuses, consent

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tidings.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("address_key", sa.String(length=600), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("updated_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint("state in ('opt_out', 'opt_in')", name=op.f("ck_consents_state")),
        sa.PrimaryKeyConstraint("account_id", "address_key", name=op.f("pk_consents")),
        comment="A customer's STOP/START towards one of our accounts.",
    )
    op.create_table(
        "pending_statuses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("provider_id", sa.String(length=998), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("status_raw", sa.String(length=100), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("occurred_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("received_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_statuses")),
        comment="Reports that arrived before the send call returned the provider id.",
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("pending_statuses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pending_statuses_provider", ["account_id", "provider_id"], unique=False
        )

    op.create_table(
        "outbox",
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("not_before", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claims", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint("state in ('pending', 'sending')", name=op.f("ck_outbox_state")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_outbox_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["state", "not_before"], unique=False)

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("send_delay_seconds", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("send_delay_seconds")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due")

    op.drop_table("outbox")
    with op.batch_alter_table("pending_statuses", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_statuses_provider")

    op.drop_table("pending_statuses")
    op.drop_table("consents")
