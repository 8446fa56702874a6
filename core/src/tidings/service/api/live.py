"""``GET /api/events``: a server-sent-events stream of the changes the agent may see.

Each change is checked against the agent's visibility when it arrives, with the same
condition the views use (``tidings.conversations.queries.visible``): a change about a
conversation of another project, or of another agent's, never reaches them. Every
``KEEPALIVE`` seconds the stream sends a comment (so proxies keep it open) and checks the
token again, ending the stream once it is revoked or expired.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tidings.auth import Unauthenticated
from tidings.conversations import Actor, queries
from tidings.errors import NotFound
from tidings.events import Change, ChangeKind, dumps
from tidings.service.api.deps import Me, Services, Svc
from tidings.store import tables

router = APIRouter(tags=["live"])
KEEPALIVE = 15.0
c = tables.conversations


async def may_see(services: Services, actor: Actor, change: Change) -> bool:
    if change.kind is ChangeKind.DELETED:
        return (
            change.project_id is not None
            and change.channel_kind is not None
            and actor.may_work_on(change.project_id, change.channel_kind)
        )
    if change.kind is ChangeKind.ASSIGNMENT and change.data.get("previous_assignee_id") == actor.id:
        return True
    async with services.runtime.store.read() as conn:
        found = await conn.execute(
            sa.select(c.c.id).where(c.c.id == change.conversation_id, queries.visible(actor))
        )
        return found.first() is not None


def _frame(change: Change) -> str:
    return f"event: {change.kind.value}\ndata: {dumps(change)}\n\n"


async def _stream(services: Services, actor: Actor, token: str) -> AsyncIterator[str]:
    async with services.events.subscribe() as changes:
        yield "retry: 3000\n: connected\n\n"
        while True:
            change = None
            with anyio.move_on_after(KEEPALIVE):
                try:
                    change = await changes.receive()
                except anyio.EndOfStream:  # cut off for falling behind: the client reconnects
                    return
            if change is None:
                try:
                    actor, _ = await services.auth.authenticate(token)
                except (Unauthenticated, NotFound):
                    return
                yield ": keepalive\n\n"
            elif await may_see(services, actor, change):
                yield _frame(change)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(request: Request, svc: Svc, me: Me) -> StreamingResponse:
    """Live changes (``message``, ``assignment``, ``state``, ``delivery_status``, ``updated``,
    ``deleted``), each ``data`` a JSON object naming the conversation; re-read it to show
    the change."""
    token = request.headers["authorization"].partition(" ")[2].strip()
    return StreamingResponse(
        _stream(svc, me, token),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
