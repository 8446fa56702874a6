"""Live updates: what changed, told to every server's connected agents after the commit.

A change names a conversation and what happened to it (a new message, an assignment, a
state, a delivery status …); it carries no content, so a change an agent may not see
reveals nothing even if it reached them, and each stream re-checks visibility anyway
(``tidings.service.api.live``). Clients re-read what they show.

One ``Broadcaster`` per store. ``publish`` hands the change to this process's subscribers
at once and, on PostgreSQL, also sends it as ``NOTIFY tidings_events`` so that every
other server — each running ``listen`` — hands it to its own. A notification carries the
publishing broadcaster's ``origin`` so it is not delivered twice where it came from.
With SQLite there is one server, and in-process delivery is all there is.

Publishing never fails the caller: it runs after the change committed, so the change
happened whatever becomes of its announcement (a missed one costs a client a stale view
until its next read, never data).
"""

from __future__ import annotations

import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import anyio
import sqlalchemy as sa
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidings.store import Store

if TYPE_CHECKING:  # both import the store and services; events must import neither
    from tidings.conversations.ingest import IngestResult
    from tidings.outbound.statuses import StatusChange

log = logging.getLogger("tidings.events")

CHANNEL = "tidings_events"
SUBSCRIBER_BUFFER = 256
RECONNECT_MAX = 30.0


class ChangeKind(StrEnum):
    MESSAGE = "message"
    """A message was added (inbound, outbound or an internal comment)."""
    ASSIGNMENT = "assignment"
    """The assignee changed (``data.assignee_id``, ``None`` when unassigned)."""
    STATE = "state"
    """The conversation's state changed (``data.state``)."""
    DELIVERY_STATUS = "delivery_status"
    """An outbound message's delivery status moved (``data.status``)."""
    UPDATED = "updated"
    """Anything else shown in lists: star, tags, note, priority, pin …"""
    DELETED = "deleted"


class Change(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ChangeKind
    conversation_id: int
    message_id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    project_id: int | None = None
    """With ``channel_kind``, for changes about a conversation that no longer exists
    (deleted), whose visibility can only be judged from its project and channel kind."""
    channel_kind: str | None = None


class _Envelope(BaseModel):
    origin: str
    changes: list[Change]


class Broadcaster:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.origin = uuid.uuid4().hex
        self._subscribers: set[MemoryObjectSendStream[Change]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[Change]]:
        """Changes from now on, until the block exits. A subscriber that falls
        ``SUBSCRIBER_BUFFER`` changes behind is cut off (its stream ends) rather than
        slowing everybody down: the client reconnects and re-reads."""
        send, receive = anyio.create_memory_object_stream[Change](SUBSCRIBER_BUFFER)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def deliver(self, changes: Iterable[Change]) -> None:
        """Hand changes to this process's subscribers (never blocks)."""
        for change in changes:
            for send in list(self._subscribers):
                try:
                    send.send_nowait(change)
                except anyio.WouldBlock:
                    log.warning("an event subscriber fell behind; closing its stream")
                    self._subscribers.discard(send)
                    send.close()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._subscribers.discard(send)

    async def publish(self, changes: Iterable[Change]) -> None:
        batch = list(changes)
        if not batch:
            return
        self.deliver(batch)
        if self.store.dialect != "postgresql":
            return
        try:
            async with self.store.write() as conn:
                for payload in _payloads(self.origin, batch):
                    await conn.execute(
                        sa.text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": CHANNEL, "payload": payload},
                    )
        except Exception:
            log.exception("could not announce %d changes to other servers", len(batch))

    def _received(self, payload: str) -> None:
        try:
            envelope = _Envelope.model_validate_json(payload)
        except ValidationError:
            log.warning("ignored a malformed %s notification", CHANNEL)
            return
        if envelope.origin != self.origin:
            self.deliver(envelope.changes)

    async def listen(
        self, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver other servers' changes until ``stop``; reconnects after failures.

        PostgreSQL only (``task_status`` is started at once elsewhere). Uses a dedicated
        psycopg connection: LISTEN needs a session that stays open and idle, which a
        pooled SQLAlchemy connection is not.
        """
        if self.store.dialect != "postgresql":
            task_status.started()
            return
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        backoff, started = 1.0, False
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not started:
                        started = True
                        task_status.started()
                    backoff = 1.0
                    async with anyio.create_task_group() as tg:

                        async def stopper() -> None:
                            await stop.wait()
                            tg.cancel_scope.cancel()

                        tg.start_soon(stopper)
                        async for note in conn.notifies():
                            self._received(note.payload)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception:
                log.exception("listening for %s failed; retrying in %.0f s", CHANNEL, backoff)
                if not started:
                    started = True
                    task_status.started()
                with anyio.move_on_after(backoff):
                    await stop.wait()
                backoff = min(backoff * 2, RECONNECT_MAX)


def _payloads(origin: str, changes: list[Change]) -> Iterable[str]:
    """JSON notifications under PostgreSQL's 8000-byte payload limit."""
    chunk: list[Change] = []
    for change in changes:
        trial = _Envelope(origin=origin, changes=[*chunk, change]).model_dump_json()
        if len(trial.encode()) > 7000 and chunk:
            yield _Envelope(origin=origin, changes=chunk).model_dump_json()
            chunk = []
        chunk.append(change)
    if chunk:
        yield _Envelope(origin=origin, changes=chunk).model_dump_json()


_BROADCASTERS: weakref.WeakKeyDictionary[Store, Broadcaster] = weakref.WeakKeyDictionary()


def broadcaster(store: Store) -> Broadcaster:
    """The one broadcaster of ``store`` in this process."""
    found = _BROADCASTERS.get(store)
    if found is None:
        found = _BROADCASTERS[store] = Broadcaster(store)
    return found


async def publish(store: Store, changes: Iterable[Change]) -> None:
    """Announce committed changes; never raises (see the module's docstring)."""
    try:
        await broadcaster(store).publish(changes)
    except Exception:
        log.exception("publishing changes failed")


def ingested(result: IngestResult) -> list[Change]:
    """The changes an ingestion made: a new message in each conversation it touched."""
    return [
        Change(
            kind=ChangeKind.MESSAGE,
            conversation_id=cid,
            data={"created": cid in result.created, "reopened": cid in result.reopened},
        )
        for cid in sorted(result.conversations)
    ]


def delivery(changes: Iterable[StatusChange]) -> list[Change]:
    return [
        Change(
            kind=ChangeKind.DELIVERY_STATUS,
            conversation_id=ch.conversation_id,
            message_id=ch.message_id,
            data={"status": ch.update.status.value},
        )
        for ch in changes
    ]


def dumps(change: Change) -> str:
    """The change as the SSE ``data:`` line carries it."""
    return json.dumps(change.model_dump(mode="json", exclude={"project_id", "channel_kind"}))
