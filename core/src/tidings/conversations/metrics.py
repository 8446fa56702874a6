"""Per-conversation timing metrics, folded from the message history.

The stored columns describe the history up to the last message; the read model adds the
time elapsed since then (``now``). Messages usually arrive in order, so a new message is
folded onto the stored state; one that arrives older than the newest stored message (a
delayed email, a slow provider) makes the caller recompute from the whole history — the
same fold, so the two paths cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store import tables


@dataclass(frozen=True)
class WaitState:
    first_inbound_at: datetime | None = None
    first_reply_at: datetime | None = None
    waiting_since: datetime | None = None
    """First customer message not yet answered (the customer waits for an agent)."""
    agent_waiting_since: datetime | None = None
    """First agent message not yet answered (the agent waits for the customer)."""
    agent_wait_seconds: float = 0.0
    """Sum of finished waits for an agent."""
    customer_wait_seconds: float = 0.0
    """Sum of finished waits for the customer."""

    def fold(self, direction: str, at: datetime) -> WaitState:
        if direction == "in":
            state = self
            if state.first_inbound_at is None:
                state = replace(state, first_inbound_at=at)
            if state.agent_waiting_since is not None:
                state = replace(
                    state,
                    customer_wait_seconds=state.customer_wait_seconds
                    + _seconds(at - state.agent_waiting_since),
                    agent_waiting_since=None,
                )
            if state.waiting_since is None:
                state = replace(state, waiting_since=at)
            return state
        if direction == "out":
            state = self
            if state.waiting_since is not None:
                state = replace(
                    state,
                    agent_wait_seconds=state.agent_wait_seconds
                    + _seconds(at - state.waiting_since),
                    waiting_since=None,
                )
            if state.first_reply_at is None and state.first_inbound_at is not None:
                state = replace(state, first_reply_at=at)
            if state.agent_waiting_since is None:
                state = replace(state, agent_waiting_since=at)
            return state
        return self  # internal notes are not part of the exchange

    @classmethod
    def from_history(cls, history: Iterable[tuple[str, datetime]]) -> WaitState:
        state = cls()
        for direction, at in sorted(history, key=lambda item: item[1]):
            state = state.fold(direction, at)
        return state

    def columns(self) -> dict[str, object]:
        return {
            "first_inbound_at": self.first_inbound_at,
            "first_reply_at": self.first_reply_at,
            "waiting_since": self.waiting_since,
            "agent_waiting_since": self.agent_waiting_since,
            "agent_wait_seconds": self.agent_wait_seconds,
            "customer_wait_seconds": self.customer_wait_seconds,
        }


def _seconds(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0)


async def refresh_counters(conn: AsyncConnection, conversation_id: int) -> None:
    """Recompute a conversation's counts, times and waits from its messages (after a
    message was removed, e.g. a cancelled delayed send)."""
    c, m = tables.conversations, tables.messages
    rows = (
        await conn.execute(
            sa.select(m.c.direction, m.c.sent_at).where(
                m.c.conversation_id == conversation_id, m.c.direction != "note"
            )
        )
    ).all()
    wait = WaitState.from_history((r.direction, r.sent_at) for r in rows)
    inbound = [r.sent_at for r in rows if r.direction == "in"]
    outbound = [r.sent_at for r in rows if r.direction == "out"]
    values: dict[str, object] = {
        **wait.columns(),
        "message_count": len(rows),
        "last_inbound_at": max(inbound, default=None),
        "last_outbound_at": max(outbound, default=None),
    }
    if rows:
        values["last_message_at"] = max(r.sent_at for r in rows)
    await conn.execute(sa.update(c).where(c.c.id == conversation_id).values(**values))
