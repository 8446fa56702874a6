"""The outbox worker: claims due messages, sends them through their channel, records what
happened — never twice by accident, never silently dropped.

Every attempt is committed as a claim (``state='sending'``) *before* the provider is
called. A worker that dies mid-attempt leaves the claim behind; ``recover`` then re-queues
it only when the channel's provider deduplicates sends, and otherwise marks the message
"unknown — check" so nobody resends blindly. On PostgreSQL several workers share the
outbox: claims use ``FOR UPDATE SKIP LOCKED``, so each message goes to exactly one worker.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import sqlalchemy as sa
import stamina
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channel import Account
from tidings.clock import Clock, system_clock
from tidings.errors import PermanentSendError, TransientSendError
from tidings.metrics import METRICS
from tidings.models import (
    Address,
    Attachment,
    DeliveryStatus,
    OutboundMessage,
    Priority,
    SendResult,
    StatusUpdate,
    TemplateRef,
    ThreadHeaders,
)
from tidings.outbound.consent import opted_out
from tidings.outbound.statuses import StatusChange, apply_parked, apply_status_updates
from tidings.plugins import Plugins
from tidings.store import Store, tables

log = logging.getLogger("tidings.outbox")
o, m = tables.outbox, tables.messages

UNKNOWN_OUTCOME = (
    "outcome unknown — the worker stopped during the attempt; check with the provider "
    "before sending again"
)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    """Attempts within one claim (stamina backs off between them)."""
    timeout: float = 60.0
    """Seconds one claim may spend retrying."""
    wait_initial: float = 0.5
    wait_max: float = 15.0
    longest_inline_wait: float = 15.0
    """A Retry-After longer than this is not slept through: the message is re-queued."""
    max_claims: int = 8
    """Claims (each with its attempts) before a message fails for good."""
    requeue_after: timedelta = timedelta(seconds=30)
    """First re-queue delay; doubles per claim up to an hour."""
    lease: timedelta = timedelta(minutes=5)
    """A claim older than this belongs to a dead worker."""


@dataclass
class Pacer:
    """Spaces sends of one account ``1/rate`` seconds apart, across concurrent senders."""

    rate: float
    _next: float = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            await anyio.sleep(slot - now)


@dataclass(frozen=True)
class Claim:
    message_id: int
    account_id: str
    claims: int
    attempts: int


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    requeued: int = 0
    unknown: int = 0
    changes: list[StatusChange] = field(default_factory=list)


def _backoff(policy: RetryPolicy) -> Any:
    def hook(exc: Exception) -> bool | float:
        if not isinstance(exc, TransientSendError):
            return False
        if exc.retry_after is None:
            return True
        if exc.retry_after > policy.longest_inline_wait:
            return False  # re-queue instead of holding a sender for that long
        return max(exc.retry_after, 0.0)

    return hook


class Outbox:
    def __init__(
        self,
        store: Store,
        plugins: Plugins,
        accounts: Mapping[str, Account[Any]],
        *,
        clock: Clock = system_clock,
        policy: RetryPolicy | None = None,
        rates: Mapping[str, float] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.plugins = plugins
        self.accounts = accounts
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self._pacers = {acct: Pacer(rate) for acct, rate in (rates or {}).items() if rate > 0}

    # --- claiming ------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Mark up to ``limit`` due messages as being sent by this worker (committed)."""
        now = self.clock()
        due = (
            sa.select(o.c.message_id)
            .where(o.c.state == "pending", o.c.not_before <= now)
            .order_by(o.c.not_before, o.c.message_id)
            .limit(limit)
        )
        if self.store.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        async with self.store.write() as conn:
            rows = await conn.execute(
                sa.update(o)
                .where(o.c.message_id.in_(due.scalar_subquery()))
                .values(
                    state="sending",
                    claimed_by=self.worker_id,
                    claimed_at=now,
                    claims=o.c.claims + 1,
                )
                .returning(o.c.message_id, o.c.account_id, o.c.claims, o.c.attempts)
            )
            claims = [Claim(r.message_id, r.account_id, r.claims, r.attempts) for r in rows]
        return sorted(claims, key=lambda c: c.message_id)

    # --- sending -------------------------------------------------------------------------

    async def run_once(self, *, limit: int = 100, concurrency: int = 50) -> Outcome:
        """Claim what is due now and send it, ``concurrency`` at a time."""
        claims = await self.claim(limit)
        outcome = Outcome()
        if not claims:
            return outcome
        messages = await self._load(claims)
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(claim: Claim) -> None:
            async with limiter:
                await self._send(claim, messages[claim.message_id], outcome)

        async with anyio.create_task_group() as tg:
            for claim in claims:
                tg.start_soon(one, claim)
        await self._notify(outcome.changes)
        return outcome

    async def run(
        self,
        stop: anyio.Event,
        *,
        concurrency: int = 50,
        idle: float = 0.5,
        recover_every: float = 60.0,
    ) -> None:
        """Send until ``stop`` is set; stops between batches, never mid-message."""
        last_recovery = 0.0
        while not stop.is_set():
            if time.monotonic() - last_recovery > recover_every:
                await self.recover()
                last_recovery = time.monotonic()
            outcome = await self.run_once(limit=concurrency * 2, concurrency=concurrency)
            if outcome.sent + outcome.failed + outcome.requeued + outcome.unknown == 0:
                with anyio.move_on_after(idle):
                    await stop.wait()

    async def _load(self, claims: Sequence[Claim]) -> dict[int, OutboundMessage]:
        ids = [c.message_id for c in claims]
        a, b = tables.attachments, tables.blobs
        async with self.store.read() as conn:
            rows = (await conn.execute(sa.select(m).where(m.c.id.in_(ids)))).all()
            files: dict[int, list[Attachment]] = {}
            attached = await conn.execute(
                sa.select(a, b.c.data)
                .select_from(a.outerjoin(b, b.c.sha256 == a.c.sha256))
                .where(a.c.message_id.in_(ids))
                .order_by(a.c.id)
            )
            for f in attached:
                files.setdefault(f.message_id, []).append(
                    Attachment(
                        filename=f.filename, content_type=f.content_type,
                        data=bytes(f.data) if f.data is not None else None,
                        url=None if f.data is not None else f.url,
                        inline=f.inline, content_id=f.content_id,
                    )
                )  # fmt: skip
        return {row.id: _outbound(row, files.get(row.id, ())) for row in rows}

    async def _send(self, claim: Claim, message: OutboundMessage, outcome: Outcome) -> None:
        account = self.accounts.get(claim.account_id)
        if account is None:
            await self._finish_failed(claim, "the channel account is no longer configured",
                                      "no_account", outcome)  # fmt: skip
            return
        async with self.store.read() as conn:
            stopped = await opted_out(conn, account.id, [a.key for a in message.to])
        if stopped:
            await self._finish_failed(
                claim, f"the customer opted out (STOP): {', '.join(stopped)}", "opted_out", outcome
            )
            return
        handle = self.plugins.channel(account.channel)
        pacer = self._pacers.get(account.id)
        attempts = claim.attempts
        try:
            async for attempt in stamina.retry_context(
                on=_backoff(self.policy),
                attempts=self.policy.attempts,
                timeout=self.policy.timeout,
                wait_initial=self.policy.wait_initial,
                wait_max=self.policy.wait_max,
            ):
                with attempt:
                    if pacer is not None:
                        await pacer.wait()
                    attempts += 1
                    result = await handle.send(account, message)
        except PermanentSendError as exc:
            await self._finish_failed(claim, exc.reason, exc.code, outcome, attempts)
        except TransientSendError as exc:
            await self._requeue_or_fail(claim, exc, attempts, outcome)
        except Exception as exc:  # a broken channel: we cannot know whether it sent
            log.exception(
                "channel %s crashed sending message %s", account.channel, claim.message_id
            )
            await self._finish_unknown(claim, f"the channel failed: {exc!r}", outcome)
        else:
            await self._finish_sent(claim, result, attempts, outcome)

    # --- recording outcomes (each in its own transaction) ---------------------------------

    async def _owned(self, conn: AsyncConnection, claim: Claim) -> bool:
        """Still our claim? (recovery may have taken it from a worker presumed dead)."""
        row = await conn.execute(
            sa.select(o.c.claimed_by).where(
                o.c.message_id == claim.message_id, o.c.state == "sending"
            )
        )
        return row.scalar_one_or_none() == self.worker_id

    async def _finish_sent(
        self, claim: Claim, result: SendResult, attempts: int, outcome: Outcome
    ) -> None:
        now = self.clock()
        async with self.store.write() as conn:
            owned = await self._owned(conn, claim)
            await conn.execute(
                sa.update(m)
                .where(m.c.id == claim.message_id)
                .values(provider_id=result.provider_id)
            )
            first = StatusUpdate(
                provider_id=result.provider_id, status=result.status, raw_status=result.raw_status
            )
            changes = await apply_status_updates(conn, claim.account_id, [first], now)
            changes += await apply_parked(conn, claim.account_id, result.provider_id, now)
            await conn.execute(sa.delete(o).where(o.c.message_id == claim.message_id))
            done = {"provider_id": result.provider_id, "attempts": attempts}
            await self._event(conn, claim.message_id, "delivered_to_provider", done, now)
        if not owned:
            log.warning("message %s was sent after its claim was recovered", claim.message_id)
        METRICS.messages_out.labels(self._channel_name(claim)).inc()
        outcome.sent += 1
        outcome.changes.extend(changes)

    async def _finish_failed(
        self,
        claim: Claim,
        reason: str,
        code: str | None,
        outcome: Outcome,
        attempts: int | None = None,
    ) -> None:
        now = self.clock()
        update = StatusUpdate(
            provider_id=f"outbox:{claim.message_id}",
            status=DeliveryStatus.FAILED,
            error_code=code,
            error_message=reason,
        )
        async with self.store.write() as conn:
            await conn.execute(
                sa.update(m).where(m.c.id == claim.message_id)
                .values(status=DeliveryStatus.FAILED.value, error_code=code,
                        error_message=reason, status_at=now)
            )  # fmt: skip
            await conn.execute(sa.delete(o).where(o.c.message_id == claim.message_id))
            failure = {"reason": reason, "code": code, "attempts": attempts}
            cid = await self._event(conn, claim.message_id, "send_failed", failure, now)
        METRICS.send_failures.labels(self._channel_name(claim)).inc()
        outcome.failed += 1
        outcome.changes.append(StatusChange(claim.message_id, cid, claim.account_id, update))

    async def _finish_unknown(self, claim: Claim, reason: str, outcome: Outcome) -> None:
        now = self.clock()
        async with self.store.write() as conn:
            await conn.execute(
                sa.update(m).where(m.c.id == claim.message_id)
                .values(status=DeliveryStatus.UNKNOWN.value, error_code="unknown",
                        error_message=reason, status_at=now)
            )  # fmt: skip
            await conn.execute(sa.delete(o).where(o.c.message_id == claim.message_id))
            await self._event(conn, claim.message_id, "send_unknown", {"reason": reason}, now)
        outcome.unknown += 1

    async def _requeue_or_fail(
        self, claim: Claim, exc: TransientSendError, attempts: int, outcome: Outcome
    ) -> None:
        if claim.claims >= self.policy.max_claims:
            reason = f"gave up after {attempts} attempts: {exc.reason}"
            await self._finish_failed(claim, reason, exc.code, outcome, attempts)
            return
        now = self.clock()
        backoff = self.policy.requeue_after * (2 ** (claim.claims - 1))
        delay = max(timedelta(seconds=exc.retry_after or 0), min(backoff, timedelta(hours=1)))
        async with self.store.write() as conn:
            await conn.execute(
                sa.update(o).where(o.c.message_id == claim.message_id)
                .values(state="pending", not_before=now + delay, attempts=attempts,
                        claimed_by=None, claimed_at=None, last_error=str(exc))
            )  # fmt: skip
        outcome.requeued += 1

    async def _event(
        self, conn: AsyncConnection, message_id: int, kind: str, data: dict[str, Any],
        now: datetime,
    ) -> int:  # fmt: skip
        cid = (
            await conn.execute(sa.select(m.c.conversation_id).where(m.c.id == message_id))
        ).scalar_one()
        await conn.execute(
            sa.insert(tables.events).values(
                conversation_id=cid, at=now, actor_id=None, kind=kind,
                data={"message": message_id, **data},
            )
        )  # fmt: skip
        return int(cid)

    def _channel_name(self, claim: Claim) -> str:
        account = self.accounts.get(claim.account_id)
        return account.channel if account else "unknown"

    # --- crash recovery ------------------------------------------------------------------

    async def recover(self) -> int:
        """Deal with claims left by dead workers; returns how many were found."""
        now = self.clock()
        async with self.store.write() as conn:
            stale = (
                await conn.execute(
                    sa.select(o.c.message_id, o.c.account_id).where(
                        o.c.state == "sending", o.c.claimed_at < now - self.policy.lease
                    )
                )
            ).all()
            for row in stale:
                account = self.accounts.get(row.account_id)
                dedupes = account is not None and (
                    self.plugins.channel(account.channel).channel.capabilities.deduplicates_sends
                )
                if dedupes:
                    await conn.execute(
                        sa.update(o).where(o.c.message_id == row.message_id)
                        .values(state="pending", not_before=now, claimed_by=None,
                                claimed_at=None)
                    )  # fmt: skip
                else:
                    await conn.execute(
                        sa.update(m).where(m.c.id == row.message_id)
                        .values(status=DeliveryStatus.UNKNOWN.value, error_code="unknown",
                                error_message=UNKNOWN_OUTCOME, status_at=now)
                    )  # fmt: skip
                    await conn.execute(sa.delete(o).where(o.c.message_id == row.message_id))
                    await self._event(conn, row.message_id, "send_unknown",
                                      {"reason": UNKNOWN_OUTCOME}, now)  # fmt: skip
        if stale:
            log.warning("recovered %d interrupted sends", len(stale))
        return len(stale)

    # --- delivery reports ----------------------------------------------------------------

    async def apply_statuses(
        self, account_id: str, updates: Sequence[StatusUpdate], conn: AsyncConnection | None = None
    ) -> list[StatusChange]:
        """Apply provider reports; with ``conn``, inside the caller's transaction (the
        caller then calls ``notify`` after committing)."""
        if conn is not None:
            return await apply_status_updates(conn, account_id, updates, self.clock())
        async with self.store.write() as own:
            changes = await apply_status_updates(own, account_id, updates, self.clock())
        await self._notify(changes)
        return changes

    async def _notify(self, changes: Sequence[StatusChange]) -> None:
        await notify_status_changes(self.plugins, self.accounts, changes)


async def notify_status_changes(
    plugins: Plugins, accounts: Mapping[str, Account[Any]], changes: Sequence[StatusChange]
) -> None:
    """Tell listeners (the ``delivery_status_changed`` hook) after the changes committed."""
    for change in changes:
        account = accounts.get(change.account_id)
        if account is None:
            continue
        try:
            await plugins.call_listeners(
                "delivery_status_changed",
                account=account,
                message_id=change.message_id,
                conversation_id=change.conversation_id,
                update=change.update,
            )
        except Exception:
            log.exception("a delivery_status_changed listener failed")


def _outbound(row: Any, attachments: Sequence[Attachment]) -> OutboundMessage:
    meta = row.meta or {}
    recipients = row.recipients or {}

    def addresses(key: str) -> tuple[Address, ...]:
        return tuple(Address.from_key(k) for k in recipients.get(key, ()))

    template = meta.get("template")
    return OutboundMessage(
        id=str(row.id),
        sender=Address.from_key(row.sender_key) if row.sender_key else None,
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        subject=row.subject or None,
        text=row.text,
        html=row.html,
        attachments=tuple(attachments),
        priority=Priority(meta.get("priority", Priority.NORMAL.value)),
        thread=ThreadHeaders(
            message_id=meta.get("message_id"),
            in_reply_to=tuple(meta.get("in_reply_to", ())),
            references=tuple(meta.get("references", ())),
        ),
        template=TemplateRef.model_validate(template) if template else None,
        message_tag=meta.get("message_tag"),
        header_line=meta.get("header_line"),
    )
