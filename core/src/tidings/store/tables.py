"""The schema, as SQLAlchemy Core tables. Alembic migrations must produce exactly this
(``tests`` compare them), so every change here comes with a migration.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.types import Id, UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

channel_state = sa.Table(
    "channel_state",
    metadata,
    sa.Column("account_id", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    comment="Per-account state a channel keeps between runs (e.g. IMAP UIDVALIDITY/last UID).",
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("display_name", sa.String(300), nullable=False, server_default=""),
    sa.Column("vip", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("owner", sa.String(300), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("type in ('person', 'organisation')", name="type"),
)

contact_addresses = sa.Table(
    "contact_addresses",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "contact_id",
        Id,
        sa.ForeignKey("contacts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(20), nullable=False),
    # '' rather than NULL for unscoped addresses so the unique constraint holds on both stores.
    sa.Column("scope", sa.String(200), nullable=False, server_default=""),
    sa.Column("value", sa.String(320), nullable=False),
    sa.Column("label", sa.String(100), nullable=True),
    sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("contact_id", "kind", "scope", "value", name="uq_contact_addresses_addr"),
    sa.Index("ix_contact_addresses_lookup", "kind", "scope", "value"),
)
