"""Contacts (CRM): field definitions and values, related contacts, activity history;
reply templates.

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tidings.store.types import Id, UTCDateTime

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact_fields",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("contact_type", sa.String(20), nullable=True),
        sa.Column("visible", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("editable", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("required", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("default_phone", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("name_part", sa.Integer, nullable=True),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mask", sa.String(100), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("region", sa.String(2), nullable=True),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint(
            "type in ('text', 'number', 'datetime', 'dictionary', 'masked', 'phone', 'email')",
            name="ck_contact_fields_type",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_contact_fields"),
        sa.UniqueConstraint("name", name="uq_contact_fields_name"),
        sqlite_autoincrement=True,
        comment="Administrator-defined contact fields; the name is the immutable storage key.",
    )
    op.create_table(
        "contact_values",
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("field_id", Id, nullable=False),
        sa.Column("value", sa.JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_contact_values_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["field_id"],
            ["contact_fields.id"],
            name="fk_contact_values_field_id_contact_fields",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "field_id", name="pk_contact_values"),
    )
    op.create_index("ix_contact_values_field", "contact_values", ["field_id"])
    op.create_table(
        "contact_relations",
        sa.Column("low_id", Id, nullable=False),
        sa.Column("high_id", Id, nullable=False),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", Id, nullable=True),
        sa.CheckConstraint("low_id < high_id", name="ck_contact_relations_order"),
        sa.ForeignKeyConstraint(
            ["low_id"],
            ["contacts.id"],
            name="fk_contact_relations_low_id_contacts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["high_id"],
            ["contacts.id"],
            name="fk_contact_relations_high_id_contacts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["agents.id"],
            name="fk_contact_relations_created_by_agents",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("low_id", "high_id", name="pk_contact_relations"),
    )
    op.create_index("ix_contact_relations_high", "contact_relations", ["high_id"])
    op.create_table(
        "contact_activities",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("contact_id", Id, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor_id", Id, nullable=True),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("edited_at", UTCDateTime, nullable=True),
        sa.CheckConstraint(
            "kind in ('note', 'status_change', 'attachment', 'email', 'sms', 'call')",
            name="ck_contact_activities_kind",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_contact_activities_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["agents.id"],
            name="fk_contact_activities_actor_id_agents",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sha256"], ["blobs.sha256"], name="fk_contact_activities_sha256_blobs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_contact_activities"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_contact_activities_contact", "contact_activities", ["contact_id", "at"])
    op.create_table(
        "templates",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("owner_id", Id, nullable=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_by", Id, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["agents.id"], name="fk_templates_owner_id_agents", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["agents.id"],
            name="fk_templates_created_by_agents",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_templates_owner", "templates", ["owner_id", "title", "name"])


def downgrade() -> None:
    op.drop_index("ix_templates_owner", table_name="templates")
    op.drop_table("templates")
    op.drop_index("ix_contact_activities_contact", table_name="contact_activities")
    op.drop_table("contact_activities")
    op.drop_index("ix_contact_relations_high", table_name="contact_relations")
    op.drop_table("contact_relations")
    op.drop_index("ix_contact_values_field", table_name="contact_values")
    op.drop_table("contact_values")
    op.drop_table("contact_fields")
