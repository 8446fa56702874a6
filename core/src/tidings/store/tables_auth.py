"""Credentials of agents (migration 0007): password hashes and API tokens.

Kept beside ``agents`` rather than in it so that reading an agent for a view never loads a
credential, and so that dropping the credentials of an agent is one ``DELETE``.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import metadata
from tidings.store.types import Id, UTCDateTime

agent_passwords = sa.Table(
    "agent_passwords",
    metadata,
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("hash", sa.String(300), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    comment="scrypt hash of an agent's password (tidings.auth.passwords).",
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False, server_default=""),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Index("ix_api_tokens_agent", "agent_id"),
    sqlite_autoincrement=True,
    comment="Bearer tokens: only their SHA-256 is stored; the token is shown once.",
)
