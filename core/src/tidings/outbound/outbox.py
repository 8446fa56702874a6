"""The outbox worker: claims due messages, sends them through their channel, records what
happened — never twice by accident, never silently dropped.

Every attempt is committed as a claim (``state='sending'``) *before* the provider is
called. A worker that dies mid-attempt leaves the claim behind; ``recover`` then re-queues
it only when the channel's provider deduplicates sends, and otherwise marks the message
"unknown — check" so nobody resends blindly. On PostgreSQL several workers share the
outbox: claims use ``FOR UPDATE SKIP LOCKED``, so each message goes to exactly one worker.

The worker is a pipeline, so that the database never sits between two provider calls:
a feeder claims due messages and loads them with their attachments and their customers'
opt-outs (one transaction per batch, committed before any of them is sent), ``concurrency``
senders call the channel, and a recorder writes finished attempts in group commits —
whatever has finished while the previous commit ran goes into the next one, and while
sends are still under way it waits a moment (``RECORD_LINGER``) for more — so a busy
worker writes a few transactions per few hundred messages and an idle one still records
each send at once.
A crash between a send and its commit leaves only claims behind, which ``recover``
handles as above.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import anyio
import sqlalchemy as sa
import stamina
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import events
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
    advances,
)
from tidings.outbound.consent import opted_out
from tidings.outbound.statuses import StatusChange, apply_parked, apply_status_updates
from tidings.plugins import Plugins
from tidings.store import Store, tables
from tidings.store.lists import listed, one_of
from tidings.store.sqlite_connection import deferred_writes, execute_many

log = logging.getLogger("tidings.outbox")
o, m, p = tables.outbox, tables.messages, tables.pending_statuses

UNKNOWN_OUTCOME = (
    "outcome unknown — the worker stopped during the attempt; check with the provider "
    "before sending again"
)


class _Sending(NamedTuple):
    """The columns ``_outbound`` reads: loading whole rows would convert columns nobody uses
    (times, the provider's raw payload) for every message.

    The worker's rows are read into named tuples (here and ``_Recorded``): SQLAlchemy's
    ``Row`` finds an attribute by name in about 1 µs, and a message's row is read about a
    dozen times on its way out; a named tuple's attribute is an index, under 0.1 µs."""

    id: int
    sender_key: str | None
    recipients: dict[str, list[str]] | None
    subject: str | None
    text: str
    html: str | None
    meta: dict[str, Any] | None
    has_attachments: bool


_SENDING = tuple(m.c[name] for name in _Sending._fields)


@functools.cache
def _claiming(dialect: str) -> sa.Update:
    """The claim: up to ``b_limit`` messages due at ``b_now`` marked as ``b_worker``'s.

    Every statement of the worker is built once, with bound parameters for whatever varies:
    SQLAlchemy then finds its compiled form by a cache key computed once, where a statement
    built per batch is walked again each time (a tenth of the worker's database CPU)."""
    due = (
        sa.select(o.c.message_id)
        .where(o.c.state == "pending", o.c.not_before <= sa.bindparam("b_now"))
        .order_by(o.c.not_before, o.c.message_id)
        .limit(sa.bindparam("b_limit"))
    )
    if dialect == "postgresql":
        due = due.with_for_update(skip_locked=True)
    return (
        sa.update(o)
        .where(o.c.message_id.in_(due.scalar_subquery()))
        .values(state="sending", claimed_by=sa.bindparam("b_worker"),
                claimed_at=sa.bindparam("b_now"), claims=o.c.claims + 1)
        .returning(o.c.message_id, o.c.account_id, o.c.claims, o.c.attempts)
    )  # fmt: skip


def _ids(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """``column`` is one of the message ids of the parameter ``b_ids`` (``lists.listed``)."""
    return one_of(dialect, column, "b_ids", sa.BigInteger())


@functools.cache
def _loading(dialect: str) -> sa.Select[Any]:
    return sa.select(*_SENDING).where(_ids(dialect, m.c.id))


@functools.cache
def _attached(dialect: str) -> sa.Select[Any]:
    return (
        sa.select(tables.attachments, tables.blobs.c.data)
        .select_from(
            tables.attachments.outerjoin(
                tables.blobs, tables.blobs.c.sha256 == tables.attachments.c.sha256
            )
        )
        .where(_ids(dialect, tables.attachments.c.message_id))
        .order_by(tables.attachments.c.id)
    )


class _Recorded(NamedTuple):
    """What recording a finished attempt reads of its message (``_recording``)."""

    id: int
    conversation_id: int
    status: str | None
    claimed_by: str | None
    parked: bool


@functools.cache
def _recording(dialect: str) -> sa.Select[Any]:
    """Read into ``_Recorded``, whose fields are these columns in this order."""
    return (
        sa.select(
            m.c.id, m.c.conversation_id, m.c.status, o.c.claimed_by,
            # Whether any delivery report is parked at all (almost never): only then is it
            # worth a statement to look for this batch's provider ids among them.
            sa.exists(sa.select(p.c.id)).label("parked"),
        )
        .select_from(m.outerjoin(o, sa.and_(o.c.message_id == m.c.id, o.c.state == "sending")))
        .where(_ids(dialect, m.c.id))
    )  # fmt: skip


_BY_ID = m.c.id == sa.bindparam("b_id")
_KEPT = sa.update(m).where(_BY_ID).values(provider_id=sa.bindparam("b_provider_id"))
_MOVED = (
    sa.update(m).where(_BY_ID)
    .values(provider_id=sa.bindparam("b_provider_id"), status=sa.bindparam("b_status"),
            status_raw=sa.bindparam("b_raw"), error_code=None, error_message=None,
            status_at=sa.bindparam("b_now"))
)  # fmt: skip
_FAILED = (
    sa.update(m).where(_BY_ID)
    .values(status=DeliveryStatus.FAILED.value, error_code=sa.bindparam("b_code"),
            error_message=sa.bindparam("b_reason"), status_at=sa.bindparam("b_now"))
)  # fmt: skip
_UNKNOWN = (
    sa.update(m).where(_BY_ID)
    .values(status=DeliveryStatus.UNKNOWN.value, error_code="unknown",
            error_message=sa.bindparam("b_reason"), status_at=sa.bindparam("b_now"))
)  # fmt: skip
_REQUEUED = (
    sa.update(o).where(o.c.message_id == sa.bindparam("b_id"))
    .values(state="pending", not_before=sa.bindparam("b_when"),
            attempts=sa.bindparam("b_attempts"), claimed_by=None, claimed_at=None,
            last_error=sa.bindparam("b_error"))
)  # fmt: skip
_FINISHED = sa.delete(o).where(o.c.message_id == sa.bindparam("b_id"))
"""Run once per finished message (``executemany``): inside ``deferred_writes`` it waits,
with the recording's other writes, for the commit."""


@functools.cache
def _logging(dialect: str) -> sa.Insert:
    """A recording's conversation-log entries in one statement: ``b_entries`` is a JSON
    array of ``[conversation_id, kind, data]``, ``b_at`` their time.

    As an ``executemany`` every entry's time and data went through SQLAlchemy's bind
    processors one by one, with a parameter dictionary each; here the entries are one
    ``json.dumps``: ~67,000 fewer instructions per SMS sent (callgrind, ``bench/README.md``,
    session 7). On SQLite it waits for the commit."""
    e = tables.events
    entries = sa.bindparam("b_entries", type_=sa.String)
    conversation: sa.ColumnElement[Any]
    kind: sa.ColumnElement[Any]
    data: sa.ColumnElement[Any]
    if dialect == "sqlite":
        each = sa.func.json_each(entries).table_valued("key", "value")
        conversation, kind, data = (sa.func.json_extract(each.c.value, f"$[{i}]") for i in range(3))
        order = each.c.key
    else:
        each = (
            sa.func.json_array_elements(sa.cast(entries, postgresql.JSON))
            .table_valued("value", with_ordinality="n")
            .render_derived(name="entry")
        )
        conversation = sa.cast(each.c.value.op("->>")(0), sa.BigInteger)
        kind, data = each.c.value.op("->>")(1), each.c.value.op("->")(2)
        order = each.c.n
    rows = sa.select(conversation, sa.bindparam("b_at", type_=e.c.at.type), sa.null(), kind, data)
    return sa.insert(e).from_select(
        ["conversation_id", "at", "actor_id", "kind", "data"], rows.order_by(order)
    )


@functools.cache
def _parked(dialect: str) -> sa.Select[Any]:
    return (
        sa.select(p.c.account_id, p.c.provider_id)
        .distinct()
        .where(one_of(dialect, p.c.provider_id, "b_provider_ids", sa.String()))
    )


RECORD_BATCH = 500
"""Most finished attempts one recording transaction takes."""

RECORD_LINGER = 0.05
"""Seconds the recorder waits for more attempts to finish before it commits, when others
are still under way (a busy worker). A recording transaction has a fixed cost of a few
milliseconds: without the wait a busy SMS worker committed every 45-100 messages, with it
about every 150, 0.02-0.1 ms less CPU per message (``bench/README.md``). A send finished
and not yet recorded is, after a crash, what one still in flight is: its claim stays, and
``recover`` makes it "unknown — check". The wait adds at most this long's sends to those."""

FEED_BACKOFF_MAX = 30.0
"""Longest pause of the worker loop after the database failed it."""

YOUNG_GC_THRESHOLD = 10_000
"""Allocations between two young garbage collections while a worker loop runs (Python's
default is 700); see ``_young_collections_spaced``."""


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


class Claim(NamedTuple):
    """One claimed message. The worker makes a ``Claim``, a ``_Job`` and a ``_Done`` per
    message: as named tuples they cost about a third of what frozen dataclasses do (whose
    ``__init__`` sets every field through ``object.__setattr__``), a few µs per message."""

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


class _Job(NamedTuple):
    """A claimed message, loaded, on its way to a sender."""

    claim: Claim
    message: OutboundMessage
    stopped: tuple[str, ...]
    """Recipients who had opted out when the message was loaded."""


class _Done(NamedTuple):
    """A finished attempt waiting for the recorder."""

    claim: Claim
    kind: Literal["sent", "failed", "unknown", "requeue"]
    attempts: int | None = None
    result: SendResult | None = None
    reason: str = ""
    code: str | None = None
    error: TransientSendError | None = None


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
        async with self.store.write() as conn:
            return await self._claim(conn, limit)

    async def _claim(self, conn: AsyncConnection, limit: int) -> list[Claim]:
        rows = await conn.execute(
            _claiming(self.store.dialect),
            {"b_now": self.clock(), "b_limit": limit, "b_worker": self.worker_id},
        )
        claims = [Claim._make(row) for row in rows]  # the columns ``_claiming`` returns
        return sorted(claims, key=lambda c: c.message_id)

    async def _claim_and_load(self, limit: int) -> tuple[int, list[_Job]]:
        """How many messages were claimed, and those still there loaded, in one transaction
        committed before any provider call: one connection and one commit per batch.

        On SQLite, inside ``deferred_writes`` the claim takes the write lock with its
        ``BEGIN IMMEDIATE``; holding it, the claim, the loads, the opt-out check and the
        commit run on the event loop's thread, with no trip to the driver thread unless
        another connection held the lock (``sqlite_connection``)."""
        async with self.store.write() as conn, deferred_writes(conn):
            claims = await self._claim(conn, limit)
            return len(claims), await self._load(conn, claims) if claims else []

    # --- the pipeline --------------------------------------------------------------------

    async def run_once(self, *, limit: int = 100, concurrency: int = 50) -> Outcome:
        """Claim what is due now and send it, ``concurrency`` at a time."""
        outcome = Outcome()
        _, jobs = await self._claim_and_load(limit)
        if not jobs:
            return outcome

        async def feed(queue: _JobQueue) -> None:
            queue.extend(jobs)

        await self._pipeline(feed, max(1, min(concurrency, len(jobs))), outcome)
        return outcome

    async def run(
        self,
        stop: anyio.Event,
        *,
        concurrency: int = 50,
        idle: float = 0.5,
        recover_every: float = 60.0,
    ) -> None:
        """Send until ``stop`` is set; then finishes what it claimed, never mid-message.

        Claims ``2 * concurrency`` messages at a time while the senders are busy with the
        previous ones, so the senders never wait for the database; when nothing is due it
        looks again after ``idle`` seconds.
        """

        async def feed(queue: _JobQueue) -> None:
            last_recovery = 0.0
            backoff = idle
            while not stop.is_set():
                try:
                    if time.monotonic() - last_recovery > recover_every:
                        await self.recover()
                        last_recovery = time.monotonic()
                    claimed, jobs = await self._claim_and_load(2 * concurrency)
                except Exception:
                    # The database failed us: nothing was sent for these claims, which
                    # stay for ``recover``; try again later rather than die.
                    log.exception("claiming from the outbox failed; retrying in %.1f s", backoff)
                    with anyio.move_on_after(backoff):
                        await stop.wait()
                    backoff = min(backoff * 2, FEED_BACKOFF_MAX)
                    continue
                backoff = idle
                queue.extend(jobs)
                await queue.low()
                if not claimed:
                    with anyio.move_on_after(idle):
                        await stop.wait()

        with _young_collections_spaced():
            await self._pipeline(feed, concurrency, Outcome())

    async def _pipeline(
        self,
        feed: Callable[[_JobQueue], Awaitable[None]],
        concurrency: int,
        outcome: Outcome,
    ) -> None:
        """Feeder → ``concurrency`` senders → recorder; returns when all of it is recorded."""
        queue = _JobQueue(low_water=concurrency)
        done_in, done_out = anyio.create_memory_object_stream[_Done](RECORD_BATCH)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._recorder, done_out, outcome, queue)
            async with done_in, anyio.create_task_group() as senders:
                for _ in range(concurrency):
                    senders.start_soon(self._sender, queue, done_in.clone())
                try:
                    await feed(queue)
                finally:
                    queue.close()

    async def _load(self, conn: AsyncConnection, claims: Sequence[Claim]) -> list[_Job]:
        """The claimed messages with their attachments and their recipients' opt-outs."""
        dialect = self.store.dialect
        ids = listed(dialect, [c.message_id for c in claims])
        rows = list(map(_Sending._make, await conn.execute(_loading(dialect), {"b_ids": ids})))
        files: dict[int, list[Attachment]] = {}
        attached = [row.id for row in rows if row.has_attachments]
        files_of = {"b_ids": listed(dialect, attached)}
        for f in await conn.execute(_attached(dialect), files_of) if attached else ():
            files.setdefault(f.message_id, []).append(
                Attachment(
                    filename=f.filename, content_type=f.content_type,
                    data=bytes(f.data) if f.data is not None else None,
                    url=None if f.data is not None else f.url,
                    inline=f.inline, content_id=f.content_id,
                )
            )  # fmt: skip
        messages = {row.id: _outbound(row, files.get(row.id, ())) for row in rows}
        # The recipients' keys as the store holds them (the addresses were built from them).
        to_keys = {row.id: tuple((row.recipients or {}).get("to", ())) for row in rows}
        recipients: dict[str, set[str]] = {}
        for claim in claims:
            if claim.message_id in messages:
                recipients.setdefault(claim.account_id, set()).update(to_keys[claim.message_id])
        stopped = {
            account_id: set(await opted_out(conn, account_id, sorted(keys)))
            for account_id, keys in recipients.items()
        }
        jobs = []
        for claim in claims:
            message = messages.get(claim.message_id)
            if message is None:  # deleted with its conversation; the outbox entry went too
                continue
            gone = stopped.get(claim.account_id, set())
            keys = to_keys[claim.message_id]
            jobs.append(_Job(claim, message, tuple(k for k in keys if k in gone)))
        return jobs

    async def _sender(self, jobs: _JobQueue, done: MemoryObjectSendStream[_Done]) -> None:
        async with done:
            while (job := await jobs.take()) is not None:
                finished = await self._attempt(job)
                jobs.finished()
                await _put(done, finished)

    async def _attempt(self, job: _Job) -> _Done:
        """One claim's attempts at the provider (never raises: the outcome is data)."""
        claim = job.claim
        account = self.accounts.get(claim.account_id)
        if account is None:
            return _Done(claim, "failed", reason="the channel account is no longer configured",
                         code="no_account")  # fmt: skip
        if job.stopped:
            stopped = ", ".join(job.stopped)
            reason = f"the customer opted out (STOP): {stopped}"
            return _Done(claim, "failed", reason=reason, code="opted_out")
        handle = self.plugins.channel(account.channel)
        pacer = self._pacers.get(account.id)
        attempts = claim.attempts
        replay: TransientSendError | None = None
        try:
            # Most sends succeed at once: the first attempt skips stamina's machinery (tens
            # of microseconds a message); a transient failure is replayed into it below, so
            # backoff, Retry-After and the limits apply exactly as if it had run there.
            if pacer is not None:
                await pacer.wait()
            attempts += 1
            try:
                result = await handle.send(account, job.message)
            except TransientSendError as exc:
                replay = exc
            if replay is not None:
                async for attempt in stamina.retry_context(
                    on=_backoff(self.policy),
                    attempts=self.policy.attempts,
                    timeout=self.policy.timeout,
                    wait_initial=self.policy.wait_initial,
                    wait_max=self.policy.wait_max,
                ):
                    with attempt:
                        if replay is not None:
                            first, replay = replay, None
                            raise first
                        if pacer is not None:
                            await pacer.wait()
                        attempts += 1
                        result = await handle.send(account, job.message)
        except PermanentSendError as exc:
            return _Done(claim, "failed", attempts, reason=exc.reason, code=exc.code)
        except TransientSendError as exc:
            if claim.claims >= self.policy.max_claims:
                return _Done(claim, "failed", attempts, code=exc.code,
                             reason=f"gave up after {attempts} attempts: {exc.reason}")  # fmt: skip
            return _Done(claim, "requeue", attempts, error=exc)
        except Exception as exc:  # a broken channel: we cannot know whether it sent
            log.exception(
                "channel %s crashed sending message %s", account.channel, claim.message_id
            )
            return _Done(claim, "unknown", reason=f"the channel failed: {exc!r}")
        return _Done(claim, "sent", attempts, result=result)

    # --- recording outcomes (group commits) ----------------------------------------------

    async def _recorder(
        self, done: MemoryObjectReceiveStream[_Done], outcome: Outcome, jobs: _JobQueue
    ) -> None:
        """Record finished attempts in group commits: each takes everything that finished
        meanwhile and, while other attempts are under way, first waits ``RECORD_LINGER``
        for more of them (an idle worker records a lone send at once)."""
        async with done:
            closed = False
            while not closed:
                try:
                    batch = [await done.receive()]
                except anyio.EndOfStream:
                    return
                closed = _take_finished(done, batch)
                if not closed and len(batch) < RECORD_BATCH and jobs.busy:
                    await anyio.sleep(RECORD_LINGER)
                    closed = _take_finished(done, batch)
                changes = await self._record_safely(batch, outcome)
                await self._notify(changes)

    async def _record_safely(self, batch: Sequence[_Done], outcome: Outcome) -> list[StatusChange]:
        """Record a batch; if its transaction fails, each attempt alone, so one bad row
        (say, a provider id seen twice) costs only its own record. An attempt that cannot
        be recorded keeps its claim, which ``recover`` deals with like a crash."""
        try:
            return await self._record(batch, outcome)
        except Exception:
            if len(batch) == 1:
                log.exception("recording the outcome of message %s failed; its claim stays",
                              batch[0].claim.message_id)  # fmt: skip
                return []
        changes: list[StatusChange] = []
        for item in batch:
            changes += await self._record_safely([item], outcome)
        return changes

    async def _record(self, batch: Sequence[_Done], outcome: Outcome) -> list[StatusChange]:
        now = self.clock()
        sent = [d for d in batch if d.kind == "sent"]
        failed = [d for d in batch if d.kind == "failed"]
        unknown = [d for d in batch if d.kind == "unknown"]
        requeue = [d for d in batch if d.kind == "requeue"]
        finished = [d.claim.message_id for d in batch if d.kind != "requeue"]
        changes: list[StatusChange] = []
        # On SQLite the read takes the write lock with its BEGIN IMMEDIATE (on the event
        # loop's thread when it is free, as nearly always); the writes, which answer
        # nothing, wait for the commit and run with it. A deferred write that fails raises
        # from the commit, and ``_record_safely`` takes it from there.
        async with self.store.write() as conn, deferred_writes(conn):
            rows = await self._rows(conn, finished)
            entries = [
                [rows[d.claim.message_id].conversation_id, kind,
                 {"message": d.claim.message_id, **data}]
                for d in batch
                if d.kind != "requeue" and d.claim.message_id in rows
                for kind, data in [_event(d)]
            ]  # fmt: skip
            if entries:
                await execute_many(
                    conn,
                    _logging(self.store.dialect),
                    [{"b_entries": json.dumps(entries), "b_at": now}],
                )
            if sent:
                changes += await self._record_sent(conn, sent, rows, now)
            if failed:
                changes += await self._record_failed(conn, failed, rows, now)
            if unknown:
                await execute_many(
                    conn,
                    _UNKNOWN,
                    [{"b_id": d.claim.message_id, "b_reason": d.reason, "b_now": now}
                     for d in unknown],
                )  # fmt: skip
            if requeue:
                await execute_many(
                    conn,
                    _REQUEUED,
                    [{"b_id": d.claim.message_id, "b_when": now + self._requeue_delay(d),
                      "b_attempts": d.attempts, "b_error": str(d.error)} for d in requeue],
                )  # fmt: skip
            if finished:
                await execute_many(conn, _FINISHED, [{"b_id": i} for i in finished])
        for d in sent:
            row = rows.get(d.claim.message_id)
            if row is not None and row.claimed_by != self.worker_id:
                log.warning("message %s was sent after its claim was recovered",
                            d.claim.message_id)  # fmt: skip
        for name, count in Counter(self._channel_name(d.claim) for d in sent).items():
            METRICS.messages_out.labels(name).inc(count)
        for name, count in Counter(self._channel_name(d.claim) for d in failed).items():
            METRICS.send_failures.labels(name).inc(count)
        outcome.sent += len(sent)
        outcome.failed += len(failed)
        outcome.unknown += len(unknown)
        outcome.requeued += len(requeue)
        outcome.changes.extend(changes)
        return changes

    async def _rows(self, conn: AsyncConnection, ids: Sequence[int]) -> dict[int, _Recorded]:
        """Each finished message's conversation, status and current claimant, read in the
        recording transaction (a message deleted meanwhile is simply absent)."""
        if not ids:
            return {}
        dialect = self.store.dialect
        rows = await conn.execute(_recording(dialect), {"b_ids": listed(dialect, ids)})
        return {row.id: row for row in map(_Recorded._make, rows)}

    async def _record_sent(
        self,
        conn: AsyncConnection,
        sent: Sequence[_Done],
        rows: Mapping[int, _Recorded],
        now: datetime,
    ) -> list[StatusChange]:
        """The provider's ids, and the first status each send returned where it moves the
        message forward (it usually repeats the ``queued`` of composing)."""
        changes: list[StatusChange] = []
        moved, kept = [], []
        for d in sent:
            row = rows.get(d.claim.message_id)
            if row is None or d.result is None:
                continue
            result = d.result
            current = DeliveryStatus(row.status) if row.status else None
            values = {"b_id": d.claim.message_id, "b_provider_id": result.provider_id}
            if not advances(current, result.status):
                kept.append(values)
                continue
            first = StatusUpdate(
                provider_id=result.provider_id, status=result.status, raw_status=result.raw_status
            )
            moved.append({**values, "b_status": result.status.value, "b_raw": result.raw_status,
                          "b_now": now})  # fmt: skip
            changes.append(StatusChange(d.claim.message_id, row.conversation_id,
                                        d.claim.account_id, first))  # fmt: skip
        if kept:
            await execute_many(conn, _KEPT, kept)
        if moved:
            await execute_many(conn, _MOVED, moved)
        # Reports that beat the send's answer were parked under the provider's id.
        if not any(row.parked for row in rows.values()):
            return changes
        ids = {(d.claim.account_id, d.result.provider_id) for d in sent if d.result is not None}
        dialect = self.store.dialect
        wanted = listed(dialect, sorted({pid for _, pid in ids}))
        early = await conn.execute(_parked(dialect), {"b_provider_ids": wanted})
        for account_id, provider_id in early.all():
            if (account_id, provider_id) in ids:
                changes += await apply_parked(conn, account_id, provider_id, now)
        return changes

    async def _record_failed(
        self,
        conn: AsyncConnection,
        failed: Sequence[_Done],
        rows: Mapping[int, _Recorded],
        now: datetime,
    ) -> list[StatusChange]:
        await execute_many(
            conn,
            _FAILED,
            [{"b_id": d.claim.message_id, "b_code": d.code, "b_reason": d.reason, "b_now": now}
             for d in failed],
        )  # fmt: skip
        return [
            StatusChange(
                d.claim.message_id,
                rows[d.claim.message_id].conversation_id,
                d.claim.account_id,
                StatusUpdate(
                    provider_id=f"outbox:{d.claim.message_id}",
                    status=DeliveryStatus.FAILED,
                    error_code=d.code,
                    error_message=d.reason,
                ),
            )
            for d in failed
            if d.claim.message_id in rows
        ]

    def _requeue_delay(self, done: _Done) -> timedelta:
        backoff = self.policy.requeue_after * float(2 ** (done.claim.claims - 1))
        retry_after = done.error.retry_after if done.error is not None else None
        return max(timedelta(seconds=retry_after or 0), min(backoff, timedelta(hours=1)))

    def _channel_name(self, claim: Claim) -> str:
        account = self.accounts.get(claim.account_id)
        return account.channel if account else "unknown"

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
        await events.publish(self.store, events.delivery(changes))


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


@dataclass
class _GcSpacing:
    """How many worker loops run in this process, and the thresholds the first one found."""

    loops: int = 0
    before: tuple[int, ...] = ()


_GC_SPACING = _GcSpacing()


@contextlib.contextmanager
def _young_collections_spaced() -> Iterator[None]:
    """Young garbage collections at most every ``YOUNG_GC_THRESHOLD`` allocations while a
    worker loop runs in this process; the thresholds come back when the last loop ends.

    A claimed batch allocates some 20 tracked objects per message (rows, claims, jobs,
    messages and their addresses) that live until the message is sent. At Python's default
    of 700 each batch set off several young collections that found nothing to free but
    walked everything young and alive (the senders' coroutines, the batch): about 0.6 ms
    each, 130-170 of them per 5,000 SMS, 0.02-0.04 ms of CPU per message. At 10,000 the
    collector ran about once per 5,000 (``bench/README.md``). The price: cyclic garbage
    waits longer to be freed, at most that many objects.
    """
    spacing = _GC_SPACING
    if not spacing.loops:
        spacing.before = gc.get_threshold()
        gen0, *older = spacing.before
        if gen0:  # 0: the collector is switched off, and stays so
            gc.set_threshold(max(gen0, YOUNG_GC_THRESHOLD), *older)
    spacing.loops += 1
    try:
        yield
    finally:
        spacing.loops -= 1
        if not spacing.loops:
            gc.set_threshold(*spacing.before)


def _take_finished(done: MemoryObjectReceiveStream[_Done], batch: list[_Done]) -> bool:
    """Add the attempts finished so far to ``batch`` (up to ``RECORD_BATCH``) without
    waiting; whether the senders are all gone (nothing more will come)."""
    while len(batch) < RECORD_BATCH:
        try:
            batch.append(done.receive_nowait())
        except anyio.WouldBlock:
            return False
        except anyio.EndOfStream:
            return True
    return False


async def _put(stream: MemoryObjectSendStream[Any], item: Any) -> None:
    """``stream.send(item)`` without its scheduling round when there is room.

    anyio's ``send`` and ``receive`` first yield to the event loop (a checkpoint) even when
    they need not wait; with two hand-offs per message that was a few percent of the
    worker's CPU. The senders and the feeder wait on the provider and the database anyway,
    so they still give way to each other.
    """
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


class _JobQueue:
    """Claimed messages waiting for a sender: the feeder hands over a whole batch at once.

    A memory object stream hands items over one at a time: with its buffer full the feeder
    waits, and is woken, once per message; with it empty each idle sender waits on an event
    of its own. Here the feeder adds a claimed batch in one step and wakes every idle
    sender with one event, and a sender takes a message without any scheduling round when
    one is waiting. The feeder claims again only once the queue is down to ``low_water``:
    as with the stream (a buffer of ``concurrency`` plus the batch in the feeder's hands),
    at most ``low_water`` plus one batch are claimed and not yet started — what a crash
    would leave "unknown — check".
    """

    def __init__(self, low_water: int) -> None:
        self._jobs: deque[_Job] = deque()
        self._low_water = low_water
        self._started = 0
        """Jobs taken by a sender and not yet finished."""
        self._closed = False
        self._ready = anyio.Event()
        """Set when jobs arrive or the queue closes; replaced once the queue runs empty."""
        self._room = anyio.Event()
        """Set when the queue is down to ``low_water`` (the feeder may claim again)."""

    def extend(self, jobs: Sequence[_Job]) -> None:
        if not jobs:
            return
        self._jobs.extend(jobs)
        if len(self._jobs) > self._low_water:
            self._room = anyio.Event()
        self._ready.set()

    def close(self) -> None:
        """No more jobs: senders finish what is queued, then ``take`` returns ``None``."""
        self._closed = True
        self._ready.set()

    async def low(self) -> None:
        """Wait until the queue is down to ``low_water``."""
        if len(self._jobs) > self._low_water:
            await self._room.wait()

    async def take(self) -> _Job | None:
        """The next job, or ``None`` once the queue is closed and empty."""
        while not self._jobs:
            if self._closed:
                return None
            if self._ready.is_set():
                self._ready = anyio.Event()
            await self._ready.wait()
        job = self._jobs.popleft()
        self._started += 1
        if len(self._jobs) <= self._low_water:
            self._room.set()
        return job

    def finished(self) -> None:
        """A sender is done with the job it took."""
        self._started -= 1

    @property
    def busy(self) -> bool:
        """Whether attempts are under way or waiting for a sender."""
        return self._started > 0 or bool(self._jobs)


@functools.lru_cache(maxsize=4096)
def _address(key: str) -> Address:
    """The address behind a key the store holds, not normalised again (see
    ``Address.from_key``). Cached: an account's own address and its regular customers come
    up again and again."""
    return Address.from_key(key, normalised=True)


_NO_THREAD = ThreadHeaders()
"""The thread headers of a message that has none (most SMS), shared: the model is frozen."""


def _outbound(row: _Sending, attachments: Sequence[Attachment]) -> OutboundMessage:
    """The message a channel sends, from the columns ``_SENDING`` loads.

    Only what the row sets is handed to the model; everything else keeps the model's
    default. A field given is a field validated, and an SMS sets four of fourteen: building
    the message went from about 18 to 13 µs, and the worker builds one per send.
    """
    meta = row.meta or {}
    recipients = row.recipients or {}
    given: dict[str, Any] = {}
    for copies in ("cc", "bcc"):
        if recipients.get(copies):
            given[copies] = tuple(_address(k) for k in recipients[copies])
    if row.subject:
        given["subject"] = row.subject
    if row.html is not None:
        given["html"] = row.html
    if attachments:
        given["attachments"] = tuple(attachments)
    if "priority" in meta:
        given["priority"] = Priority(meta["priority"])
    if any(key in meta for key in ("message_id", "in_reply_to", "references")):
        given["thread"] = ThreadHeaders(
            message_id=meta.get("message_id"),
            in_reply_to=tuple(meta.get("in_reply_to", ())),
            references=tuple(meta.get("references", ())),
        )
    if meta.get("template"):
        given["template"] = TemplateRef.model_validate(meta["template"])
    for word in ("message_tag", "header_line"):
        if meta.get(word) is not None:
            given[word] = meta[word]
    return OutboundMessage(
        id=str(row.id),
        sender=_address(row.sender_key) if row.sender_key else None,
        to=tuple(_address(k) for k in recipients.get("to", ())),
        text=row.text,
        thread=given.pop("thread", _NO_THREAD),
        **given,
    )


def _event(done: _Done) -> tuple[str, dict[str, Any]]:
    """The conversation-log entry for a finished attempt."""
    if done.kind == "sent" and done.result is not None:
        return "delivered_to_provider", {"provider_id": done.result.provider_id,
                                         "attempts": done.attempts}  # fmt: skip
    if done.kind == "failed":
        return "send_failed", {"reason": done.reason, "code": done.code,
                               "attempts": done.attempts}  # fmt: skip
    return "send_unknown", {"reason": done.reason}
