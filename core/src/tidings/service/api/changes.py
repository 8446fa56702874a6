"""Announcing what an API call changed, after the service committed it.

The conversation service does not report what a call changed, so the API compares the
conversation's assignee and state before and after (two indexed single-row reads); a
change the service made beyond the obvious one (sending assigns, a transfer unassigns)
is announced all the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from tidings.events import Change, ChangeKind
from tidings.store import Store, tables

if TYPE_CHECKING:
    from tidings.service.api.deps import Services

T = TypeVar("T")
c = tables.conversations


@dataclass(frozen=True)
class Snapshot:
    project_id: int
    kind: str
    assignee_id: int | None
    state: str


async def snapshot(store: Store, conversation_id: int) -> Snapshot | None:
    async with store.read() as conn:
        row = (
            await conn.execute(
                sa.select(c.c.project_id, c.c.kind, c.c.assignee_id, c.c.state).where(
                    c.c.id == conversation_id
                )
            )
        ).one_or_none()
    if row is None:
        return None
    return Snapshot(int(row.project_id), str(row.kind), row.assignee_id, str(row.state))


def compare(
    conversation_id: int,
    before: Snapshot | None,
    after: Snapshot | None,
    also: ChangeKind | None = None,
    message_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> list[Change]:
    if after is None:
        if before is None:
            return []
        return [
            Change(kind=ChangeKind.DELETED, conversation_id=conversation_id,
                   project_id=before.project_id, channel_kind=before.kind)
        ]  # fmt: skip
    out: list[Change] = []
    if also is not None:
        out.append(
            Change(kind=also, conversation_id=conversation_id, message_id=message_id,
                   data=dict(data or {}))
        )  # fmt: skip
    if before is None or before.assignee_id != after.assignee_id:
        # The previous assignee hears of it too, though they may no longer see it: their
        # "mine" view has to drop it.
        out.append(
            Change(kind=ChangeKind.ASSIGNMENT, conversation_id=conversation_id,
                   data={"assignee_id": after.assignee_id, "state": after.state,
                         "previous_assignee_id": before.assignee_id if before else None})
        )  # fmt: skip
    if before is None or before.state != after.state:
        out.append(
            Change(kind=ChangeKind.STATE, conversation_id=conversation_id,
                   data={"state": after.state})
        )  # fmt: skip
    return out


async def tracked(
    services: Services,
    conversation_id: int,
    operation: Callable[[], Awaitable[T]],
    also: ChangeKind | None = None,
    data: dict[str, Any] | None = None,
) -> T:
    """Run ``operation`` (a service call on ``conversation_id``) and announce its effect."""
    store = services.runtime.store
    before = await snapshot(store, conversation_id)
    result = await operation()
    after = await snapshot(store, conversation_id)
    await services.events.publish(compare(conversation_id, before, after, also, data=data))
    return result
