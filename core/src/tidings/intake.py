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
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tidings import events
from tidings.channel import Account
from tidings.conversations import IngestResult
from tidings.models import Endpoint, PolledBatch, WebhookReply, WebhookRequest
from tidings.outbound.outbox import notify_status_changes
from tidings.outbound.statuses import StatusChange
from tidings.plugins import ChannelHandle
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


class _Acknowledger:
    """Acknowledges committed batches in order, in a task of its own, while the next
    batch is taken in.

    An acknowledgement is a round trip to the source (IMAP: a STORE after the fetches
    ahead on the same connection, ~3-6 ms a batch in the mail sync benchmark) which held
    up the next batch's ingestion, though nothing in it depends on the acknowledgement.
    Only batches already committed are handed over, so nothing is acknowledged that was
    not stored. At most one batch waits while another is acknowledged: a slow source holds
    up the sync instead of piling up batches. Leaving the block waits for the
    acknowledgements handed over; if the sync fails or is cancelled, those not yet done
    are dropped, and their batches come again (they are stored: deduplicated, then
    acknowledged) on the next sync, as after a crash between commit and acknowledgement.
    """

    def __init__(self, handle: ChannelHandle, account: Account[Any]) -> None:
        self._handle = handle
        self._account = account
        self._group: TaskGroup = anyio.create_task_group()
        send, receive = anyio.create_memory_object_stream[PolledBatch](1)
        self._send: MemoryObjectSendStream[PolledBatch] = send
        self._receive: MemoryObjectReceiveStream[PolledBatch] = receive

    async def __aenter__(self) -> _Acknowledger:
        await self._group.__aenter__()
        self._group.start_soon(self._run)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._send.close()  # the acknowledger ends once it has done those handed over
        if exc is not None:
            # The sync failed: the acknowledgements waiting are dropped, and the error is
            # raised as it was (not in a task group's ExceptionGroup: callers catch
            # connection errors to poll again).
            self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        return None

    async def committed(self, batch: PolledBatch) -> None:
        await self._send.send(batch)

    async def _run(self) -> None:
        async with self._receive:
            async for batch in self._receive:
                try:
                    await self._handle.acknowledge(self._account, batch)
                except Exception:  # stored already; it comes again and is deduplicated
                    log.exception("acknowledging a batch of %s failed", self._account.id)


async def sync_account(
    runtime: Runtime,
    account: Account[Any],
    *,
    follow: bool = False,
    on_batch: Callable[[PolledBatch, Intake], None] | None = None,
) -> Intake:
    """Pull a polled account from its saved cursor: commit each batch, then acknowledge it
    (while the next batch is taken in: see :class:`_Acknowledger`).

    With ``follow=False`` returns when the source has nothing new and every stored batch
    is acknowledged; with ``follow=True`` runs until cancelled. Connection errors
    propagate: call again and it resumes from the last committed cursor.
    """
    handle = runtime.channel_for(account)
    has_statuses = "delivery_status" in handle.implemented
    total = Intake()
    cursor = await runtime.store.get_state(account.id, POLL_CURSOR_KEY)
    # The acknowledger is left first: its acknowledgements still use the poll's connection.
    async with (
        aclosing(handle.poll(account, cursor, follow=follow)) as batches,
        _Acknowledger(handle, account) as acknowledger,
    ):
        async for batch in batches:
            intake = await take_in(runtime, account, batch, messages=True, statuses=has_statuses)
            await acknowledger.committed(batch)
            total.messages.stored.extend(intake.messages.stored)
            total.messages.duplicates += intake.messages.duplicates
            total.messages.conversations |= intake.messages.conversations
            total.statuses.extend(intake.statuses)
            total.reports += intake.reports
            if on_batch is not None:
                on_batch(batch, intake)
    return total
