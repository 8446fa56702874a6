"""Indexes that make the conversation views fast at contact-center size (migration 0006).

Every view lists conversations ``starred DESC, last_message_at DESC, id DESC`` and shows
the first page. With an index in that order behind the view's leading equality (the state),
the database walks the index and stops after a page instead of fetching every
matching conversation and sorting it; ``bench/conversations.py`` measures the difference.
Defined against the tables of ``tidings.store.tables``, so they attach to its metadata and
the schema test compares them with the migration.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.search import is_search_table
from tidings.store.tables import conversations as c

conversations_state_sort = sa.Index(
    "ix_conversations_state_sort", c.c.state, c.c.starred, c.c.last_message_at, c.c.id
)
"""Unassigned and closed views: the page in order within one state."""

OPEN_STATES = ("new", "assigned")
"""The Active views' states. Their condition must be spelled with this very tuple: a
partial index serves only a query whose condition implies its own."""
_OPEN = c.c.state.in_(OPEN_STATES)
conversations_open_sort = sa.Index(
    "ix_conversations_open_sort",
    c.c.starred,
    c.c.last_message_at,
    c.c.id,
    postgresql_where=_OPEN,
    sqlite_where=_OPEN,
)
"""Active views (two states): the open conversations in view order, a partial index (0014).

No index on ``state`` can give the order across two states, so PostgreSQL fetched every
open conversation an agent may see and sorted them — testing a search on each of them
first (``search active (agent): 'faktur'``: 2,060 conversations, 262 ms at a million
messages; walking this index: 32 ms)."""

conversations_created = sa.Index("ix_conversations_created", c.c.created_at)
"""Date filters on when a conversation started."""

conversations_closed = sa.Index("ix_conversations_closed", c.c.closed_at)
"""Date filters on when a conversation was closed."""

ONE_STORE_INDEXES = (
    "ix_participants_address_trigrams",
    "ix_conversations_subject_trigrams",
    "ix_messages_id_conversation",
    "ix_conversations_open_project",
)
"""Indexes made by migrations on one store only: PostgreSQL's ``pg_trgm`` GIN indexes of
``lower(address_key)`` and ``lower(subject)`` for the substring filters (0012) and its
open conversations by project in view order (0018); SQLite's ``(id, conversation_id)``
of messages for rare searches (0013)."""


def made_by_migrations(name: str | None, type_: str) -> bool:
    """Schema objects that exist on one store only, so ``tables.metadata`` does not declare
    them and comparing it with the database leaves them out: the search tables and the
    indexes above."""
    if type_ == "table":
        return is_search_table(name)
    return type_ == "index" and name in ONE_STORE_INDEXES
