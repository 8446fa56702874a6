"""Conversations, messages and what hangs on them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tidings.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=300), server_default="", nullable=False),
        sa.Column("role", sa.String(length=20), server_default="agent", nullable=False),
        sa.Column("can_view_all", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "role in ('agent', 'supervisor', 'administrator')", name=op.f("ck_agents_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("username", name=op.f("uq_agents_username")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_blobs")),
        comment="Attachment contents, stored once per distinct content.",
    )
    op.create_table(
        "projects",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=300), server_default="", nullable=False),
        sa.Column("created_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("key", name=op.f("uq_projects_key")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "agent_permissions",
        sa.Column("agent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_permissions_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_agent_permissions_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "agent_id", "project_id", "kind", name=op.f("pk_agent_permissions")
        ),
        comment="An agent may work on conversations of this project and channel kind.",
    )
    op.create_table(
        "conversations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=63), nullable=False),
        sa.Column("customer_key", sa.String(length=600), nullable=False),
        sa.Column("customer_name", sa.String(length=300), server_default="", nullable=False),
        sa.Column("system_key", sa.String(length=600), server_default="", nullable=False),
        sa.Column("thread_key", sa.String(length=600), nullable=True),
        sa.Column("subject", sa.String(length=998), server_default="", nullable=False),
        sa.Column("base_subject", sa.String(length=998), server_default="", nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column(
            "assignee_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("starred", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("last_message_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("last_inbound_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_outbound_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("closed_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("reopened_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("first_inbound_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("first_reply_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("waiting_since", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("agent_waiting_since", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("agent_wait_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("customer_wait_seconds", sa.Float(), server_default="0", nullable=False),
        sa.Column("queue_entered_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("queue_seconds", sa.Float(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "state in ('new', 'assigned', 'closed')", name=op.f("ck_conversations_state")
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["agents.id"],
            name=op.f("fk_conversations_assignee_id_agents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_conversations_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("account_id", "thread_key", name="uq_conversations_thread"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversations_assignee", ["assignee_id", "state", "last_message_at"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_customer",
            ["account_id", "customer_key", "base_subject"],
            unique=False,
        )
        batch_op.create_index("ix_conversations_list", ["starred", "last_message_at"], unique=False)
        batch_op.create_index(
            "ix_conversations_scope",
            ["project_id", "kind", "state", "last_message_at"],
            unique=False,
        )

    op.create_table(
        "conversation_contacts",
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=300), nullable=False),
        sa.Column("display_name", sa.String(length=300), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_contacts_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "conversation_id", "source", "external_id", name=op.f("pk_conversation_contacts")
        ),
    )
    with op.batch_alter_table("conversation_contacts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_contacts_contact", ["source", "external_id"], unique=False
        )

    op.create_table(
        "conversation_tags",
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_tags_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "tag", name=op.f("pk_conversation_tags")),
    )
    with op.batch_alter_table("conversation_tags", schema=None) as batch_op:
        batch_op.create_index("ix_conversation_tags_tag", ["tag", "conversation_id"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["agents.id"], name=op.f("fk_events_actor_id_agents"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_events_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_conversation", ["conversation_id", "id"], unique=False)

    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("direction", sa.String(length=4), nullable=False),
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("provider_id", sa.String(length=998), nullable=True),
        sa.Column("sender_key", sa.String(length=600), server_default="", nullable=False),
        sa.Column("sender_name", sa.String(length=300), server_default="", nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("subject", sa.String(length=998), server_default="", nullable=False),
        sa.Column("text", sa.Text(), server_default="", nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("sent_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("created_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("author_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("status_raw", sa.String(length=100), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("status_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("auto_reply", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("has_attachments", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "direction in ('in', 'out', 'note')", name=op.f("ck_messages_direction")
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["agents.id"],
            name=op.f("fk_messages_author_id_agents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("account_id", "direction", "provider_id", name="uq_messages_provider"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_conversation", ["conversation_id", "sent_at"], unique=False
        )
        batch_op.create_index("ix_messages_flat", ["sent_at"], unique=False)

    op.create_table(
        "participants",
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("address_key", sa.String(length=600), nullable=False),
        sa.CheckConstraint("side in ('customer', 'system')", name=op.f("ck_participants_side")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_participants_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "conversation_id", "side", "address_key", name=op.f("pk_participants")
        ),
    )
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.create_index("ix_participants_address", ["address_key", "side"], unique=False)

    op.create_table(
        "thread_refs",
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("ref", sa.String(length=998), nullable=False),
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_thread_refs_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "ref", "conversation_id", name=op.f("pk_thread_refs")
        ),
        comment="Message-IDs a conversation's messages carry or reference (email threading).",
    )
    with op.batch_alter_table("thread_refs", schema=None) as batch_op:
        batch_op.create_index("ix_thread_refs_conversation", ["conversation_id"], unique=False)

    op.create_table(
        "attachments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("inline", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("content_id", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_attachments_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.create_index("ix_attachments_filename", ["filename"], unique=False)
        batch_op.create_index("ix_attachments_message", ["message_id"], unique=False)

    op.create_table(
        "message_reads",
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("agent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("read_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_message_reads_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_reads_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "agent_id", name=op.f("pk_message_reads")),
    )
    op.create_table(
        "message_sources",
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_sources_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_message_sources")),
        comment="The original bytes of a message (an .eml), for 'download source'.",
    )
    op.create_table(
        "message_tags",
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_tags_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "tag", name=op.f("pk_message_tags")),
    )
    with op.batch_alter_table("message_tags", schema=None) as batch_op:
        batch_op.create_index("ix_message_tags_tag", ["tag", "message_id"], unique=False)

    # Full-text search: the same Python-made tokens on both backends (tidings.store.search).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE message_search ("
            " message_id BIGINT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
            " conversation_id BIGINT NOT NULL,"
            " vector TSVECTOR NOT NULL)"
        )
        op.execute("CREATE INDEX ix_message_search_vector ON message_search USING gin (vector)")
        op.execute(
            "CREATE TABLE conversation_search ("
            " conversation_id BIGINT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,"
            " vector TSVECTOR NOT NULL)"
        )
        op.execute(
            "CREATE INDEX ix_conversation_search_vector ON conversation_search USING gin (vector)"
        )
    else:
        op.execute(
            "CREATE VIRTUAL TABLE message_search USING fts5("
            "tokens, conversation_id UNINDEXED, "
            "tokenize = 'unicode61 remove_diacritics 0', detail = none, prefix = '3')"
        )
        op.execute(
            "CREATE VIRTUAL TABLE conversation_search USING fts5("
            "tokens, tokenize = 'unicode61 remove_diacritics 0', detail = none, prefix = '3')"
        )


def downgrade() -> None:
    op.execute("DROP TABLE conversation_search")
    op.execute("DROP TABLE message_search")
    with op.batch_alter_table("message_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_message_tags_tag")

    op.drop_table("message_tags")
    op.drop_table("message_sources")
    op.drop_table("message_reads")
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.drop_index("ix_attachments_message")
        batch_op.drop_index("ix_attachments_filename")

    op.drop_table("attachments")
    with op.batch_alter_table("thread_refs", schema=None) as batch_op:
        batch_op.drop_index("ix_thread_refs_conversation")

    op.drop_table("thread_refs")
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_index("ix_participants_address")

    op.drop_table("participants")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_flat")
        batch_op.drop_index("ix_messages_conversation")

    op.drop_table("messages")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_conversation")

    op.drop_table("events")
    with op.batch_alter_table("conversation_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_tags_tag")

    op.drop_table("conversation_tags")
    with op.batch_alter_table("conversation_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_contacts_contact")

    op.drop_table("conversation_contacts")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_scope")
        batch_op.drop_index("ix_conversations_list")
        batch_op.drop_index("ix_conversations_customer")
        batch_op.drop_index("ix_conversations_assignee")

    op.drop_table("conversations")
    op.drop_table("agent_permissions")
    op.drop_table("projects")
    op.drop_table("blobs")
    op.drop_table("agents")
