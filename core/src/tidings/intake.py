"""Everything a channel delivers enters here: a webhook request or a polled batch.

One path for both: the channel's hooks turn the input into messages and status reports,
then the messages, the reports and (for a polled batch) the cursor commit in ONE
transaction. Only after the commit is the provider answered (webhook 2xx) or the source
acknowledged (IMAP \\Seen) — so nothing is acknowledged that was not stored, and a
redelivery after a crash is deduplicated by provider id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from tidings import events
from tidings.channel import Account
from tidings.conversations import IngestResult
from tidings.models import Endpoint, PolledBatch, WebhookReply, WebhookRequest
from tidings.outbound.outbox import notify_status_changes
from tidings.outbound.statuses import StatusChange
from tidings.runtime import Runtime
from tidings.store.sqlite_connection import deferred_writes

log = logging.getLogger("tidings.intake")

POLL_CURSOR_KEY = "poll"


@dataclass
class Intake:
    """What one request or batch carried, after it was committed."""

    messages: IngestResult = field(default_factory=IngestResult)
    statuses: list[StatusChange] = field(default_factory=list)
    reports: int = 0


async def take_in(
    runtime: Runtime,
    account: Account[Any],
    request: WebhookRequest | PolledBatch,
    *,
    messages: bool,
    statuses: bool,
) -> Intake:
    """Run the channel's hooks on ``request`` and commit what they return, or nothing.

    Raises the channel's ``SignatureError`` / ``MalformedPayload`` before anything is
    written; any failure rolls the whole transaction back.
    """
    handle = runtime.channel_for(account)
    inbound = await handle.receive(account, request) if messages else []
    reports = await handle.delivery_status(account, request) if statuses else []
    contacts = await runtime.conversations.lookup(m.sender for m in inbound) if inbound else {}
    intake = Intake(reports=len(reports))
    async with runtime.store.write() as conn, deferred_writes(conn):
        if inbound:
            intake.messages = await runtime.conversations.ingest_with(
                conn, account.id, inbound, contacts
            )
        if reports:
            intake.statuses = await runtime.outbox.apply_statuses(account.id, reports, conn=conn)
        if isinstance(request, PolledBatch) and request.cursor is not None:
            await runtime.store.set_state(
                account.id, POLL_CURSOR_KEY, dict(request.cursor), conn=conn
            )
    await notify_status_changes(runtime.plugins, runtime.accounts, intake.statuses)
    await events.publish(
        runtime.store, [*events.ingested(intake.messages), *events.delivery(intake.statuses)]
    )
    return intake


async def receive_webhook(
    runtime: Runtime, account: Account[Any], request: WebhookRequest
) -> tuple[Intake, WebhookReply]:
    """A provider's HTTP request to ``/webhooks/{account}/{endpoint}``, committed."""
    channel = runtime.channel_for(account).channel
    kind = channel.webhooks[request.endpoint]
    intake = await take_in(
        runtime,
        account,
        request,
        messages=kind in (Endpoint.MESSAGES, Endpoint.EVENTS),
        statuses=kind in (Endpoint.STATUSES, Endpoint.EVENTS),
    )
    return intake, channel.reply(account, request)


async def sync_account(
    runtime: Runtime,
    account: Account[Any],
    *,
    follow: bool = False,
    on_batch: Callable[[PolledBatch, Intake], None] | None = None,
) -> Intake:
    """Pull a polled account from its saved cursor: commit each batch, then acknowledge it.

    With ``follow=False`` returns when the source has nothing new; with ``follow=True``
    runs until cancelled. Connection errors propagate: call again and it resumes from the
    last committed cursor.
    """
    handle = runtime.channel_for(account)
    has_statuses = "delivery_status" in handle.implemented
    total = Intake()
    cursor = await runtime.store.get_state(account.id, POLL_CURSOR_KEY)
    async with aclosing(handle.poll(account, cursor, follow=follow)) as batches:
        async for batch in batches:
            intake = await take_in(runtime, account, batch, messages=True, statuses=has_statuses)
            try:
                await handle.acknowledge(account, batch)
            except Exception:  # stored already; it comes again and is deduplicated
                log.exception("acknowledging a batch of %s failed", account.id)
            total.messages.stored.extend(intake.messages.stored)
            total.messages.duplicates += intake.messages.duplicates
            total.messages.conversations |= intake.messages.conversations
            total.statuses.extend(intake.statuses)
            total.reports += intake.reports
            if on_batch is not None:
                on_batch(batch, intake)
    return total
