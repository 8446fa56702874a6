"""Search: FTS5 prefix indexes for query words of 3 to 10 characters (SQLite only).

FTS5 answers ``"word"*`` from a prefix index when one of that length exists; otherwise
it first merges the posting lists of every term starting with ``word`` — O(matches) before
the first row comes back, hundreds of milliseconds for a common word at a million messages.
With an index per length, ``tidings.store.search.plan`` can count matches up to a cap at the
cost of the cap. FTS5 options cannot be altered, so the tables are rebuilt from their own
content. PostgreSQL's GIN indexes answer prefixes without this: nothing to do there.

Revision ID: 0008
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0002"
branch_labels = None
depends_on = None

_TOKENIZE = "tokenize = 'unicode61 remove_diacritics 0', detail = none"


def _rebuild(prefix: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    tables = {
        "message_search": ("tokens, conversation_id UNINDEXED", "rowid, tokens, conversation_id"),
        "conversation_search": ("tokens", "rowid, tokens"),
    }
    for name, (columns, copied) in tables.items():
        op.execute(
            f"CREATE VIRTUAL TABLE {name}_new USING fts5("
            f"{columns}, {_TOKENIZE}, prefix = '{prefix}')"
        )
        # Table and column names are the constants above, never input.
        copy = f"INSERT INTO {name}_new ({copied}) SELECT {copied} FROM {name}"  # noqa: S608
        op.execute(copy)
        op.execute(f"DROP TABLE {name}")
        op.execute(f"ALTER TABLE {name}_new RENAME TO {name}")


def upgrade() -> None:
    _rebuild("3 4 5 6 7 8 9 10")


def downgrade() -> None:
    _rebuild("3")
