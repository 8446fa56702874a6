"""The ``email_imap`` channel: IMAP polling in, SMTP out, bounces as delivery reports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass, field
from typing import Any

from tidings import (
    Account,
    Address,
    AttachmentLimits,
    Capabilities,
    Channel,
    DeliveryStatus,
    InboundMessage,
    MalformedPayload,
    OutboundMessage,
    PolledBatch,
    PolledItem,
    SendResult,
    StatusUpdate,
    Threading,
    WebhookRequest,
    hookimpl,
)
from tidings_email_imap.imap import ImapError, Mailbox, Selected, open_mailbox
from tidings_email_imap.outgoing import build_message, envelope_recipients, smtp_send
from tidings_email_imap.parse import (
    is_dsn_source,
    parse_dsn,
    parse_message,
    unreadable_message,
)
from tidings_email_imap.settings import EmailSettings

log = logging.getLogger("tidings_email_imap")

ATTACHMENT_LIMITS = AttachmentLimits(max_count=20, max_bytes=20 * 1024 * 1024)


def open_account_mailbox(settings: EmailSettings) -> AbstractAsyncContextManager[Mailbox]:
    return open_mailbox(
        host=settings.imap_host,
        port=settings.imap_port_value,
        security=settings.imap_security,
        username=settings.imap_login,
        password=settings.imap_password.get_secret_value(),
        call_timeout=settings.timeout,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
    )


def _batch(request: WebhookRequest | PolledBatch) -> PolledBatch:
    if not isinstance(request, PolledBatch):
        raise MalformedPayload("the email_imap channel is polled: it has no webhooks")
    return request


@dataclass
class _PollSession:
    """The connection a running ``poll`` holds, lent to ``acknowledge`` while it is idle.

    A fresh connection per acknowledged batch (connect, log in, select, log out) cost more
    than the flagging itself; between batches the poll's connection does nothing.
    """

    mailbox: Mailbox
    folder: str
    selected: Selected
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class EmailImapChannel(Channel):
    """One IMAP folder read in UID order; replies and new mail sent over SMTP."""

    name = "email_imap"
    kind = "email"
    settings_model = EmailSettings
    capabilities = Capabilities(
        polled=True,
        threading=Threading.MESSAGE_HEADERS,
        subject=True,
        cc_bcc=True,
        html=True,
        attachments=ATTACHMENT_LIMITS,
        delivery_status=True,
    )

    def __init__(self) -> None:
        super().__init__()
        self._sessions: dict[str, _PollSession] = {}

    def own_address(self, account: Account[EmailSettings]) -> Address:
        """The mailbox address: the system side of conversations and the domain of the
        Message-IDs the core gives replies (without it they end in ``tidings.invalid``)."""
        settings = account.settings
        return Address.email(settings.address, name=settings.display_name)

    @hookimpl
    async def poll(
        self, account: Account[EmailSettings], cursor: Mapping[str, Any] | None, follow: bool
    ) -> AsyncIterator[PolledBatch]:
        """Yield new messages in UID order, ``fetch_chunk`` at a time (memory stays flat).

        The cursor is ``{"uidvalidity", "last_uid"}``. A changed UIDVALIDITY means the UIDs
        we remember mean nothing any more: start from the beginning (the core deduplicates
        by Message-ID, so nothing is stored twice).
        """
        settings = account.settings
        last_uid = int((cursor or {}).get("last_uid", 0) or 0)
        known_validity = (cursor or {}).get("uidvalidity")
        async with open_account_mailbox(settings) as mailbox:
            selected = await mailbox.select(settings.folder)
            if known_validity is not None and int(known_validity) != selected.uidvalidity:
                log.warning(
                    "account %s: UIDVALIDITY of %s changed (%s → %s): resynchronising",
                    account.id, settings.folder, known_validity, selected.uidvalidity,
                )  # fmt: skip
                last_uid = 0
            use_idle = settings.idle and "IDLE" in mailbox.capabilities
            session = _PollSession(mailbox, settings.folder, selected)
            self._sessions[account.id] = session
            try:
                batches = self._batches(session, settings, last_uid, follow, use_idle)
                async with aclosing(batches):  # closed here, in the consumer's task
                    async for batch in batches:
                        yield batch
            finally:
                if self._sessions.get(account.id) is session:
                    del self._sessions[account.id]

    async def _batches(
        self,
        session: _PollSession,
        settings: EmailSettings,
        last_uid: int,
        follow: bool,
        use_idle: bool,
    ) -> AsyncGenerator[PolledBatch, None]:
        """The body of ``poll``: every IMAP command under the session lock, none held while
        a batch is out with the core (so ``acknowledge`` may borrow the connection)."""
        mailbox, selected = session.mailbox, session.selected
        stale: list[int] = []
        if last_uid:
            # Stored (the cursor is past them) but never flagged: the process died between
            # the commit and acknowledge, or acknowledge failed. They come again, the core
            # finds them stored already, and acknowledges them this time.
            async with session.lock:
                stale = await mailbox.search_uids(0, unseen=True, upto=last_uid)
        while True:
            redelivering = bool(stale)
            if redelivering:
                uids, stale = stale, []
            else:
                async with session.lock:
                    uids = await mailbox.search_uids(last_uid, unseen=settings.only_unread)
            for start in range(0, len(uids), settings.fetch_chunk):
                chunk = uids[start : start + settings.fetch_chunk]
                async with session.lock:
                    fetched = await mailbox.fetch(chunk)
                last_uid = max(last_uid, chunk[-1])
                yield PolledBatch(
                    items=tuple(
                        PolledItem(
                            id=str(m.uid),
                            data=m.data,
                            meta={
                                "uid": m.uid,
                                "uidvalidity": selected.uidvalidity,
                                "folder": settings.folder,
                                "flags": list(m.flags),
                                "internaldate": m.internaldate,
                                "size": m.size,
                            },
                        )
                        for m in fetched
                    ),
                    cursor={"uidvalidity": selected.uidvalidity, "last_uid": last_uid},
                    source=settings.folder,
                )
            if redelivering:
                continue  # now what is new
            if not follow:
                return
            if uids:
                continue  # more may have arrived while we were fetching
            if use_idle:
                # Re-issued at least every poll_interval: a notification lost in a race
                # (new mail during a SEARCH) is then picked up soon, and never later
                # than idle_timeout (< 29 min, RFC 2177).
                async with session.lock:
                    await mailbox.idle(min(settings.idle_timeout, settings.poll_interval))
            else:
                await asyncio.sleep(settings.poll_interval)

    @hookimpl
    def receive(
        self, account: Account[EmailSettings], request: WebhookRequest | PolledBatch
    ) -> list[InboundMessage]:
        batch = _batch(request)
        out: list[InboundMessage] = []
        for item in batch.items:
            if is_dsn_source(item.data):
                continue  # a bounce: delivery_status reports it
            try:
                out.append(parse_message(item.data, account_id=account.id, meta=item.meta))
            except Exception as exc:
                # A message the stdlib cannot read at all must neither block the mailbox nor
                # vanish: it is stored with its source for an agent to open.
                log.exception("account %s: cannot parse message %s", account.id, item.id)
                out.append(
                    unreadable_message(item.data, account_id=account.id, meta=item.meta, error=exc)
                )
        return out

    @hookimpl
    def delivery_status(
        self, account: Account[EmailSettings], request: WebhookRequest | PolledBatch
    ) -> list[StatusUpdate]:
        batch = _batch(request)
        updates: list[StatusUpdate] = []
        for item in batch.items:
            if not is_dsn_source(item.data):
                continue
            try:
                updates.extend(parse_dsn(item.data))
            except Exception as exc:
                log.exception("account %s: cannot read bounce %s: %s", account.id, item.id, exc)
        return updates

    @hookimpl
    async def acknowledge(self, account: Account[EmailSettings], batch: PolledBatch) -> None:
        uids = [int(item.id) for item in batch.items if item.id.isdigit()]
        if not uids:
            return
        validity = (batch.cursor or {}).get("uidvalidity")
        settings = account.settings
        folder = batch.source or settings.folder
        session = self._sessions.get(account.id)
        if (
            session is not None
            and session.folder == folder
            and not session.lock.locked()
            and not session.mailbox.closed
        ):
            async with session.lock:
                if validity is not None and int(validity) != session.selected.uidvalidity:
                    log.warning("account %s: UIDVALIDITY changed, not flagging", account.id)
                    return
                await session.mailbox.add_seen(uids)
            return
        async with open_account_mailbox(settings) as mailbox:
            selected = await mailbox.select(batch.source or settings.folder)
            if validity is not None and int(validity) != selected.uidvalidity:
                # These UIDs name other messages now: flagging them would mark the wrong mail.
                log.warning("account %s: UIDVALIDITY changed, not flagging", account.id)
                return
            await mailbox.add_seen(uids)

    @hookimpl
    async def send(self, account: Account[EmailSettings], message: OutboundMessage) -> SendResult:
        settings = account.settings
        mime, message_id = build_message(account, message, limits=ATTACHMENT_LIMITS)
        data = mime.as_bytes()
        refused = await smtp_send(settings, settings.address, envelope_recipients(message), data)
        raw: dict[str, Any] = {}
        if refused:
            # Some recipients took it: a retry would send it to them twice, so it counts as
            # sent and the refusals are reported beside it.
            raw["refused"] = refused
        if settings.save_sent:
            try:
                raw["sent_copy"] = await self._save_sent(settings, data)
            except (ImapError, OSError) as exc:
                # The mail is gone already; failing now would make the outbox send it again.
                log.warning("account %s: could not save to Sent: %s", account.id, exc)
                raw["sent_copy_error"] = str(exc)[:300]
        return SendResult(
            provider_id=message_id,
            status=DeliveryStatus.SENT,
            raw_status="partially refused" if refused else "accepted",
            raw=raw or None,
        )

    async def _save_sent(self, settings: EmailSettings, data: bytes) -> dict[str, Any]:
        async with open_account_mailbox(settings) as mailbox:
            folders = await mailbox.folders()
            by_use = [name for name, attrs in folders if "\\sent" in attrs]
            folder = by_use[0] if by_use else settings.sent_folder
            if not by_use and folder not in {name for name, _ in folders}:
                await mailbox.create(folder)
            uid = await mailbox.append(data, folder, r"(\Seen)")
            return {"folder": folder, "uid": uid}
