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
    sqlite_autoincrement=True,
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
    sqlite_autoincrement=True,
)


# --- organisation (the minimum the conversation model needs; routing extends it) ---------

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(300), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(100), nullable=False, unique=True),
    sa.Column("display_name", sa.String(300), nullable=False, server_default=""),
    sa.Column("role", sa.String(20), nullable=False, server_default="agent"),
    sa.Column("can_view_all", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("send_delay_seconds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("role in ('agent', 'supervisor', 'administrator')", name="role"),
    sqlite_autoincrement=True,
)

agent_permissions = sa.Table(
    "agent_permissions",
    metadata,
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(63), primary_key=True),
    comment="An agent may work on conversations of this project and channel kind.",
)

# --- conversations ---------------------------------------------------------------------------

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("project_id", Id, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("account_id", sa.String(100), nullable=False),
    sa.Column("channel", sa.String(63), nullable=False),
    sa.Column("kind", sa.String(63), nullable=False),
    sa.Column("customer_key", sa.String(600), nullable=False),
    sa.Column("customer_name", sa.String(300), nullable=False, server_default=""),
    sa.Column("system_key", sa.String(600), nullable=False, server_default=""),
    # Address-threaded channels: the customer key (one conversation per customer and
    # account, enforced by the unique constraint). Email: NULL (threads by headers).
    sa.Column("thread_key", sa.String(600), nullable=True),
    sa.Column("subject", sa.String(998), nullable=False, server_default=""),
    sa.Column("base_subject", sa.String(998), nullable=False, server_default=""),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("assignee_id", Id, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("starred", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_message_at", UTCDateTime, nullable=False),
    sa.Column("last_inbound_at", UTCDateTime, nullable=True),
    sa.Column("last_outbound_at", UTCDateTime, nullable=True),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    sa.Column("reopened_at", UTCDateTime, nullable=True),
    sa.Column("message_count", sa.Integer, nullable=False, server_default="0"),
    # Metrics kept current as messages arrive (see tidings.conversations.metrics).
    sa.Column("first_inbound_at", UTCDateTime, nullable=True),
    sa.Column("first_reply_at", UTCDateTime, nullable=True),
    sa.Column("waiting_since", UTCDateTime, nullable=True),
    sa.Column("agent_waiting_since", UTCDateTime, nullable=True),
    sa.Column("agent_wait_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("customer_wait_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("queue_entered_at", UTCDateTime, nullable=True),
    sa.Column("queue_seconds", sa.Float, nullable=False, server_default="0"),
    sa.CheckConstraint("state in ('new', 'assigned', 'closed')", name="state"),
    sa.UniqueConstraint("account_id", "thread_key", name="uq_conversations_thread"),
    sa.Index("ix_conversations_list", "starred", "last_message_at"),
    sa.Index("ix_conversations_assignee", "assignee_id", "state", "last_message_at"),
    sa.Index("ix_conversations_scope", "project_id", "kind", "state", "last_message_at"),
    sa.Index("ix_conversations_customer", "account_id", "customer_key", "base_subject"),
    sqlite_autoincrement=True,
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("direction", sa.String(4), nullable=False),
    sa.Column("account_id", sa.String(100), nullable=False),
    sa.Column("provider_id", sa.String(998), nullable=True),
    sa.Column("sender_key", sa.String(600), nullable=False, server_default=""),
    sa.Column("sender_name", sa.String(300), nullable=False, server_default=""),
    sa.Column("recipients", sa.JSON, nullable=False),
    sa.Column("subject", sa.String(998), nullable=False, server_default=""),
    sa.Column("text", sa.Text, nullable=False, server_default=""),
    sa.Column("html", sa.Text, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("author_id", Id, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("status", sa.String(20), nullable=True),
    sa.Column("status_raw", sa.String(100), nullable=True),
    sa.Column("error_code", sa.String(100), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("status_at", UTCDateTime, nullable=True),
    sa.Column("auto_reply", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("has_attachments", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("meta", sa.JSON, nullable=False),
    sa.Column("raw", sa.JSON, nullable=True),
    sa.CheckConstraint("direction in ('in', 'out', 'note')", name="direction"),
    sa.UniqueConstraint("account_id", "direction", "provider_id", name="uq_messages_provider"),
    # With the id on PostgreSQL, a flat view's page comes from the index alone (0021).
    sa.Index("ix_messages_conversation", "conversation_id", "sent_at", postgresql_include=["id"]),
    sa.Index("ix_messages_flat", "sent_at"),
    sqlite_autoincrement=True,
)

message_sources = sa.Table(
    "message_sources",
    metadata,
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    comment="The original bytes of a message (an .eml), for 'download source'.",
)

thread_refs = sa.Table(
    "thread_refs",
    metadata,
    sa.Column("account_id", sa.String(100), primary_key=True),
    sa.Column("ref", sa.String(998), primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Index("ix_thread_refs_conversation", "conversation_id"),
    comment="Message-IDs a conversation's messages carry or reference (email threading).",
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    comment="Attachment contents, stored once per distinct content.",
)

attachments = sa.Table(
    "attachments",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("url", sa.String(2000), nullable=True),
    sa.Column("inline", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("content_id", sa.String(300), nullable=True),
    sa.Index("ix_attachments_message", "message_id"),
    sa.Index("ix_attachments_filename", "filename"),
    sqlite_autoincrement=True,
)

participants = sa.Table(
    "participants",
    metadata,
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("side", sa.String(8), primary_key=True),
    sa.Column("address_key", sa.String(600), primary_key=True),
    sa.CheckConstraint("side in ('customer', 'system')", name="side"),
    sa.Index("ix_participants_address", "address_key", "side"),
)

conversation_tags = sa.Table(
    "conversation_tags",
    metadata,
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("tag", sa.String(100), primary_key=True),
    sa.Index("ix_conversation_tags_tag", "tag", "conversation_id"),
)

message_tags = sa.Table(
    "message_tags",
    metadata,
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(100), primary_key=True),
    sa.Index("ix_message_tags_tag", "tag", "message_id"),
)

message_reads = sa.Table(
    "message_reads",
    metadata,
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("read_at", UTCDateTime, nullable=False),
)

conversation_contacts = sa.Table(
    "conversation_contacts",
    metadata,
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("source", sa.String(100), primary_key=True),
    sa.Column("external_id", sa.String(300), primary_key=True),
    sa.Column("display_name", sa.String(300), nullable=False, server_default=""),
    sa.Index("ix_conversation_contacts_contact", "source", "external_id"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor_id", Id, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_events_conversation", "conversation_id", "id"),
    sqlite_autoincrement=True,
)


# --- the outbound pipeline ---------------------------------------------------------------------

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("account_id", sa.String(100), nullable=False),
    # pending: waiting (maybe delayed); sending: claimed, an attempt is under way or was
    # cut short by a crash. Finished entries are deleted; the message keeps the outcome.
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("not_before", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
    sa.Column("claimed_by", sa.String(100), nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("state in ('pending', 'sending')", name="state"),
    sa.Index("ix_outbox_due", "state", "not_before"),
)

pending_statuses = sa.Table(
    "pending_statuses",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(100), nullable=False),
    sa.Column("provider_id", sa.String(998), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("status_raw", sa.String(100), nullable=True),
    sa.Column("error_code", sa.String(100), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Index("ix_pending_statuses_provider", "account_id", "provider_id"),
    sqlite_autoincrement=True,
    comment="Reports that arrived before the send call returned the provider id.",
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("account_id", sa.String(100), primary_key=True),
    sa.Column("address_key", sa.String(600), primary_key=True),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("state in ('opt_out', 'opt_in')", name="state"),
    comment="A customer's STOP/START towards one of our accounts.",
)
# Tables of other areas are defined on the same metadata in their own modules.
from tidings.store import tables_contacts, tables_indexes, tables_routing  # noqa: E402, F401

from tidings.store import tables_auth  # noqa: E402, F401  # isort: skip
