"""The ``email_imap`` channel: IMAP polling in, SMTP out, bounces as delivery reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
from tidings_email_imap.parse import is_dsn_source, parse_dsn, read_items
from tidings_email_imap.settings import EmailSettings

log = logging.getLogger("tidings_email_imap")

Parsed = Future[list[InboundMessage]]

ATTACHMENT_LIMITS = AttachmentLimits(max_count=20, max_bytes=20 * 1024 * 1024)

FETCH_AHEAD = 2
"""Batches a backlog's poll fetches (and has parsed) beyond the one out with the core.

With one, the next batch's parse could only start once its fetch was done, and the core
often waited for it: with two, the worker has a batch queued while the core stores one.
Memory grows by one batch of mail, not with the backlog.
"""


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


async def _settle(task: asyncio.Task[Any]) -> None:
    """Let a fetch under way end (it is bounded by the IMAP timeout) before the connection
    logs out; if we are cancelled meanwhile, it is cancelled with us. Its batch is no
    longer wanted, so its outcome does not matter."""
    try:
        await task
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("a fetch ahead ended with %s after the poll stopped", exc)


def _batch(request: WebhookRequest | PolledBatch) -> PolledBatch:
    if not isinstance(request, PolledBatch):
        raise MalformedPayload("the email_imap channel is polled: it has no webhooks")
    return request


class ParseWorkerError(RuntimeError):
    """The parse worker process went away; the batch is parsed in this process."""


class _ParseWorker:
    """One worker process that parses the batches of a backlog while the core ingests.

    A sync spends about half its CPU parsing MIME and the other half threading and
    storing, all on one core. With the worker, batch N+1 is parsed on another core while
    batch N is committed. It is started only for a backlog (more than one batch waiting)
    and stopped when the backlog is done, so an idle account costs no process. It is a
    fresh interpreter (``python -m tidings_email_imap.parse_worker``) speaking pickle over
    its pipes, never a ``fork`` of this process (which runs the database driver's threads)
    nor ``multiprocessing``'s spawn (which re-imports the parent's ``__main__``). One
    thread writes each request and reads its answer, so requests are answered in order
    and the event loop never blocks on the pipes. Where no process can be started, or the
    worker dies, parsing happens in this process as before.
    """

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "tidings_email_imap.parse_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="email-parse-io")

    def submit(self, account_id: str, items: Sequence[PolledItem]) -> Parsed | None:
        """The parse of ``items`` under way, or None when the worker has stopped."""
        process = self._process
        if process is None:
            return None
        return self._io.submit(self._round_trip, process, account_id, items)

    @staticmethod
    def _round_trip(
        process: subprocess.Popen[bytes], account_id: str, items: Sequence[PolledItem]
    ) -> list[InboundMessage]:
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            pickle.dump((account_id, tuple(items)), process.stdin, pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
            parsed: list[InboundMessage] = pickle.load(process.stdout)  # noqa: S301 (our child)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
            raise ParseWorkerError(f"the parse worker stopped: {exc!r}") from exc
        # The worker leaves the sources out (half of what crosses the pipe); each message
        # gets back the very bytes object its item holds, so a batch keeps one copy.
        sources = {item.meta.get("uid"): item.data for item in items}
        return [m.model_copy(update={"source": sources[m.meta.get("uid")]}) for m in parsed]

    def stop(self, *, wait: bool = False) -> None:
        """End the worker. ``wait``: let it finish the requests sent so far and exit;
        otherwise it is killed (the poll was closed early; nobody wants those batches)."""
        process, self._process = self._process, None
        if process is None:
            return
        if wait:
            self._io.shutdown(wait=True)
        else:
            process.kill()
            self._io.shutdown(wait=False, cancel_futures=True)
        assert process.stdin is not None
        assert process.stdout is not None
        with contextlib.suppress(OSError):
            process.stdin.close()  # end of requests: the worker exits
        process.wait()
        process.stdout.close()


@dataclass
class _PollSession:
    """The connection a running ``poll`` holds, lent to ``acknowledge`` between fetches,
    and the parses of its recent batches running in the worker.

    A fresh connection per acknowledged batch (connect, log in, select, log out) cost more
    than the flagging itself. While a batch is out with the core, the connection fetches
    at most ``FETCH_AHEAD`` batches after it, so ``acknowledge`` waits for the fetch under
    way; only an IDLE (which lasts up to ``poll_interval``) sends it to a connection of
    its own.
    """

    mailbox: Mailbox
    folder: str
    selected: Selected
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    idling: bool = False
    worker: _ParseWorker | None = None
    # id(batch) → (batch, its parse in the worker); the most recent batches only.
    parsed: dict[int, tuple[PolledBatch, Parsed]] = field(default_factory=dict)

    def start_worker(self) -> None:
        if self.worker is None:
            try:
                self.worker = _ParseWorker()
            except OSError as exc:  # no process may be started here (a sandbox, a limit)
                log.warning("no parse worker (%s): parsing in this process", exc)

    async def stop_worker(self) -> None:
        """Stop the worker once its backlog is done; the process is reaped off the loop."""
        worker, self.worker = self.worker, None
        self.parsed.clear()
        if worker is not None:
            await asyncio.to_thread(worker.stop, wait=True)

    def parse_ahead(self, account_id: str, batch: PolledBatch) -> None:
        if self.worker is None:
            return
        future = self.worker.submit(account_id, batch.items)
        if future is not None:
            self.parsed[id(batch)] = (batch, future)
            # Batches nobody received (a caller that only polls) are dropped.
            while len(self.parsed) > FETCH_AHEAD + 1:
                _, stale = self.parsed.pop(next(iter(self.parsed)))
                stale.cancel()


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
                batches = self._batches(account.id, session, settings, last_uid, follow, use_idle)
                async with aclosing(batches):  # closed here, in the consumer's task
                    async for batch in batches:
                        yield batch
            finally:
                if self._sessions.get(account.id) is session:
                    del self._sessions[account.id]
                if session.worker is not None:  # closed early: do not wait for the worker
                    session.worker.stop()

    async def _batches(
        self,
        account_id: str,
        session: _PollSession,
        settings: EmailSettings,
        last_uid: int,
        follow: bool,
        use_idle: bool,
    ) -> AsyncGenerator[PolledBatch, None]:
        """The body of ``poll``: every IMAP command under the session lock, none held while
        a batch is out with the core (so ``acknowledge`` may borrow the connection)."""
        mailbox = session.mailbox
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
            chunks = [
                uids[start : start + settings.fetch_chunk]
                for start in range(0, len(uids), settings.fetch_chunk)
            ]
            if len(chunks) > 1 and settings.parse_worker:
                session.start_worker()
            # Batches fetched (and parsed, in the worker) while the core stores the one
            # before them: at most FETCH_AHEAD beyond it, so memory stays flat. Each
            # batch's cursor is computed here, in order.
            ahead: deque[asyncio.Task[PolledBatch]] = deque()
            try:
                for index, chunk in enumerate(chunks):
                    for following in chunks[index + len(ahead) : index + 1 + FETCH_AHEAD]:
                        ahead.append(
                            asyncio.ensure_future(
                                self._fetch(account_id, session, settings, following,
                                            max(last_uid, following[-1]))
                            )
                        )  # fmt: skip
                    last_uid = max(last_uid, chunk[-1])
                    batch = await ahead[0]
                    ahead.popleft()
                    yield batch
            finally:
                try:
                    while ahead:
                        await _settle(ahead[0])
                        ahead.popleft()
                finally:
                    for task in ahead:  # we were cancelled: so are the fetches not yet done
                        task.cancel()
            await session.stop_worker()
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
                    session.idling = True
                    try:
                        await mailbox.idle(min(settings.idle_timeout, settings.poll_interval))
                    finally:
                        session.idling = False
            else:
                await asyncio.sleep(settings.poll_interval)

    async def _fetch(
        self,
        account_id: str,
        session: _PollSession,
        settings: EmailSettings,
        chunk: list[int],
        last_uid: int,
    ) -> PolledBatch:
        """One chunk as a batch whose cursor is ``last_uid``; its parse starts at once."""
        async with session.lock:
            fetched = await session.mailbox.fetch(chunk)
        validity = session.selected.uidvalidity
        batch = PolledBatch(
            items=tuple(
                PolledItem(
                    id=str(m.uid),
                    data=m.data,
                    meta={
                        "uid": m.uid,
                        "uidvalidity": validity,
                        "folder": settings.folder,
                        "flags": list(m.flags),
                        "internaldate": m.internaldate,
                        "size": m.size,
                    },
                )
                for m in fetched
            ),
            cursor={"uidvalidity": validity, "last_uid": last_uid},
            source=settings.folder,
        )
        session.parse_ahead(account_id, batch)
        return batch

    @hookimpl
    async def receive(
        self, account: Account[EmailSettings], request: WebhookRequest | PolledBatch
    ) -> list[InboundMessage]:
        """The batch's messages: parsed by the poll's worker when it took the batch, here
        otherwise (the same ``read_items``)."""
        batch = _batch(request)
        messages: list[InboundMessage] | None = None
        session = self._sessions.get(account.id)
        pending = session.parsed.pop(id(batch), None) if session is not None else None
        if pending is not None and pending[0] is batch:
            future = pending[1]
            try:
                messages = await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not future.cancelled() or task is None or task.cancelling():
                    raise  # we are cancelled, not merely the worker's parse
            except ParseWorkerError as exc:
                log.warning("account %s: %s; parsing in this process", account.id, exc)
                if session is not None and session.worker is not None:
                    session.worker.stop()
                    session.worker = None
        if messages is None:
            messages = read_items(account.id, batch.items)
        for message in messages:
            if "parse_error" in message.meta:
                log.error(
                    "account %s: cannot parse message %s: %s",
                    account.id, message.meta.get("uid"), message.meta["parse_error"],
                )  # fmt: skip
        return messages

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
            and not session.idling
            and not session.mailbox.closed
        ):
            async with session.lock:  # after the fetches ahead that asked first
                if not session.mailbox.closed:
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
