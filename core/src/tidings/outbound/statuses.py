"""Applying delivery reports: monotonic, idempotent, and early reports kept for later.

A provider may report a status before our send call has even returned the message's id
(Twilio's callback can beat the HTTP response). Such a report is parked in
``pending_statuses`` and applied the moment the send result records the id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.models import DeliveryStatus, StatusUpdate, advances
from tidings.store import tables

m, p = tables.messages, tables.pending_statuses


@dataclass(frozen=True)
class StatusChange:
    """A message whose status moved forward."""

    message_id: int
    conversation_id: int
    account_id: str
    update: StatusUpdate


def _values(update: StatusUpdate, now: datetime) -> dict[str, object]:
    return {
        "status": update.status.value,
        "status_raw": update.raw_status,
        "error_code": update.error_code,
        "error_message": update.error_message,
        "status_at": update.occurred_at or now,
    }


async def apply_status_updates(
    conn: AsyncConnection,
    account_id: str,
    updates: Sequence[StatusUpdate],
    now: datetime,
) -> list[StatusChange]:
    """Apply reports to our outbound messages of ``account_id``; park unknown ids."""
    if not updates:
        return []
    ids = list({u.provider_id for u in updates})
    rows = {
        row.provider_id: row
        for row in (
            await conn.execute(
                sa.select(m.c.id, m.c.conversation_id, m.c.provider_id, m.c.status).where(
                    m.c.account_id == account_id,
                    m.c.direction == "out",
                    m.c.provider_id.in_(ids),
                )
            )
        ).all()
    }
    current = {pid: (DeliveryStatus(r.status) if r.status else None) for pid, r in rows.items()}
    changes: list[StatusChange] = []
    parked = []
    for update in updates:
        row = rows.get(update.provider_id)
        if row is None:
            parked.append(
                {"account_id": account_id, "provider_id": update.provider_id,
                 "received_at": now, **_values(update, now),
                 "occurred_at": update.occurred_at}
            )  # fmt: skip
            continue
        if not advances(current[update.provider_id], update.status):
            continue  # late, repeated or weaker: never move backwards
        current[update.provider_id] = update.status
        await conn.execute(sa.update(m).where(m.c.id == row.id).values(**_values(update, now)))
        changes.append(StatusChange(row.id, row.conversation_id, account_id, update))
    if parked:
        await conn.execute(sa.insert(p), parked)
    return changes


async def apply_parked(
    conn: AsyncConnection, account_id: str, provider_id: str, now: datetime
) -> list[StatusChange]:
    """Apply reports that arrived before ``provider_id`` was known, then forget them."""
    rows = (
        await conn.execute(
            sa.select(p).where(p.c.account_id == account_id, p.c.provider_id == provider_id)
        )
    ).all()
    if not rows:
        return []
    await conn.execute(sa.delete(p).where(p.c.id.in_([r.id for r in rows])))
    updates = [
        StatusUpdate(
            provider_id=r.provider_id,
            status=DeliveryStatus(r.status),
            raw_status=r.status_raw,
            error_code=r.error_code,
            error_message=r.error_message,
            occurred_at=r.occurred_at,
        )
        for r in rows
    ]
    return await apply_status_updates(conn, account_id, updates, now)
