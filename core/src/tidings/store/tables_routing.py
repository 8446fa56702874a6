"""Routing and policy tables: groups, presence, rules, SLA, pinning, blacklist.

Side tables keyed by project, agent, conversation or customer address key, so routing can
evolve without touching the conversation tables. Defined on the shared metadata, so the
schema test compares them with migration 0004 like every other table.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import metadata
from tidings.store.types import Id, UTCDateTime

routing_projects = sa.Table(
    "routing_projects",
    metadata,
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("distribution", sa.String(10), nullable=False, server_default="pool"),
    sa.Column("rr_last_agent_id", Id, nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("default_priority", sa.String(50), nullable=True),
    sa.CheckConstraint("distribution in ('pool', 'direct')", name="distribution"),
    comment="How a project distributes new conversations, and its business-hours time zone.",
)

agent_groups = sa.Table(
    "agent_groups",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("distribution", sa.String(10), nullable=False, server_default="pool"),
    sa.Column("rr_last_agent_id", Id, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("distribution in ('pool', 'direct')", name="distribution"),
    sa.UniqueConstraint("project_id", "name", name="uq_agent_groups_name"),
    sqlite_autoincrement=True,
)

agent_group_members = sa.Table(
    "agent_group_members",
    metadata,
    sa.Column(
        "group_id", Id, sa.ForeignKey("agent_groups.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_agent_group_members_agent", "agent_id"),
)

agent_presence = sa.Table(
    "agent_presence",
    metadata,
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("online", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("capacity", sa.Integer, nullable=False, server_default="5"),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("capacity >= 0", name="capacity"),
    comment="Online/offline and how many conversations in progress direct distribution gives.",
)

conversation_routing = sa.Table(
    "conversation_routing",
    metadata,
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("group_id", Id, sa.ForeignKey("agent_groups.id", ondelete="SET NULL"), nullable=True),
    sa.Column("priority", sa.String(50), nullable=True),
    sa.Column("category", sa.String(100), nullable=True),
    sa.Column("status", sa.String(100), nullable=True),
    sa.Column("sla_started_at", UTCDateTime, nullable=True),
    sa.Column("reaction_due", UTCDateTime, nullable=True),
    sa.Column("alarm_at", UTCDateTime, nullable=True),
    sa.Column("execution_due", UTCDateTime, nullable=True),
    sa.Column("reaction_missed_at", UTCDateTime, nullable=True),
    sa.Column("alarm_reached_at", UTCDateTime, nullable=True),
    sa.Column("execution_missed_at", UTCDateTime, nullable=True),
    sa.Index("ix_conversation_routing_group", "group_id"),
    comment="A conversation's group, priority, category, status and SLA deadlines/signals.",
)

routing_rules = sa.Table(
    "routing_rules",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("project_id", "position", name="uq_routing_rules_position"),
    sqlite_autoincrement=True,
    comment="Inbound rules as validated data (tidings.routing.rules.Rule), in order.",
)

sla_priorities = sa.Table(
    "sla_priorities",
    metadata,
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("reaction_seconds", sa.Integer, nullable=True),
    sa.Column("alarm_seconds", sa.Integer, nullable=True),
    sa.Column("execution_seconds", sa.Integer, nullable=True),
    sa.Column("business_hours", sa.Boolean, nullable=False, server_default=sa.false()),
)

business_hours = sa.Table(
    "business_hours",
    metadata,
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("weekday", sa.SmallInteger, primary_key=True),
    sa.Column("opens_minute", sa.Integer, primary_key=True),
    sa.Column("closes_minute", sa.Integer, nullable=False),
    sa.CheckConstraint("weekday between 0 and 6", name="weekday"),
    sa.CheckConstraint(
        "opens_minute >= 0 and closes_minute <= 1440 and opens_minute < closes_minute",
        name="span",
    ),
    comment="Weekly opening hours (minutes of the day, project time zone); Monday is 0.",
)

business_days_off = sa.Table(
    "business_days_off",
    metadata,
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
)

customer_pins = sa.Table(
    "customer_pins",
    metadata,
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("customer_key", sa.String(600), primary_key=True),
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("pinned_at", UTCDateTime, nullable=False),
    sa.Index("ix_customer_pins_agent", "agent_id"),
    comment="A customer pinned to an agent: their new conversations skip the pool.",
)

blacklist = sa.Table(
    "blacklist",
    metadata,
    sa.Column("project_id", Id, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("customer_key", sa.String(600), primary_key=True),
    sa.Column("blocked_by", Id, sa.ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    sa.Column("blocked_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.String(300), nullable=False, server_default=""),
    comment="Blocked customers: their messages are stored but never reach agents' views.",
)
