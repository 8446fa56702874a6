"""The CRM side tables: field definitions and values, related contacts, activity history,
and reply templates.

They hang on the foundation's ``contacts`` table instead of altering it, so the contact
lookup (``tidings.contacts.find_by_addresses``) keeps working on the columns it always had.
Migration ``0005`` creates exactly these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import metadata
from tidings.store.types import Id, UTCDateTime

contact_fields = sa.Table(
    "contact_fields",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("type", sa.String(20), nullable=False),
    # NULL: the field exists on both person and organisation contacts.
    sa.Column("contact_type", sa.String(20), nullable=True),
    sa.Column("visible", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("editable", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("default_phone", sa.Boolean, nullable=False, server_default=sa.false()),
    # Position of this field in the contact's name (NULL: not part of the name).
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
        name="type",
    ),
    sqlite_autoincrement=True,
    comment="Administrator-defined contact fields; the name is the immutable storage key.",
)

contact_values = sa.Table(
    "contact_values",
    metadata,
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "field_id", Id, sa.ForeignKey("contact_fields.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Index("ix_contact_values_field", "field_id"),
)

contact_relations = sa.Table(
    "contact_relations",
    metadata,
    # One row per pair, the smaller id first, so a relation cannot be stored twice.
    sa.Column("low_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("high_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", Id, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.CheckConstraint("low_id < high_id", name="order"),
    sa.Index("ix_contact_relations_high", "high_id"),
)

contact_activities = sa.Table(
    "contact_activities",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("contact_id", Id, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor_id", Id, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("text", sa.Text, nullable=False, server_default=""),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=True),
    sa.Column("edited_at", UTCDateTime, nullable=True),
    sa.CheckConstraint(
        "kind in ('note', 'status_change', 'attachment', 'email', 'sms', 'call')", name="kind"
    ),
    sa.Index("ix_contact_activities_contact", "contact_id", "at"),
    sqlite_autoincrement=True,
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    # NULL owner: company-wide (administrators write them, everyone uses them).
    sa.Column("owner_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_by", Id, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_templates_owner", "owner_id", "title", "name"),
    sqlite_autoincrement=True,
)
