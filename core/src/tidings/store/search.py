"""Full-text search over message text and customer names, identical on both stores.

Both backends index the *same tokens*, computed here in Python (lower-cased runs of letters
and digits), so SQLite FTS5 and PostgreSQL's ``tsvector`` cannot disagree about what a word
is — PostgreSQL's own parser would keep ``jan@example.com`` whole where FTS5 splits it, and
the two would answer differently. Queries are word-prefix matches of every query token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.errors import TidingsError

MIN_QUERY_LENGTH = 3
SEARCH_TABLES = ("message_search", "conversation_search")
_TOKEN = re.compile(r"[^\W_]+")
_MAX_TOKENS = 20_000


class SearchQueryError(TidingsError):
    """The search text cannot be searched (too short, no words)."""


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())[:_MAX_TOKENS]


def is_search_table(name: str | None) -> bool:
    """Tables (and FTS5 shadow tables) managed here rather than in ``tables.py``."""
    return name is not None and name.startswith(SEARCH_TABLES)


def query_tokens(query: str) -> list[str]:
    """The tokens of a search query; refuses queries shorter than three characters."""
    stripped = query.strip()
    if len(stripped) < MIN_QUERY_LENGTH:
        raise SearchQueryError(
            f"search needs at least {MIN_QUERY_LENGTH} characters, got {len(stripped)}"
        )
    tokens = tokenize(stripped)
    if not tokens:
        raise SearchQueryError("search text has no letters or digits")
    return list(dict.fromkeys(tokens))[:10]


def document(*parts: str | None) -> str:
    return " ".join(tokenize(" ".join(p for p in parts if p)))


async def index_messages(conn: AsyncConnection, rows: Sequence[tuple[int, int, str]]) -> None:
    """Index ``(message_id, conversation_id, tokens)`` rows (tokens from ``document``)."""
    if not rows:
        return
    params = [{"id": mid, "cid": cid, "doc": doc} for mid, cid, doc in rows]
    if conn.dialect.name == "postgresql":
        stmt = (
            "INSERT INTO message_search (message_id, conversation_id, vector) "
            "VALUES (:id, :cid, to_tsvector('simple', :doc))"
        )
    else:
        stmt = (
            "INSERT INTO message_search (rowid, tokens, conversation_id) VALUES (:id, :doc, :cid)"
        )
    await conn.execute(sa.text(stmt), params)


async def index_customer_name(conn: AsyncConnection, conversation_id: int, name: str) -> None:
    doc = document(name)
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text(
                "INSERT INTO conversation_search (conversation_id, vector) "
                "VALUES (:cid, to_tsvector('simple', :doc)) ON CONFLICT (conversation_id) "
                "DO UPDATE SET vector = excluded.vector"
            ),
            {"cid": conversation_id, "doc": doc},
        )
    else:
        await conn.execute(
            sa.text("DELETE FROM conversation_search WHERE rowid = :cid"), {"cid": conversation_id}
        )
        await conn.execute(
            sa.text("INSERT INTO conversation_search (rowid, tokens) VALUES (:cid, :doc)"),
            {"cid": conversation_id, "doc": doc},
        )


async def index_new_customer_names(conn: AsyncConnection, names: Mapping[int, str]) -> None:
    """Index the customer names of conversations created in this transaction (one
    statement for all; nothing to replace yet)."""
    if not names:
        return
    rows = [{"cid": cid, "doc": document(name)} for cid, name in names.items()]
    if conn.dialect.name == "postgresql":
        stmt = (
            "INSERT INTO conversation_search (conversation_id, vector) "
            "VALUES (:cid, to_tsvector('simple', :doc))"
        )
    else:
        stmt = "INSERT INTO conversation_search (rowid, tokens) VALUES (:cid, :doc)"
    await conn.execute(sa.text(stmt), rows)


async def unindex_conversations(conn: AsyncConnection, conversation_ids: Iterable[int]) -> None:
    """Drop a conversation's entries; PostgreSQL's foreign keys do this by themselves."""
    ids = list(conversation_ids)
    if not ids or conn.dialect.name == "postgresql":
        return
    bind: sa.BindParameter[list[int]] = sa.bindparam("ids", expanding=True)
    await conn.execute(
        sa.text(
            "DELETE FROM message_search WHERE rowid IN "
            "(SELECT id FROM messages WHERE conversation_id IN :ids)"
        ).bindparams(bind),
        {"ids": ids},
    )
    await conn.execute(
        sa.text("DELETE FROM conversation_search WHERE rowid IN :ids").bindparams(bind),
        {"ids": ids},
    )


async def unindex_messages(conn: AsyncConnection, message_ids: Iterable[int]) -> None:
    """Drop single messages' entries; PostgreSQL's foreign keys do this by themselves."""
    ids = list(message_ids)
    if not ids or conn.dialect.name == "postgresql":
        return
    bind: sa.BindParameter[list[int]] = sa.bindparam("ids", expanding=True)
    await conn.execute(
        sa.text("DELETE FROM message_search WHERE rowid IN :ids").bindparams(bind), {"ids": ids}
    )


def matching_conversations(dialect: str, tokens: Sequence[str]) -> sa.TextClause:
    """SQL selecting ``conversation_id`` of conversations whose customer name, or one of
    whose messages, contains a word starting with every token."""
    if dialect == "postgresql":
        tsquery = " & ".join(f"{t}:*" for t in tokens)
        return sa.text(
            "SELECT conversation_id FROM message_search "
            "WHERE vector @@ to_tsquery('simple', :tsq) "
            "UNION SELECT conversation_id FROM conversation_search "
            "WHERE vector @@ to_tsquery('simple', :tsq)"
        ).bindparams(tsq=tsquery)
    fts = " AND ".join(f'"{t}"*' for t in tokens)
    return sa.text(
        "SELECT conversation_id FROM message_search WHERE message_search MATCH :fts "
        "UNION SELECT rowid FROM conversation_search WHERE conversation_search MATCH :fts"
    ).bindparams(fts=fts)


def matching_messages(dialect: str, tokens: Sequence[str]) -> sa.TextClause:
    """SQL selecting ``message_id`` of messages containing every token as a word prefix."""
    if dialect == "postgresql":
        tsquery = " & ".join(f"{t}:*" for t in tokens)
        return sa.text(
            "SELECT message_id FROM message_search WHERE vector @@ to_tsquery('simple', :tsq)"
        ).bindparams(tsq=tsquery)
    fts = " AND ".join(f'"{t}"*' for t in tokens)
    return sa.text(
        "SELECT rowid AS message_id FROM message_search WHERE message_search MATCH :fts"
    ).bindparams(fts=fts)
