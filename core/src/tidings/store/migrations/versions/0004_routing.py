"""Routing: groups, presence, rules, SLA priorities, business hours, pins, blacklist

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tidings.store.types

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agent_groups",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("distribution", sa.String(length=10), server_default="pool", nullable=False),
        sa.Column(
            "rr_last_agent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "distribution in ('pool', 'direct')", name=op.f("ck_agent_groups_distribution")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_agent_groups_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_groups")),
        sa.UniqueConstraint("project_id", "name", name="uq_agent_groups_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "agent_presence",
        sa.Column("agent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("online", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("capacity", sa.Integer(), server_default="5", nullable=False),
        sa.Column("updated_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint("capacity >= 0", name=op.f("ck_agent_presence_capacity")),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_presence_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent_presence")),
        comment="Online/offline and how many conversations in progress direct distribution gives.",
    )
    op.create_table(
        "blacklist",
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("customer_key", sa.String(length=600), nullable=False),
        sa.Column(
            "blocked_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("blocked_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(length=300), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["blocked_by"],
            ["agents.id"],
            name=op.f("fk_blacklist_blocked_by_agents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_blacklist_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "customer_key", name=op.f("pk_blacklist")),
        comment="Blocked customers: their messages are stored but never reach agents' views.",
    )
    op.create_table(
        "business_days_off",
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_business_days_off_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "day", name=op.f("pk_business_days_off")),
    )
    op.create_table(
        "business_hours",
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("opens_minute", sa.Integer(), nullable=False),
        sa.Column("closes_minute", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "opens_minute >= 0 and closes_minute <= 1440 and opens_minute < closes_minute",
            name=op.f("ck_business_hours_span"),
        ),
        sa.CheckConstraint("weekday between 0 and 6", name=op.f("ck_business_hours_weekday")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_business_hours_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project_id", "weekday", "opens_minute", name=op.f("pk_business_hours")
        ),
        comment="Weekly opening hours (minutes of the day, project time zone); Monday is 0.",
    )
    op.create_table(
        "customer_pins",
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("customer_key", sa.String(length=600), nullable=False),
        sa.Column("agent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pinned_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_customer_pins_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_customer_pins_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "customer_key", name=op.f("pk_customer_pins")),
        comment="A customer pinned to an agent: their new conversations skip the pool.",
    )
    with op.batch_alter_table("customer_pins", schema=None) as batch_op:
        batch_op.create_index("ix_customer_pins_agent", ["agent_id"], unique=False)

    op.create_table(
        "routing_projects",
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("distribution", sa.String(length=10), server_default="pool", nullable=False),
        sa.Column(
            "rr_last_agent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("default_priority", sa.String(length=50), nullable=True),
        sa.CheckConstraint(
            "distribution in ('pool', 'direct')", name=op.f("ck_routing_projects_distribution")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_routing_projects_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_routing_projects")),
        comment="How a project distributes new conversations, and its business-hours time zone.",
    )
    op.create_table(
        "routing_rules",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("updated_at", tidings.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_routing_rules_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_rules")),
        sa.UniqueConstraint("project_id", "position", name="uq_routing_rules_position"),
        comment="Inbound rules as validated data (tidings.routing.rules.Rule), in order.",
        sqlite_autoincrement=True,
    )
    op.create_table(
        "sla_priorities",
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("reaction_seconds", sa.Integer(), nullable=True),
        sa.Column("alarm_seconds", sa.Integer(), nullable=True),
        sa.Column("execution_seconds", sa.Integer(), nullable=True),
        sa.Column("business_hours", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_sla_priorities_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "name", name=op.f("pk_sla_priorities")),
    )
    op.create_table(
        "agent_group_members",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("agent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_group_members_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["agent_groups.id"],
            name=op.f("fk_agent_group_members_group_id_agent_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "agent_id", name=op.f("pk_agent_group_members")),
    )
    with op.batch_alter_table("agent_group_members", schema=None) as batch_op:
        batch_op.create_index("ix_agent_group_members_agent", ["agent_id"], unique=False)

    op.create_table(
        "conversation_routing",
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("priority", sa.String(length=50), nullable=True),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=100), nullable=True),
        sa.Column("sla_started_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("reaction_due", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("alarm_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("execution_due", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("reaction_missed_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("alarm_reached_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.Column("execution_missed_at", tidings.store.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_routing_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["agent_groups.id"],
            name=op.f("fk_conversation_routing_group_id_agent_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversation_routing")),
        comment="A conversation's group, priority, category, status and SLA deadlines/signals.",
    )
    with op.batch_alter_table("conversation_routing", schema=None) as batch_op:
        batch_op.create_index("ix_conversation_routing_group", ["group_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("conversation_routing", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_routing_group")

    op.drop_table("conversation_routing")
    with op.batch_alter_table("agent_group_members", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_group_members_agent")

    op.drop_table("agent_group_members")
    op.drop_table("sla_priorities")
    op.drop_table("routing_rules")
    op.drop_table("routing_projects")
    with op.batch_alter_table("customer_pins", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_pins_agent")

    op.drop_table("customer_pins")
    op.drop_table("business_hours")
    op.drop_table("business_days_off")
    op.drop_table("blacklist")
    op.drop_table("agent_presence")
    op.drop_table("agent_groups")
