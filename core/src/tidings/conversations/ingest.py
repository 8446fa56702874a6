"""Storing inbound messages: dedupe, thread, reopen, metrics, search — one transaction.

Called with the connection of the caller's transaction, so a webhook's messages, a polled
batch's cursor and everything derived from them commit (or roll back) together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channel import Account
from tidings.conversations.metrics import WaitState
from tidings.conversations.models import State
from tidings.conversations.subjects import base_subject
from tidings.models import Address, Attachment, ContactMatch, InboundMessage, Threading
from tidings.outbound.consent import record_consent
from tidings.routing import ensure_project
from tidings.routing.route import route_new
from tidings.store import dialect_insert, search, tables
from tidings.store.sqlite_connection import execute_many

c, m, tr = tables.conversations, tables.messages, tables.thread_refs


# Ingestion's statements are built once, with (expanding) bind parameters: building a
# statement and its cache key from a batch's values, for SQLAlchemy to find the same
# compiled form again, cost more than running it (an IN of 50 literals: ~0.3 ms of the
# event loop's CPU per execution).
def _expanding(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name, expanding=True)


_SEEN = sa.select(m.c.provider_id).where(
    m.c.account_id == sa.bindparam("account"),
    m.c.direction == "in",
    m.c.provider_id.in_(_expanding("ids")),
)
_TOUCHED = sa.select(c).where(c.c.id.in_(_expanding("ids")))
_TOUCHED_LOCKED = _TOUCHED.with_for_update()
_BY_THREAD_KEY = sa.select(c.c.thread_key, c.c.id).where(
    c.c.account_id == sa.bindparam("account"), c.c.thread_key.in_(_expanding("keys"))
)
_STORED_REFS = sa.select(tr.c.ref, tr.c.conversation_id).where(
    tr.c.account_id == sa.bindparam("account"), tr.c.ref.in_(_expanding("refs"))
)
_SUBJECT_THREADS = sa.select(c.c.customer_key, c.c.base_subject, c.c.id, c.c.last_message_at).where(
    c.c.account_id == sa.bindparam("account"),
    c.c.customer_key.in_(_expanding("keys")),
    c.c.base_subject.in_(_expanding("bases")),
    c.c.last_message_at >= sa.bindparam("oldest"),
)
_HISTORIES = sa.select(m.c.conversation_id, m.c.direction, m.c.sent_at).where(
    m.c.conversation_id.in_(_expanding("ids")), m.c.direction != "note"
)


@cache
def _insert(table: sa.Table) -> sa.Insert:
    return sa.insert(table)


@cache
def _insert_new(dialect: str, table: sa.Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for this kind of store."""
    return dialect_insert(dialect, table).on_conflict_do_nothing()


@cache
def _insert_blobs(dialect: str) -> Any:
    return dialect_insert(dialect, tables.blobs).on_conflict_do_nothing(index_elements=["sha256"])


@cache
def _update_conversations_by_id(columns: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(c)
        .where(c.c.id == sa.bindparam("b_id"))
        .values({k: sa.bindparam(f"b_{k}") for k in columns})
    )


@dataclass
class IngestResult:
    stored: list[int] = field(default_factory=list)
    """Ids of the messages stored now."""
    duplicates: int = 0
    """Messages already stored earlier (same provider id): nothing new was written."""
    conversations: set[int] = field(default_factory=set)
    created: set[int] = field(default_factory=set)
    reopened: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class AccountInfo:
    """What ingestion needs to know about the account a message came through."""

    account: Account[Any]
    kind: str
    threading: Threading
    own_address: Address | None


def _refs(msg: InboundMessage) -> list[str]:
    """Message-IDs linking this message to a thread, the most specific first."""
    thread = msg.thread
    ordered = [*thread.in_reply_to, *reversed(thread.references)]
    if thread.message_id:
        ordered.append(thread.message_id)
    return [r[:998] for r in dict.fromkeys(r.strip() for r in ordered) if r]


async def store_attachments(
    conn: AsyncConnection, message_id: int, attachments: Sequence[Attachment]
) -> None:
    """Store one message's attachments (an agent's reply)."""
    await _store_attachments(conn, [(message_id, a) for a in attachments])


async def _store_attachments(
    conn: AsyncConnection, attached: Sequence[tuple[int, Attachment]]
) -> None:
    """Attachments of any number of messages: two statements, however many there are.

    Contents are stored once per distinct hash (a logo in every signature is one blob).
    """
    if not attached:
        return
    blobs = {
        a.sha256: {"sha256": a.sha256, "size": a.size, "data": a.data}
        for _, a in attached
        if a.data is not None and a.sha256 is not None
    }
    if blobs:
        await execute_many(conn, _insert_blobs(conn.dialect.name), list(blobs.values()))
    await execute_many(
        conn,
        _insert(tables.attachments),
        [
            {
                "message_id": message_id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "url": a.url,
                "inline": a.inline,
                "content_id": a.content_id,
            }
            for message_id, a in attached
        ],
    )


class _Ids:
    """Primary keys of the rows this transaction is about to insert, handed out before the
    INSERT: a batch's rows then go in with one plain executemany and the caller already
    knows which id is which row (no ``RETURNING`` to match back, which SQLite does not
    promise in order; no statement per row).
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    async def take(self, conn: AsyncConnection, table: sa.Table, count: int) -> list[int]:
        if conn.dialect.name == "postgresql":
            # One multi-row INSERT … RETURNING of a batch is ~200 KB of SQL, which psycopg
            # re-parses on every execution (it caches only statements under 4 KB): a third
            # of ingestion's CPU. Ids come from the sequence instead, and the short INSERT
            # runs once per row in psycopg's pipeline.
            ids = await conn.execute(_PG_NEXT_IDS, {"table": table.name, "n": count})
            return [int(i) for i in ids.scalars()]
        # SQLite: a write transaction (BEGIN IMMEDIATE) holds the database's only write
        # lock, so nobody takes ids meanwhile, and one read of where both tables stand
        # serves the whole batch. AUTOINCREMENT never reuses an id: the next one is past
        # the highest ever used (sqlite_sequence), which explicit ids move forward as well.
        if not self._last:
            row = (await conn.execute(_SQLITE_LAST_IDS)).one()
            self._last = {name: int(last) for name, last in zip(_ID_TABLES, row, strict=True)}
        last = self._last[table.name]
        self._last[table.name] = last + count
        return list(range(last + 1, last + 1 + count))


async def _insert_rows(
    conn: AsyncConnection, ids: _Ids, table: sa.Table, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert ``rows`` with one executemany, each given its id first; the ids in order."""
    new = await ids.take(conn, table, len(rows))
    for row, row_id in zip(rows, new, strict=True):
        row["id"] = row_id
    await execute_many(conn, _insert(table), rows)
    return new


_SQLITE_SEQUENCE = sa.table("sqlite_sequence", sa.column("name"), sa.column("seq"))
_ID_TABLES = (c.name, m.name)


def _sqlite_last_id(table: sa.Table) -> sa.ColumnElement[int]:
    used = sa.select(_SQLITE_SEQUENCE.c.seq).where(_SQLITE_SEQUENCE.c.name == table.name)
    return sa.func.max(
        sa.func.coalesce(used.scalar_subquery(), 0),
        sa.func.coalesce(sa.select(sa.func.max(table.c.id)).scalar_subquery(), 0),
    )


_SQLITE_LAST_IDS = sa.select(*(_sqlite_last_id(t) for t in (c, m)))


_PG_NEXT_IDS = sa.text(
    "SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"
)


async def ingest(
    conn: AsyncConnection,
    info: AccountInfo,
    messages: Sequence[InboundMessage],
    contacts: Mapping[str, Sequence[ContactMatch]],
    *,
    now: datetime,
    subject_window: timedelta,
) -> IngestResult:
    """Store ``messages`` of one account in the caller's transaction.

    Batch-shaped: a fixed number of statements per batch, not per message, so a mailbox
    sync or a burst of webhooks costs little more than one message. ``contacts`` maps
    sender address keys to contact-lookup answers (looked up before the transaction: a
    CRM call must not hold database locks). Nothing here goes on after a failed write, so
    callers run it inside ``deferred_writes`` (``Conversations`` does): on SQLite the
    batch's multi-row writes then wait for the read after them, or for the commit.
    """
    result = IngestResult()
    account = info.account
    ids = list(dict.fromkeys(msg.provider_id for msg in messages))
    seen = set((await conn.execute(_SEEN, {"account": account.id, "ids": ids})).scalars())
    fresh: list[InboundMessage] = []
    for msg in sorted(messages, key=lambda item: item.sent_at):
        if msg.provider_id in seen:
            result.duplicates += 1
        else:
            seen.add(msg.provider_id)
            fresh.append(msg)
    if not fresh:
        return result
    await record_consent(conn, account.id, fresh, now)  # STOP/START of new messages only

    # Each sender's newest name in the batch; a later message without one keeps it.
    names: dict[str, str] = {}
    for msg in fresh:
        key = msg.sender.key
        name = next((x.display_name for x in contacts.get(key, ()) if x.display_name), None)
        name = name or msg.sender.name or ""
        if name or key not in names:
            names[key] = name
    keys = _Ids()
    if info.threading is Threading.ADDRESS:
        targets = await _address_threads(conn, info, fresh, names, now, result)
    else:
        targets = await _email_threads(conn, info, keys, fresh, names, now, subject_window, result)

    # Lock the conversations touched (PostgreSQL; SQLite's write transaction is exclusive).
    cids = sorted(set(targets))
    query = _TOUCHED_LOCKED if conn.dialect.name == "postgresql" else _TOUCHED
    rows = {row.id: row for row in (await conn.execute(query, {"ids": cids})).all()}

    message_ids = await _insert_messages(conn, info, keys, fresh, targets, now)
    result.stored.extend(message_ids)
    result.conversations.update(cids)
    await _insert_related(conn, info, fresh, targets, message_ids, contacts)
    await _update_conversations(conn, fresh, targets, rows, names, now, result)
    await route_new(conn, info, fresh, targets, result, contacts, now)
    return result


def _conversation_values(
    info: AccountInfo, msg: InboundMessage, project_id: int, name: str, now: datetime
) -> dict[str, Any]:
    system = (
        info.own_address.key
        if info.own_address
        else (msg.recipients[0].key if msg.recipients else "")
    )
    return {
        "project_id": project_id,
        "account_id": info.account.id,
        "channel": info.account.channel,
        "kind": info.kind,
        "customer_key": msg.sender.key,
        "customer_name": name[:300],
        "system_key": system,
        "thread_key": msg.sender.key if info.threading is Threading.ADDRESS else None,
        "subject": (msg.subject or "")[:998],
        "base_subject": base_subject(msg.subject)[:998],
        "state": State.NEW.value,
        "created_at": msg.sent_at,
        "updated_at": now,
        "last_message_at": msg.sent_at,
        "queue_entered_at": now,
    }


async def _created(conn: AsyncConnection, created: Mapping[int, str], now: datetime) -> None:
    """Index the names of new conversations and log their creation."""
    if not created:
        return
    await search.index_new_customer_names(conn, created)
    await execute_many(
        conn,
        _insert(tables.events),
        [
            {"conversation_id": cid, "at": now, "actor_id": None, "kind": "created", "data": {}}
            for cid in created
        ],
    )


async def _address_threads(
    conn: AsyncConnection,
    info: AccountInfo,
    fresh: Sequence[InboundMessage],
    names: Mapping[str, str],
    now: datetime,
    result: IngestResult,
) -> list[int]:
    """One conversation per customer address and account: find them, create the missing."""
    keys = list(dict.fromkeys(msg.sender.key for msg in fresh))
    account_id = info.account.id
    by_key: dict[str, int] = dict(
        (await conn.execute(_BY_THREAD_KEY, {"account": account_id, "keys": keys})).all()
    )
    missing = [k for k in keys if k not in by_key]
    if missing:
        project_id = await ensure_project(conn, info.account.project, lambda: now)
        first: dict[str, InboundMessage] = {}
        for msg in fresh:
            first.setdefault(msg.sender.key, msg)
        stmt = dialect_insert(conn.dialect.name, c).on_conflict_do_nothing(
            index_elements=[c.c.account_id, c.c.thread_key]
        )
        inserted = await conn.execute(
            # Rows are matched by key, not order: asking for parameter order makes SQLite
            # insert one row per statement.
            stmt.returning(c.c.id, c.c.thread_key),
            [_conversation_values(info, first[k], project_id, names[k], now) for k in missing],
        )
        made = {row.thread_key: int(row.id) for row in inserted.all()}
        by_key.update(made)
        result.created.update(made.values())
        await _created(conn, {cid: names[k] for k, cid in made.items()}, now)
        lost = [k for k in missing if k not in by_key]  # created meanwhile by another writer
        if lost:
            by_key.update(
                (await conn.execute(_BY_THREAD_KEY, {"account": account_id, "keys": lost})).all()
            )
    return [by_key[msg.sender.key] for msg in fresh]


async def _email_threads(
    conn: AsyncConnection,
    info: AccountInfo,
    ids: _Ids,
    fresh: Sequence[InboundMessage],
    names: Mapping[str, str],
    now: datetime,
    subject_window: timedelta,
    result: IngestResult,
) -> list[int]:
    """Thread each message by its headers, then by subject (same customer, recent thread
    only); earlier messages of the same batch count as if already stored.

    What the store knows is read once for the whole batch — every referenced Message-ID,
    every candidate subject thread — so a mailbox sync costs a few queries per batch.
    """
    account_id = info.account.id
    refs_of = [_refs(msg) for msg in fresh]
    bases = [base_subject(msg.subject)[:998] for msg in fresh]
    stored_refs: dict[str, list[int]] = {}
    wanted = sorted({r for refs in refs_of for r in refs})
    for start in range(0, len(wanted), 500):
        for ref, cid in await conn.execute(
            _STORED_REFS, {"account": account_id, "refs": wanted[start : start + 500]}
        ):
            stored_refs.setdefault(ref, []).append(int(cid))
    subject_threads: dict[tuple[str, str], list[tuple[datetime, int]]] = {}
    keyed = {(msg.sender.key, base) for msg, base in zip(fresh, bases, strict=True) if base}
    if keyed:
        oldest = min(min(now, msg.sent_at) for msg in fresh) - subject_window
        wanted_threads = {
            "account": account_id,
            "keys": sorted({k for k, _ in keyed}),
            "bases": sorted({b for _, b in keyed}),
            "oldest": oldest,
        }
        for key, base, cid, last in await conn.execute(_SUBJECT_THREADS, wanted_threads):
            subject_threads.setdefault((key, base), []).append((last, int(cid)))

    # Conversations this batch starts get placeholder ids (-1, -2, …) until one INSERT
    # stores them all at the end.
    batch_refs: dict[str, int] = {}
    batch_subjects: dict[tuple[str, str], int] = {}
    new_rows: list[dict[str, Any]] = []
    targets: list[int] = []
    project_id: int | None = None
    for msg, refs, base in zip(fresh, refs_of, bases, strict=True):
        cid = next((batch_refs[r] for r in refs if r in batch_refs), None)
        if cid is None:
            # The most specific reference wins: In-Reply-To, then References newest first.
            cid = next((min(stored_refs[r]) for r in refs if r in stored_refs), None)
        if cid is None and base:
            since = min(now, msg.sent_at) - subject_window
            recent = [t for t in subject_threads.get((msg.sender.key, base), ()) if t[0] >= since]
            cid = max(recent)[1] if recent else batch_subjects.get((msg.sender.key, base))
        if cid is None:
            if project_id is None:
                project_id = await ensure_project(conn, info.account.project, lambda: now)
            new_rows.append(_conversation_values(info, msg, project_id, names[msg.sender.key], now))
            cid = -len(new_rows)
        for r in refs:
            batch_refs.setdefault(r, cid)
        if base:
            batch_subjects[(msg.sender.key, base)] = cid
        targets.append(cid)
    if not new_rows:
        return targets
    made = await _insert_rows(conn, ids, c, new_rows)
    result.created.update(made)
    await _created(
        conn,
        {cid: names[row["customer_key"]] for row, cid in zip(new_rows, made, strict=True)},
        now,
    )
    return [made[-cid - 1] if cid < 0 else cid for cid in targets]


async def _insert_messages(
    conn: AsyncConnection,
    info: AccountInfo,
    ids: _Ids,
    fresh: Sequence[InboundMessage],
    targets: Sequence[int],
    now: datetime,
) -> list[int]:
    rows = [
        {
            "conversation_id": cid,
            "direction": "in",
            "account_id": info.account.id,
            "provider_id": msg.provider_id,
            "sender_key": msg.sender.key,
            "sender_name": (msg.sender.name or "")[:300],
            "recipients": {
                "to": [a.key for a in msg.recipients],
                "cc": [a.key for a in msg.cc],
            },
            "subject": (msg.subject or "")[:998],
            "text": msg.text,
            "html": msg.html,
            "sent_at": msg.sent_at,
            "created_at": now,
            "author_id": None,
            "status": None,
            "auto_reply": msg.auto_reply,
            "has_attachments": bool(msg.attachments),
            "meta": {
                **msg.meta,
                **({"message_id": msg.thread.message_id} if msg.thread.message_id else {}),
                **({"consent": msg.consent.value} if msg.consent else {}),
            },
            "raw": msg.raw,
        }
        for msg, cid in zip(fresh, targets, strict=True)
    ]
    return await _insert_rows(conn, ids, m, rows)


async def _insert_related(
    conn: AsyncConnection,
    info: AccountInfo,
    fresh: Sequence[InboundMessage],
    targets: Sequence[int],
    message_ids: Sequence[int],
    contacts: Mapping[str, Sequence[ContactMatch]],
) -> None:
    """Everything hanging on the new messages, one statement per kind for the batch."""
    dialect = conn.dialect.name
    account_id = info.account.id
    own = info.own_address.key if info.own_address else None
    sources: list[dict[str, Any]] = []
    refs: dict[tuple[str, int], dict[str, Any]] = {}
    participants: dict[tuple[int, str, str], None] = {}
    links: dict[tuple[int, str, str], str] = {}
    docs: list[tuple[int, int, str]] = []
    attached: list[tuple[int, Attachment]] = []
    for msg, cid, mid in zip(fresh, targets, message_ids, strict=True):
        attached.extend((mid, a) for a in msg.attachments)
        if msg.source is not None:
            sources.append({"message_id": mid, "data": msg.source})
        for r in _refs(msg):
            refs[(r, cid)] = {"account_id": account_id, "ref": r, "conversation_id": cid}
        participants[(cid, "customer", msg.sender.key)] = None
        for address in (*msg.recipients, *msg.cc):
            system = address.key == own or (own is None and address in msg.recipients[:1])
            participants[(cid, "system" if system else "customer", address.key)] = None
        for x in contacts.get(msg.sender.key, ()):
            links[(cid, x.source, x.external_id)] = x.display_name
        docs.append((mid, cid, search.document(msg.subject, msg.text)))
    await _store_attachments(conn, attached)
    if sources:
        await execute_many(conn, _insert(tables.message_sources), sources)
    if refs:
        await execute_many(conn, _insert_new(dialect, tables.thread_refs), list(refs.values()))
    await execute_many(
        conn,
        _insert_new(dialect, tables.participants),
        [{"conversation_id": cid, "side": side, "address_key": key}
         for cid, side, key in participants],
    )  # fmt: skip
    if links:
        await execute_many(
            conn,
            _insert_new(dialect, tables.conversation_contacts),
            [{"conversation_id": cid, "source": src, "external_id": ext, "display_name": name}
             for (cid, src, ext), name in links.items()],
        )  # fmt: skip
    await search.index_messages(conn, docs)


_REOPEN_COLUMNS = ("state", "reopened_at", "queue_entered_at")


async def _update_conversations(
    conn: AsyncConnection,
    fresh: Sequence[InboundMessage],
    targets: Sequence[int],
    rows: Mapping[int, sa.Row[Any]],
    names: Mapping[str, str],
    now: datetime,
    result: IngestResult,
) -> None:
    """Counts, times, reopening and metrics of the touched conversations, in one executemany."""
    per_conv: dict[int, list[InboundMessage]] = {}
    for msg, cid in zip(fresh, targets, strict=True):
        per_conv.setdefault(cid, []).append(msg)
    late = [cid for cid, msgs in per_conv.items() if msgs[0].sent_at < rows[cid].last_message_at]
    histories: dict[int, list[tuple[str, datetime]]] = {}
    if late:
        for cid, direction, at in await conn.execute(_HISTORIES, {"ids": late}):
            histories.setdefault(cid, []).append((direction, at))
    reopened_events = []
    updates: list[dict[str, Any]] = []
    renamed: dict[int, str] = {}
    for cid, msgs in per_conv.items():
        row = rows[cid]
        values: dict[str, Any] = {}
        if row.state == State.CLOSED.value:
            state = State.ASSIGNED if row.assignee_id is not None else State.NEW
            values.update(state=state.value, reopened_at=now)
            if state is State.NEW:
                values["queue_entered_at"] = now
            reopened_events.append(
                {"conversation_id": cid, "at": now, "actor_id": None, "kind": "reopened",
                 "data": {"reason": "inbound message"}}
            )  # fmt: skip
            result.reopened.add(cid)
        if cid in histories:
            wait = WaitState.from_history(histories[cid])
        else:
            wait = WaitState(
                first_inbound_at=row.first_inbound_at,
                first_reply_at=row.first_reply_at,
                waiting_since=row.waiting_since,
                agent_waiting_since=row.agent_waiting_since,
                agent_wait_seconds=row.agent_wait_seconds,
                customer_wait_seconds=row.customer_wait_seconds,
            )
            for msg in msgs:
                wait = wait.fold("in", msg.sent_at)
        newest = msgs[-1].sent_at
        values.update(wait.columns())
        values.update(
            message_count=row.message_count + len(msgs),
            updated_at=now,
            last_message_at=max(row.last_message_at, newest),
            last_inbound_at=max(filter(None, (row.last_inbound_at, newest))),
            created_at=min(row.created_at, msgs[0].sent_at),
        )
        name = names.get(msgs[0].sender.key, "")
        if name and not row.customer_name:
            renamed[cid] = name
        values["customer_name"] = (name if cid in renamed else row.customer_name)[:300]
        for key in _REOPEN_COLUMNS:
            values.setdefault(key, getattr(row, key))
        updates.append({"b_id": cid, **{f"b_{k}": v for k, v in values.items()}})
    if updates:
        # One executemany for the batch: every row carries the same columns.
        columns = tuple(k[2:] for k in updates[0] if k != "b_id")
        await execute_many(conn, _update_conversations_by_id(columns), updates)
    for cid, name in renamed.items():
        await search.index_customer_name(conn, cid, name)
    if reopened_events:
        await execute_many(conn, _insert(tables.events), reopened_events)
