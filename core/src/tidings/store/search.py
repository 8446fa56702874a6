"""Full-text search over message text and customer names, identical on both stores.

Both backends index the *same tokens*, computed here in Python (lower-cased runs of letters
and digits), so SQLite FTS5 and PostgreSQL's ``tsvector`` cannot disagree about what a word
is — PostgreSQL's own parser would keep ``jan@example.com`` whole where FTS5 splits it, and
the two would answer differently. Queries are word-prefix matches of every query token.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.errors import TidingsError
from tidings.store import tables
from tidings.store.hints import unindexed

MIN_QUERY_LENGTH = 3
SEARCH_TABLES = (
    "message_search",
    "conversation_search",
    "conversation_words",
    "participant_search",
    "search_vocabulary",
)
_TOKEN = re.compile(r"[^\W_]+")
_MAX_TOKENS = 20_000


class SearchQueryError(TidingsError):
    """The search text cannot be searched (too short, no words)."""


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())[:_MAX_TOKENS]


def is_search_table(name: str | None) -> bool:
    """Tables (and FTS5 shadow tables) made by migrations rather than ``tables.py``: the
    search tables here, whose columns differ by store, and ``participant_search`` (the
    participant filter's trigrams)."""
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
    """Index ``(message_id, conversation_id, tokens)`` rows (tokens from ``document``), and
    add their words to their conversations' words (see :func:`conversations_matching`)."""
    if not rows:
        return
    params = [{"id": mid, "cid": cid, "doc": doc} for mid, cid, doc in rows]
    if conn.dialect.name == "postgresql":
        stmt = (
            "INSERT INTO message_search (message_id, conversation_id, vector) "
            "VALUES (:id, :cid, to_tsvector('simple', :doc))"
        )
        await _add_vocabulary(conn, (doc for _, _, doc in rows))
    else:
        stmt = (
            "INSERT INTO message_search (rowid, tokens, conversation_id) VALUES (:id, :doc, :cid)"
        )
    await conn.execute(sa.text(stmt), params)
    await _add_conversation_words(conn, [(cid, doc) for _, cid, doc in rows])


_APPEND_WORDS = sa.text(
    "INSERT INTO conversation_words (conversation_id, tokens) VALUES (:cid, :tokens) "
    "ON CONFLICT (conversation_id) "
    "DO UPDATE SET tokens = conversation_words.tokens || ' ' || excluded.tokens"
)
_MERGE_VECTORS = sa.text(
    "INSERT INTO conversation_words (conversation_id, vector) "
    "VALUES (:cid, strip(to_tsvector('simple', :doc))) "
    "ON CONFLICT (conversation_id) "
    "DO UPDATE SET vector = conversation_words.vector || excluded.vector"
)


async def _add_conversation_words(
    conn: AsyncConnection, docs: Sequence[tuple[int, str]], *, fresh: bool = False
) -> None:
    """Add the words of ``(conversation_id, document)`` pairs — new messages, customer
    names — to ``conversation_words`` (migrations 0011, 0019).

    The words only ever grow: a deleted message's words and a former name's stay, which
    keeps the row what the walk needs — every word any message of the conversation or its
    customer's name holds, perhaps more. On PostgreSQL ``||`` merges them in the upsert
    itself, so concurrent ingestion into one conversation loses none; SQLite has one
    writer, so reading, merging and writing back only the rows that gained a word is safe
    there and keeps the rows small. ``fresh``: the conversations were created in this
    transaction, so their rows hold at most a few words yet and the words are appended
    without reading them first (a repeated word costs nothing but its bytes).
    """
    new: dict[int, dict[str, None]] = {}
    for cid, doc in docs:
        new.setdefault(cid, {}).update(dict.fromkeys(doc.split()))
    new = {cid: words for cid, words in sorted(new.items()) if words}
    if not new:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(
            _MERGE_VECTORS, [{"cid": cid, "doc": " ".join(words)} for cid, words in new.items()]
        )
        return
    if fresh:
        await conn.execute(
            _APPEND_WORDS, [{"cid": cid, "tokens": " ".join(words)} for cid, words in new.items()]
        )
        return
    bind: sa.BindParameter[list[int]] = sa.bindparam("ids", expanding=True)
    result = await conn.execute(
        sa.text(
            "SELECT conversation_id, tokens FROM conversation_words WHERE conversation_id IN :ids"
        ).bindparams(bind),
        {"ids": list(new)},
    )
    known: dict[int, str] = {int(cid): str(tokens) for cid, tokens in result}
    changed = []
    for cid, words in new.items():
        old = known.get(cid)
        if old is None:
            changed.append({"cid": cid, "tokens": " ".join(words)})
            continue
        seen = set(old.split())
        added = [w for w in words if w not in seen]
        if added:
            changed.append({"cid": cid, "tokens": old + " " + " ".join(added)})
    if changed:
        await conn.execute(
            sa.text(
                "INSERT INTO conversation_words (conversation_id, tokens) VALUES (:cid, :tokens) "
                "ON CONFLICT (conversation_id) DO UPDATE SET tokens = excluded.tokens"
            ),
            changed,
        )


_ADD_VOCABULARY = sa.text(
    "INSERT INTO search_vocabulary (word) SELECT w FROM unnest(CAST(:words AS text[])) AS w "
    "WHERE NOT EXISTS (SELECT 1 FROM search_vocabulary WHERE word = w)"
)


async def _add_vocabulary(conn: AsyncConnection, docs: Iterable[str]) -> None:
    """List the words of new PostgreSQL documents in ``search_vocabulary`` (migration
    0015), which must hold every word the search tables hold: :func:`plan` searches a
    prefix as the listed words it begins. Only unlisted words are written; a word two
    transactions add at once is listed twice, which the lookup ignores, rather than one
    transaction waiting for the other's commit (and deadlocking on crossed words)."""
    words = sorted({w for doc in docs for w in doc.split()})
    if words:
        await conn.execute(_ADD_VOCABULARY, {"words": words})


async def index_customer_name(conn: AsyncConnection, conversation_id: int, name: str) -> None:
    doc = document(name)
    if conn.dialect.name == "postgresql":
        await _add_vocabulary(conn, [doc])
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
    await _add_conversation_words(conn, [(conversation_id, doc)])


async def index_new_customer_names(conn: AsyncConnection, names: Mapping[int, str]) -> None:
    """Index the customer names of conversations created in this transaction (one
    statement for all; nothing to replace yet)."""
    if not names:
        return
    docs = {cid: document(name) for cid, name in names.items()}
    rows = [{"cid": cid, "doc": doc} for cid, doc in docs.items()]
    if conn.dialect.name == "postgresql":
        await _add_vocabulary(conn, docs.values())
        stmt = (
            "INSERT INTO conversation_search (conversation_id, vector) "
            "VALUES (:cid, to_tsvector('simple', :doc))"
        )
    else:
        stmt = "INSERT INTO conversation_search (rowid, tokens) VALUES (:cid, :doc)"
    await conn.execute(sa.text(stmt), rows)
    await _add_conversation_words(conn, list(docs.items()), fresh=True)


async def unindex_conversations(conn: AsyncConnection, conversation_ids: Iterable[int]) -> None:
    """Drop a conversation's entries; PostgreSQL's foreign keys do this by themselves, and
    on both stores those of ``conversation_words``."""
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
    """Drop single messages' entries; PostgreSQL's foreign keys do this by themselves.
    Their conversation's words keep theirs (see :func:`_add_conversation_words`)."""
    ids = list(message_ids)
    if not ids or conn.dialect.name == "postgresql":
        return
    bind: sa.BindParameter[list[int]] = sa.bindparam("ids", expanding=True)
    await conn.execute(
        sa.text("DELETE FROM message_search WHERE rowid IN :ids").bindparams(bind), {"ids": ids}
    )


FULL_TEXT_TABLES = ("message_search", "conversation_search", "participant_search")
"""SQLite's FTS5 indexes (migrations 0002, 0010)."""

MERGE_PAGES = 500
"""Index pages one compaction step writes per table at most (about 2 MB, ~0.1 s)."""


async def compact_step(conn: AsyncConnection) -> bool:
    """One bounded step of merging SQLite's full-text index segments; whether it merged any.

    FTS5 writes a new segment for every transaction that indexes something and merges a
    level's segments only once four pile up there (``automerge``), so a busy index holds a
    dozen: 13 after a million messages. Every query looks each token up in every segment,
    so the search plan's sample took 5-8 ms of SQLite's time where, over the 3 segments
    left once every level holding two is merged (``usermerge`` 2, migration 0020), it
    takes 0.6 ms, and collecting 4,519 matches 4.6 ms where it takes 2.5. Merging in the
    writers' own transactions would slow ingestion; a step here writes at most
    ``MERGE_PAGES`` pages per table, so a caller runs steps in short transactions of their
    own until one merges nothing (``tidings.service.worker.compact_search``).
    PostgreSQL: nothing to do, autovacuum merges GIN's pending entries.
    """
    if conn.dialect.name != "sqlite":
        return False
    changes = sa.text("SELECT total_changes()")
    merged = False
    before = (await conn.execute(changes)).scalar_one()
    for table in FULL_TEXT_TABLES:
        # Only our constant table names are formatted in.
        await conn.execute(
            sa.text(f"INSERT INTO {table} ({table}, rank) VALUES ('merge', :pages)"),  # noqa: S608
            {"pages": MERGE_PAGES},
        )
        # FTS5 documents that a merge which changed fewer than two rows found nothing to do.
        after = (await conn.execute(changes)).scalar_one()
        merged |= after - before >= 2
        before = after
    return merged


_message_search = sa.table(
    "message_search",
    sa.column("rowid", sa.Integer),
    sa.column("message_id", sa.Integer),
    sa.column("conversation_id", sa.Integer),
    sa.column("tokens", sa.Text),
    sa.column("vector"),
)
_conversation_search = sa.table(
    "conversation_search",
    sa.column("rowid", sa.Integer),
    sa.column("conversation_id", sa.Integer),
    sa.column("tokens", sa.Text),
    sa.column("vector"),
)

_conversation_words = sa.table(
    "conversation_words",
    sa.column("conversation_id", sa.Integer),
    sa.column("tokens", sa.Text),
    sa.column("vector"),
)

_POSTGRESQL_KEYS = {"message_search": "message_id", "conversation_search": "conversation_id"}
"""The key column of each search table on PostgreSQL (on SQLite: the FTS5 rowid)."""

SAMPLE_MESSAGES = 5_000
"""How many messages :func:`plan` counts matches in..."""
SAMPLE_STRIPES = 10
"""...in this many runs of consecutive ids, spread evenly up to the newest message."""
COMMON_HITS = 15
"""A query matching this many of them per word (0.3 % for one word, 0.6 % for two) is
*common*: the view is walked. Each further word makes the walk's first test per
conversation, its words (:func:`conversations_matching`), say yes more often in vain, so
the walk pays off only at a larger share."""


WALK_COLLECTED_HITS = {"postgresql": 8}
"""Sampled hits from which a rare search walks the view through its collected matches
rather than looking each up (elsewhere: from one). Each lookup costs PostgreSQL ~7 µs,
each row walked ~4.6 µs, and a page of 50 takes a walk of ~50 x conversations / matches
rows: at 100,000 conversations the walk wins from ~1,800 matches, 8 of 5,000 sampled
messages at a million (4,100 matches: 28 -> 5 ms; none after all: 280 ms)."""


@dataclass(frozen=True)
class Plan:
    """How to search: the query's tokens, and whether to walk the view testing each row
    (``common``) or to collect every match from the full-text index first (rare)."""

    tokens: tuple[str, ...]
    common: bool
    sampled: int = 0
    """Matches among the sampled messages: with none, the collected matches are few (under
    1 in 5,000 messages); with some, they may be thousands (see
    :func:`conversations_matching`)."""
    words: tuple[tuple[str, ...] | None, ...] = ()
    """PostgreSQL, collecting: for each token, every indexed word it begins, or ``None``
    where they are more than ``PREFIX_WORDS`` (searched as a prefix); empty: all
    prefixes."""


PREFIX_WORDS = 64
"""On PostgreSQL a rare search looks a token up as the indexed words it begins when they
are at most this many: GIN intersects whole words' rows as it reads them, but collects
every row of a prefix's words first (migration 0015: 65-100 ms against 15 ms)."""

_PREFIXED = (
    "SELECT t.i, v.word FROM unnest(CAST(:lows AS text[]), CAST(:highs AS text[])) "
    "WITH ORDINALITY AS t(low, high, i) CROSS JOIN LATERAL "
    "(SELECT DISTINCT word FROM search_vocabulary WHERE word >= t.low AND word < t.high "
    "ORDER BY word LIMIT :limit) AS v"
)
_PREFIXED_WORDS = sa.text(_PREFIXED)


def _prefix_bounds(tokens: Sequence[str]) -> dict[str, Any]:
    """From each token up to, not including, the token with its last character's
    successor: in bytewise order, every word that begins with it."""
    highs = [t[:-1] + chr(ord(t[-1]) + 1) for t in tokens]
    return {"lows": list(tokens), "highs": highs, "limit": PREFIX_WORDS + 1}


def _listed(tokens: Sequence[str], pairs: Iterable[Any]) -> tuple[tuple[str, ...] | None, ...]:
    """:attr:`Plan.words` from (token's 1-based position, word) pairs."""
    found: list[list[str]] = [[] for _ in tokens]
    for i, word in pairs:
        found[int(i) - 1].append(str(word))
    return tuple(tuple(w) if len(w) <= PREFIX_WORDS else None for w in found)


async def prefixed_words(
    conn: AsyncConnection, tokens: Sequence[str]
) -> tuple[tuple[str, ...] | None, ...]:
    """The indexed words each token begins, on PostgreSQL (see :attr:`Plan.words`)."""
    return _listed(tokens, await conn.execute(_PREFIXED_WORDS, _prefix_bounds(tokens)))


@functools.cache
def _sample(dialect: str, size: int, stripes: int) -> sa.TextClause:
    """The one statement of :func:`plan`: the newest message id (none: no messages), the
    matches among the sampled messages and, on PostgreSQL, the words each token begins (as
    JSON pairs, cheap beside the rest and wanted unless the query turns out common).

    One round trip where three were: the ids' bounds, the count and the words each cost one
    (on PostgreSQL also a wake-up of the server and of the client, ~0.3 ms of client CPU
    each). The stripes' ends are computed in SQL from the bounds exactly as before: ``stripes``
    evenly spaced ends up to the newest id, each the last of ``size`` consecutive ids,
    duplicates counted once.
    """
    if dialect == "postgresql":
        # ts_match_vq is the function behind @@, which the planner never takes to an index:
        # the stripes' bounds are known only when it runs, and guessing a third of the table
        # for each, it intersected the whole GIN scan with every stripe (486 ms, not 2 ms).
        match = (
            "message_id > e - {size} AND message_id <= e "
            "AND ts_match_vq(vector, to_tsquery('simple', :q))"
        )
        words = f", (SELECT json_agg(json_build_array(i, word)) FROM ({_PREFIXED}) AS p)"  # noqa: S608
    else:
        match = "message_search MATCH :q AND rowid > e - {size} AND rowid <= e"
        words = ""
    # Only our constant text and integers are formatted in; every value is bound. The bounds
    # are two subqueries: SQLite reads min() or max() off the index only when it is the one
    # aggregate of its SELECT; together they cost a scan of every message.
    return sa.text(
        "WITH RECURSIVE bounds AS (SELECT (SELECT min(id) FROM messages) AS low, "  # noqa: S608
        "(SELECT max(id) FROM messages) AS high), "
        f"steps(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM steps WHERE i < {stripes}), "
        f"ends AS (SELECT DISTINCT low - 1 + (high - low + 1) * i / {stripes} AS e "
        "FROM bounds, steps WHERE high IS NOT NULL) "
        "SELECT (SELECT high FROM bounds), (SELECT coalesce(sum("
        f"(SELECT count(*) FROM message_search WHERE {match.format(size=size)})"
        f"), 0) FROM ends){words}"
    )


async def plan(conn: AsyncConnection, query: str) -> Plan:
    """Choose the plan from the share of a sample of messages that match.

    A view shows one page in its own order. For a rare query the index hands over its few
    matches and the page is sorted from those; for a common one (``zamów…`` is in a third of
    the messages) collecting the matches is O(matches) — hundreds of milliseconds at a
    million messages — while walking the view in order and testing each conversation fills
    a page after a few dozen. Which plan wins depends on the share of messages matching,
    so the matches are counted in a sample of ``SAMPLE_MESSAGES`` messages: runs of
    consecutive ids spread over the whole history up to the newest (ranges of ids: bounded
    work whatever the query or the database size, on both stores; spread, because the
    newest alone can be all alike — agents' replies after a busy hour), and
    ``COMMON_HITS`` of them make the query common. The same data gives the same plan on
    both stores, and both plans find the same rows; only their cost differs.
    """
    tokens = tuple(query_tokens(query))
    dialect = conn.dialect.name
    size = max(1, SAMPLE_MESSAGES // SAMPLE_STRIPES)
    if dialect == "postgresql":
        params = {"q": _tsquery(tokens)} | _prefix_bounds(tokens)
    else:
        params = {"q": _fts_query(tokens)}
    row = (await conn.execute(_sample(dialect, size, SAMPLE_STRIPES), params)).one()
    if row[0] is None:
        return Plan(tokens, common=False)
    hits = int(row[1])
    if hits >= COMMON_HITS * len(tokens):
        return Plan(tokens, common=True, sampled=hits)
    words = _listed(tokens, row[2] or ()) if dialect == "postgresql" else ()
    return Plan(tokens, common=False, sampled=hits, words=words)


def _document_matches(
    dialect: str, words: sa.ColumnElement[Any], tokens: Sequence[str]
) -> sa.ColumnElement[bool]:
    """The row at hand holds every token as a word prefix in ``words`` (its ``tsvector`` on
    PostgreSQL, its tokens on SQLite), tested on that row alone (no index scan): the test
    of the walking plan."""
    if dialect == "postgresql":
        return words.op("@@")(sa.func.to_tsquery("simple", _tsquery(tokens)))
    # Documents are our tokens joined by single spaces, so " " + token found in
    # " " + document is exactly "a word starting with token" — what FTS5's "token"* means.
    doc = sa.literal(" ", sa.Text).concat(words)
    return sa.and_(*(sa.func.instr(doc, " " + t) > 0 for t in tokens))


def _walked(
    dialect: str, table: sa.TableClause
) -> tuple[sa.TableClause, sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    """Where the walk reads a search row by its id: the table, the id, the words.

    On SQLite that is FTS5's own content table, ``<table>_content``, the plain table
    behind every FTS5 table that stores its documents (``id``, then ``c0`` for the first
    column, as FTS5's documentation lays it out): read by primary key it costs a quarter
    less of the walk than the same row through the FTS5 table ('termin dostawa' 21.6 ->
    16.1 ms, 'faktura korekta' 10.4 -> 8.3 ms at a million messages). Only read, never
    written: FTS5 keeps it. A test checks that layout
    (``test_search_walk_reads_fts5_content_tables``).
    """
    if dialect == "postgresql":
        return table, table.c[_POSTGRESQL_KEYS[table.name]], table.c.vector
    content = sa.table(f"{table.name}_content", sa.column("id", sa.Integer), sa.column("c0"))
    return content, content.c.id, content.c.c0


def _row_by_row(query: sa.Select[Any]) -> sa.ColumnElement[bool]:
    """``EXISTS (query)`` evaluated for each row of the walk.

    Written as a scalar subquery with ``LIMIT 1``: PostgreSQL turns an EXISTS (or IN)
    into a hashed SubPlan or a semi-join whenever its estimate says so — collecting every
    match first, the very cost the walk avoids — but never a scalar subquery.
    """
    return query.limit(1).scalar_subquery().is_not(None)


def _collected(
    dialect: str,
    column: sa.ColumnElement[Any],
    hits: sa.TextClause,
    name: str,
    *,
    walk: bool = False,
) -> sa.ColumnElement[bool]:
    """``column`` is one of the ids ``hits`` selects, every hit collected first.

    On PostgreSQL as ``= ANY(array of the hits)``, evaluated once and looked up by primary
    key: as ``IN`` it may instead walk every row testing it, when its estimate for a
    prefix (a flat 0.5 % when no common word matches it) is far above the truth. With
    ``walk`` (thousands of hits), exactly that walk is wanted: ``(… IN …) IS TRUE`` is
    never turned into a join, so the hits go into a hash once and the view's rows are
    tested against it in the view's order until a page is full.
    """
    found = hits.columns(sa.column(name, sa.Integer)).subquery().c[name]
    if dialect == "postgresql":
        if walk:
            return column.in_(sa.select(found)).is_(sa.true())
        ids = sa.select(sa.func.array_agg(found)).scalar_subquery()
        return column == sa.any_(sa.cast(ids, sa.ARRAY(sa.BigInteger)))
    return column.in_(sa.select(found))


def conversations_matching(dialect: str, search: Plan) -> sa.ColumnElement[bool]:
    """Condition on ``conversations``: the customer name, or one message of the
    conversation, contains a word starting with every token.

    Walking, a conversation's messages and name are read only when its words
    (``conversation_words``: every word of its messages and its customer's name) hold
    every token: one row says "no" for most conversations, where reading their messages
    took ~10 documents each and the name a lookup in the name index (6.5 of 25 ms for
    'termin dostawa' at a million messages on SQLite). For several words it can say yes
    when no single message holds them all, and the messages and the name decide.
    """
    conv, msgs = tables.conversations, tables.messages
    if not search.common:
        # Few matches (none sampled): fetch each conversation and sort the page from them.
        # Thousands: fetching and sorting them cost more than walking the view in order and
        # looking each conversation up in the collected set, which SQLite does only when
        # the id is no candidate for an index (22 -> 12 ms for 4,100 conversations at a
        # million messages; 15 ms to walk all 100,000 when nothing matches after all), and
        # PostgreSQL as a hashed subplan (see WALK_COLLECTED_HITS and _collected).
        walk = search.sampled >= WALK_COLLECTED_HITS.get(dialect, 1)
        column = unindexed(conv.c.id) if walk else conv.c.id
        hits = matching_conversations(dialect, search.tokens, search.words)
        return _collected(dialect, column, hits, "conversation_id", walk=walk)
    cw = _conversation_words
    words = cw.c.vector if dialect == "postgresql" else cw.c.tokens
    in_words = sa.select(sa.literal(1)).where(
        cw.c.conversation_id == conv.c.id, _document_matches(dialect, words, search.tokens)
    )
    ms, message_id, message_words = _walked(dialect, _message_search)
    in_message = sa.select(sa.literal(1)).where(
        _document_matches(dialect, message_words, search.tokens)
    )
    if dialect == "postgresql":  # its search rows by conversation (migration 0017)
        in_message = in_message.where(ms.c.conversation_id == conv.c.id)
    else:  # FTS5 cannot index by conversation: through the conversation's messages
        in_message = in_message.select_from(msgs.join(ms, message_id == msgs.c.id))
        in_message = in_message.where(msgs.c.conversation_id == conv.c.id)
    _, name_id, name_words = _walked(dialect, _conversation_search)
    in_name = sa.select(sa.literal(1)).where(
        name_id == conv.c.id, _document_matches(dialect, name_words, search.tokens)
    )
    # AND and OR are evaluated in the order written, stopping as soon as the answer is known.
    return sa.and_(_row_by_row(in_words), sa.or_(_row_by_row(in_message), _row_by_row(in_name)))


def messages_matching(dialect: str, search: Plan) -> sa.ColumnElement[bool]:
    """Condition on ``messages``: the message contains a word starting with every token."""
    msgs, ms = tables.messages, _message_search
    if not search.common:
        hits = matching_messages(dialect, search.tokens, search.words)
        return _collected(dialect, msgs.c.id, hits, "message_id")
    _, message_id, message_words = _walked(dialect, ms)
    return _row_by_row(
        sa.select(sa.literal(1)).where(
            message_id == msgs.c.id, _document_matches(dialect, message_words, search.tokens)
        )
    )


def _tsquery(tokens: Sequence[str], words: Sequence[Sequence[str] | None] = ()) -> str:
    """Every token as a word prefix; with ``words`` (:attr:`Plan.words`), as the words it
    begins where they are known — none: the token itself, which then no row holds."""

    def term(i: int, token: str) -> str:
        listed = words[i] if words else None
        if listed is None:
            return f"{token}:*"
        return f"({' | '.join(listed)})" if listed else token

    return " & ".join(term(i, t) for i, t in enumerate(tokens))


def _fts_query(tokens: Sequence[str]) -> str:
    return " AND ".join(f'"{t}"*' for t in tokens)


def matching_conversations(
    dialect: str, tokens: Sequence[str], words: Sequence[Sequence[str] | None] = ()
) -> sa.TextClause:
    """SQL selecting ``conversation_id`` of conversations whose customer name, or one of
    whose messages, contains a word starting with every token (every match collected;
    ``words``: see :attr:`Plan.words`)."""
    if dialect == "postgresql":
        return sa.text(
            "SELECT conversation_id FROM message_search "
            "WHERE vector @@ to_tsquery('simple', :tsq) "
            "UNION SELECT conversation_id FROM conversation_search "
            "WHERE vector @@ to_tsquery('simple', :tsq)"
        ).bindparams(tsq=_tsquery(tokens, words))
    # The conversation of each hit from the narrow index of (id, conversation_id)
    # (migration 0013): through the primary key each hit reads the message's wide row, and
    # reading the UNINDEXED column from FTS5's content costs several times more again.
    return sa.text(
        "SELECT conversation_id FROM messages INDEXED BY ix_messages_id_conversation WHERE id IN "
        "(SELECT rowid FROM message_search WHERE message_search MATCH :fts) "
        "UNION SELECT rowid FROM conversation_search WHERE conversation_search MATCH :fts"
    ).bindparams(fts=_fts_query(tokens))


def matching_messages(
    dialect: str, tokens: Sequence[str], words: Sequence[Sequence[str] | None] = ()
) -> sa.TextClause:
    """SQL selecting ``message_id`` of messages containing every token as a word prefix
    (``words``: see :attr:`Plan.words`)."""
    if dialect == "postgresql":
        return sa.text(
            "SELECT message_id FROM message_search WHERE vector @@ to_tsquery('simple', :tsq)"
        ).bindparams(tsq=_tsquery(tokens, words))
    return sa.text(
        "SELECT rowid AS message_id FROM message_search WHERE message_search MATCH :fts"
    ).bindparams(fts=_fts_query(tokens))
