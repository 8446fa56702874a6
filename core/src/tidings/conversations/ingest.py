"""Storing inbound messages: dedupe, thread, reopen, metrics, search — one transaction.

Called with the connection of the caller's transaction, so a webhook's messages, a polled
batch's cursor and everything derived from them commit (or roll back) together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channel import Account
from tidings.conversations.metrics import WaitState
from tidings.conversations.models import State
from tidings.conversations.subjects import base_subject
from tidings.models import Address, Attachment, ContactMatch, InboundMessage, Threading
from tidings.routing import ensure_project
from tidings.store import dialect_insert, search, tables

c, m = tables.conversations, tables.messages


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


async def _event(
    conn: AsyncConnection, cid: int, at: datetime, kind: str, data: Mapping[str, Any]
) -> None:
    await conn.execute(
        sa.insert(tables.events).values(
            conversation_id=cid, at=at, actor_id=None, kind=kind, data=dict(data)
        )
    )


def _refs(msg: InboundMessage) -> list[str]:
    """Message-IDs linking this message to a thread, the most specific first."""
    thread = msg.thread
    ordered = [*thread.in_reply_to, *reversed(thread.references)]
    if thread.message_id:
        ordered.append(thread.message_id)
    return [r[:998] for r in dict.fromkeys(r.strip() for r in ordered) if r]


async def _find_email_thread(
    conn: AsyncConnection,
    info: AccountInfo,
    msg: InboundMessage,
    customer_key: str,
    now: datetime,
    subject_window: timedelta,
) -> int | None:
    refs = _refs(msg)
    if refs:
        tr = tables.thread_refs
        rows = (
            await conn.execute(
                sa.select(tr.c.ref, tr.c.conversation_id).where(
                    tr.c.account_id == info.account.id, tr.c.ref.in_(refs)
                )
            )
        ).all()
        if rows:
            rank = {ref: i for i, ref in enumerate(refs)}
            best = min(rows, key=lambda row: (rank[row.ref], row.conversation_id))
            return int(best.conversation_id)
    base = base_subject(msg.subject)
    if not base:
        return None
    # Subject fallback: same customer only, and only a recent thread.
    found = (
        await conn.execute(
            sa.select(c.c.id)
            .where(
                c.c.account_id == info.account.id,
                c.c.customer_key == customer_key,
                c.c.base_subject == base[:998],
                c.c.last_message_at >= min(now, msg.sent_at) - subject_window,
            )
            .order_by(c.c.last_message_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


async def _create_conversation(
    conn: AsyncConnection,
    info: AccountInfo,
    msg: InboundMessage,
    customer_key: str,
    customer_name: str,
    now: datetime,
) -> int | None:
    account = info.account
    project_id = await ensure_project(conn, account.project, lambda: now)
    system = (
        info.own_address.key
        if info.own_address
        else (msg.recipients[0].key if msg.recipients else "")
    )
    values = {
        "project_id": project_id,
        "account_id": account.id,
        "channel": account.channel,
        "kind": info.kind,
        "customer_key": customer_key,
        "customer_name": customer_name,
        "system_key": system,
        "thread_key": customer_key if info.threading is Threading.ADDRESS else None,
        "subject": (msg.subject or "")[:998],
        "base_subject": base_subject(msg.subject)[:998],
        "state": State.NEW.value,
        "created_at": msg.sent_at,
        "updated_at": now,
        "last_message_at": msg.sent_at,
        "queue_entered_at": now,
    }
    stmt = dialect_insert(conn.dialect.name, c).values(**values)
    if info.threading is Threading.ADDRESS:
        stmt = stmt.on_conflict_do_nothing(index_elements=[c.c.account_id, c.c.thread_key])
    cid = (await conn.execute(stmt.returning(c.c.id))).scalar_one_or_none()
    if cid is None:
        return None  # a concurrent transaction created it first
    await search.index_customer_name(conn, int(cid), customer_name)
    await _event(conn, int(cid), now, "created", {"account": account.id})
    return int(cid)


async def _store_attachments(
    conn: AsyncConnection, message_id: int, attachments: Sequence[Attachment]
) -> None:
    blobs = [
        {"sha256": a.sha256, "size": a.size, "data": a.data}
        for a in attachments
        if a.data is not None and a.sha256 is not None
    ]
    if blobs:
        stmt = dialect_insert(conn.dialect.name, tables.blobs)
        unique = list({b["sha256"]: b for b in blobs}.values())
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=["sha256"]), unique)
    await conn.execute(
        sa.insert(tables.attachments),
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
            for a in attachments
        ],
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

    ``contacts`` maps sender address keys to the contact-lookup answers (looked up before
    the transaction: a CRM call must not hold database locks).
    """
    result = IngestResult()
    account = info.account
    ids = [msg.provider_id for msg in messages]
    seen = set(
        (
            await conn.execute(
                sa.select(m.c.provider_id).where(
                    m.c.account_id == account.id, m.c.direction == "in", m.c.provider_id.in_(ids)
                )
            )
        ).scalars()
    )
    for msg in sorted(messages, key=lambda item: item.sent_at):
        if msg.provider_id in seen:
            result.duplicates += 1
            continue
        seen.add(msg.provider_id)
        await _ingest_one(conn, info, msg, contacts.get(msg.sender.key, ()), now,
                          subject_window, result)  # fmt: skip
    return result


async def _ingest_one(
    conn: AsyncConnection,
    info: AccountInfo,
    msg: InboundMessage,
    matches: Sequence[ContactMatch],
    now: datetime,
    subject_window: timedelta,
    result: IngestResult,
) -> None:
    account = info.account
    customer_key = msg.sender.key
    customer_name = next((x.display_name for x in matches if x.display_name), None) or (
        msg.sender.name or ""
    )
    cid: int | None
    if info.threading is Threading.ADDRESS:
        cid = (
            await conn.execute(
                sa.select(c.c.id).where(
                    c.c.account_id == account.id, c.c.thread_key == customer_key
                )
            )
        ).scalar_one_or_none()
    else:
        cid = await _find_email_thread(conn, info, msg, customer_key, now, subject_window)
    if cid is None:
        cid = await _create_conversation(conn, info, msg, customer_key, customer_name, now)
        if cid is None:  # lost a creation race: the other one exists now
            cid = (
                await conn.execute(
                    sa.select(c.c.id).where(
                        c.c.account_id == account.id, c.c.thread_key == customer_key
                    )
                )
            ).scalar_one()
        else:
            result.created.add(cid)
    conv = (await conn.execute(sa.select(c).where(c.c.id == cid))).one()

    updates: dict[str, Any] = {}
    if conv.state == State.CLOSED.value:
        reopened_state = State.ASSIGNED if conv.assignee_id is not None else State.NEW
        updates.update(state=reopened_state.value, reopened_at=now)
        if reopened_state is State.NEW:
            updates["queue_entered_at"] = now
        await _event(conn, cid, now, "reopened", {"reason": "inbound message"})
        result.reopened.add(cid)

    message_id = (
        await conn.execute(
            sa.insert(m)
            .values(
                conversation_id=cid,
                direction="in",
                account_id=account.id,
                provider_id=msg.provider_id,
                sender_key=customer_key,
                sender_name=(msg.sender.name or "")[:300],
                recipients={
                    "to": [a.key for a in msg.recipients],
                    "cc": [a.key for a in msg.cc],
                },
                subject=(msg.subject or "")[:998],
                text=msg.text,
                html=msg.html,
                sent_at=msg.sent_at,
                created_at=now,
                auto_reply=msg.auto_reply,
                has_attachments=bool(msg.attachments),
                meta={
                    **msg.meta,
                    **({"message_id": msg.thread.message_id} if msg.thread.message_id else {}),
                    **({"consent": msg.consent.value} if msg.consent else {}),
                },
                raw=msg.raw,
            )
            .returning(m.c.id)
        )
    ).scalar_one()
    result.stored.append(int(message_id))
    result.conversations.add(cid)

    if msg.attachments:
        await _store_attachments(conn, message_id, msg.attachments)
    if msg.source is not None:
        await conn.execute(
            sa.insert(tables.message_sources).values(message_id=message_id, data=msg.source)
        )
    refs = _refs(msg)
    if refs:
        ins = dialect_insert(conn.dialect.name, tables.thread_refs)
        await conn.execute(
            ins.on_conflict_do_nothing(),
            [{"account_id": account.id, "ref": r, "conversation_id": cid} for r in refs],
        )
    await _participants(conn, cid, msg, info)
    if matches:
        ins = dialect_insert(conn.dialect.name, tables.conversation_contacts)
        await conn.execute(
            ins.on_conflict_do_nothing(),
            [
                {"conversation_id": cid, "source": x.source, "external_id": x.external_id,
                 "display_name": x.display_name}
                for x in matches
            ],
        )  # fmt: skip
    await search.index_messages(conn, [(message_id, cid, search.document(msg.subject, msg.text))])

    # Metrics: fold in order, or recompute when this message is older than the newest.
    if msg.sent_at >= conv.last_message_at:
        wait = WaitState(
            first_inbound_at=conv.first_inbound_at,
            first_reply_at=conv.first_reply_at,
            waiting_since=conv.waiting_since,
            agent_waiting_since=conv.agent_waiting_since,
            agent_wait_seconds=conv.agent_wait_seconds,
            customer_wait_seconds=conv.customer_wait_seconds,
        ).fold("in", msg.sent_at)
    else:
        history = (
            await conn.execute(
                sa.select(m.c.direction, m.c.sent_at).where(
                    m.c.conversation_id == cid, m.c.direction != "note"
                )
            )
        ).all()
        wait = WaitState.from_history((row.direction, row.sent_at) for row in history)
    updates.update(wait.columns())
    updates.update(
        message_count=c.c.message_count + 1,
        updated_at=now,
        last_message_at=max(conv.last_message_at, msg.sent_at),
        last_inbound_at=max(filter(None, (conv.last_inbound_at, msg.sent_at))),
        created_at=min(conv.created_at, msg.sent_at),
    )
    if customer_name and customer_name != conv.customer_name and not conv.customer_name:
        updates["customer_name"] = customer_name[:300]
        await search.index_customer_name(conn, cid, customer_name)
    await conn.execute(sa.update(c).where(c.c.id == cid).values(**updates))


async def _participants(
    conn: AsyncConnection, cid: int, msg: InboundMessage, info: AccountInfo
) -> None:
    own = info.own_address.key if info.own_address else None
    rows = [{"conversation_id": cid, "side": "customer", "address_key": msg.sender.key}]
    for address in (*msg.recipients, *msg.cc):
        system = address.key == own or (own is None and address in msg.recipients[:1])
        rows.append(
            {"conversation_id": cid, "side": "system" if system else "customer",
             "address_key": address.key}
        )  # fmt: skip
    ins = dialect_insert(conn.dialect.name, tables.participants)
    await conn.execute(ins.on_conflict_do_nothing(), rows)
