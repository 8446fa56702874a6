"""Customers' STOP/START, recorded per account, enforced before any provider call."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.models import Consent, InboundMessage
from tidings.store import dialect_insert, tables
from tidings.store.lists import listed, one_of

c = tables.consents


async def record_consent(
    conn: AsyncConnection, account_id: str, messages: Sequence[InboundMessage], now: datetime
) -> None:
    """The latest word of each customer wins (messages are in the order they were sent)."""
    latest: dict[str, Consent] = {}
    for msg in sorted(messages, key=lambda item: item.sent_at):
        if msg.consent is not None:
            latest[msg.sender.key] = msg.consent
    if not latest:
        return
    stmt = dialect_insert(conn.dialect.name, c)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[c.c.account_id, c.c.address_key],
            set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
        ),
        [
            {"account_id": account_id, "address_key": key, "state": consent.value,
             "updated_at": now}
            for key, consent in latest.items()
        ],
    )  # fmt: skip


@functools.cache
def _stopped(dialect: str) -> sa.Select[Any]:
    """Built once per dialect: the outbox asks this for every batch it sends (see
    ``outbox._claiming``), the keys as one list parameter (``lists.one_of``)."""
    return sa.select(c.c.address_key).where(
        c.c.account_id == sa.bindparam("b_account"),
        one_of(dialect, c.c.address_key, "b_keys", sa.String()),
        c.c.state == Consent.OPT_OUT.value,
    )


async def opted_out(
    conn: AsyncConnection, account_id: str, address_keys: Sequence[str]
) -> list[str]:
    """Those of ``address_keys`` who told ``account_id`` to stop."""
    if not address_keys:
        return []
    dialect = conn.dialect.name
    rows = await conn.execute(
        _stopped(dialect), {"b_account": account_id, "b_keys": listed(dialect, address_keys)}
    )
    return list(rows.scalars())
