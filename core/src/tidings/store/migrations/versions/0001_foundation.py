"""Foundation: channel state and the contact store's addresses.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.store.types import Id, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_state",
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "key", name="pk_channel_state"),
        comment="Per-account state a channel keeps between runs (e.g. IMAP UIDVALIDITY/last UID).",
    )
    op.create_table(
        "contacts",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("display_name", sa.String(300), nullable=False, server_default=""),
        sa.Column("vip", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("owner", sa.String(300), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("type in ('person', 'organisation')", name="ck_contacts_type"),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "contact_addresses",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False, server_default=""),
        sa.Column("value", sa.String(320), nullable=False),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_contact_addresses_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_contact_addresses"),
        sa.UniqueConstraint(
            "contact_id", "kind", "scope", "value", name="uq_contact_addresses_addr"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_contact_addresses_lookup", "contact_addresses", ["kind", "scope", "value"])


def downgrade() -> None:
    op.drop_index("ix_contact_addresses_lookup", table_name="contact_addresses")
    op.drop_table("contact_addresses")
    op.drop_table("contacts")
    op.drop_table("channel_state")
