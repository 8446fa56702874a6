"""Conversations and messages: views, reads, assignment, states, features, sending."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tidings.conversations import (
    Actor,
    ConversationDetail,
    ConversationSummary,
    Decision,
    Draft,
    Filters,
    MessageView,
    Page,
    State,
    View,
    queries,
)
from tidings.conversations.models import DateField, DateRange, Event, Side, SlaSignal
from tidings.errors import Cancelled, NotFound
from tidings.events import ChangeKind
from tidings.models import Attachment, ContactMatch, ContactType, Priority, TemplateRef
from tidings.service.api.changes import compare, snapshot, tracked
from tidings.service.api.deps import Me, Services, Svc
from tidings.store import tables

router = APIRouter(tags=["conversations"])
c, m = tables.conversations, tables.messages
DELAY_MAX = timedelta(days=30)


# --- query parameters -----------------------------------------------------------------


def filters(
    starred: bool | None = None,
    tag: Annotated[list[str], Query(description="carrying all of these tags")] = [],  # noqa: B006
    project: str | None = None,
    contact_source: str | None = None,
    contact_id: str | None = Query(default=None, description="with contact_source"),
    assignee: int | None = None,
    participant: str | None = None,
    participant_side: Side | None = None,
    subject: str | None = None,
    conversation: int | None = None,
    attachment_name: str | None = None,
    kind: str | None = None,
    channel: str | None = None,
    state: State | None = None,
    search: str | None = Query(default=None, max_length=500),
    sla: SlaSignal | None = None,
    date_field: DateField | None = None,
    date_from: AwareDatetime | None = None,
    date_to: AwareDatetime | None = None,
) -> Filters:
    """The combinable filters of ``tidings.conversations.Filters`` as query parameters."""
    if (contact_source is None) != (contact_id is None):
        raise ValueError("contact_source and contact_id go together")
    if (date_from or date_to) and date_field is None:
        raise ValueError("date_from/date_to need date_field")
    dates: tuple[DateRange, ...] = ()
    if date_field is not None:
        dates = (DateRange(field=date_field, start=date_from, end=date_to),)
    return Filters(
        dates=dates, starred=starred, tags=tuple(tag), project=project,
        contact=(contact_source, contact_id) if contact_source and contact_id else None,
        assignee=assignee, participant=participant, participant_side=participant_side,
        subject=subject, conversation_id=conversation, attachment_name=attachment_name,
        kind=kind, channel=channel, state=state, search=search, sla=sla,
    )  # fmt: skip


def page(
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


FiltersQ = Annotated[Filters, Depends(filters)]
PageQ = Annotated[Page, Depends(page)]


# --- bodies ---------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentBody(Body):
    agent_id: int


class TransferBody(Body):
    agent_id: int | None = None
    group_id: int | None = None

    @model_validator(mode="after")
    def _one(self) -> TransferBody:
        if (self.agent_id is None) == (self.group_id is None):
            raise ValueError("give agent_id or group_id")
        return self


class StarBody(Body):
    starred: bool = True


class TagsBody(Body):
    add: list[Annotated[str, Field(min_length=1, max_length=100)]] = []
    remove: list[Annotated[str, Field(min_length=1, max_length=100)]] = []


class Tags(BaseModel):
    tags: list[str]


class NoteBody(Body):
    note: str = Field(max_length=10_000)


class CommentBody(Body):
    text: str = Field(min_length=1, max_length=20_000)


class Created(BaseModel):
    message_id: int


class ReadBody(Body):
    message_ids: list[int] = Field(min_length=1, max_length=1000)
    read: bool = True


class ContactLinkBody(Body):
    source: str = Field(min_length=1, max_length=100)
    external_id: str = Field(min_length=1, max_length=300)
    display_name: str = Field(default="", max_length=300)
    type: ContactType = ContactType.PERSON


class FileBody(Body):
    """An attachment in JSON: the bytes base64-encoded, or a URL the channel fetches."""

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    data: str | None = Field(default=None, description="base64 (RFC 4648, standard alphabet)")
    url: str | None = Field(default=None, max_length=2000)
    inline: bool = False

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        # Strict: a lenient decoder would turn a corrupt upload into a wrong file silently.
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError("not valid base64") from None
        return value

    def attachment(self) -> Attachment:
        data = base64.b64decode(self.data) if self.data is not None else None
        return Attachment(
            filename=self.filename, content_type=self.content_type, data=data, url=self.url,
            inline=self.inline,
        )  # fmt: skip


class SendOptions(Body):
    decision: Decision | None = Field(
        default=None,
        description="needed when the conversation belongs to another agent (a 409 names the "
        "choices)",
    )
    close: bool = False
    delay_seconds: int | None = Field(default=None, ge=0, le=int(DELAY_MAX.total_seconds()))
    send_at: AwareDatetime | None = None


class ComposeBody(SendOptions):
    text: str = Field(default="", max_length=100_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    subject: str | None = Field(default=None, max_length=998)
    to: list[str] = []
    cc: list[str] = []
    bcc: list[str] = []
    priority: Priority = Priority.NORMAL
    attachments: list[FileBody] = Field(default=[], max_length=50)
    header_line: str | None = Field(default=None, max_length=998)
    template: TemplateRef | None = None
    message_tag: str | None = Field(default=None, max_length=100)

    def draft(self) -> Draft:
        return Draft(
            text=self.text, html=self.html, subject=self.subject, to=tuple(self.to),
            cc=tuple(self.cc), bcc=tuple(self.bcc), priority=self.priority,
            attachments=tuple(a.attachment() for a in self.attachments),
            header_line=self.header_line, template=self.template, message_tag=self.message_tag,
        )  # fmt: skip


class NewMessageBody(ComposeBody):
    account_id: str = Field(min_length=1, max_length=100)


class ForwardBody(SendOptions):
    to: list[str] = Field(min_length=1)
    text: str = Field(default="", max_length=100_000)
    account_id: str | None = Field(
        default=None, description="default: the account of the forwarded message"
    )


class SentOut(BaseModel):
    status: str = "queued"
    conversation_id: int
    message_id: int
    created_conversation: bool
    send_after: datetime


class CancelledOut(BaseModel):
    status: str = "cancelled"


# --- reading --------------------------------------------------------------------------


@router.get("/conversations", response_model=list[ConversationSummary])
async def list_conversations(
    svc: Svc, me: Me, filters: FiltersQ, page: PageQ, view: View = View.ACTIVE
) -> list[ConversationSummary]:
    """A view (mine, active, unassigned, closed, all) with filters; starred first."""
    return await svc.conversations.view(me, view, filters, page)


@router.get("/messages", response_model=list[MessageView])
async def list_messages(
    svc: Svc, me: Me, filters: FiltersQ, page: PageQ, view: View = View.ACTIVE
) -> list[MessageView]:
    """The flat message view: messages of the view's conversations, newest first."""
    return await svc.conversations.messages(me, view, filters, page)


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail)
async def get_conversation(svc: Svc, me: Me, conversation_id: int) -> ConversationDetail:
    return await svc.conversations.get(me, conversation_id)


@router.get("/conversations/{conversation_id}/events", response_model=list[Event])
async def conversation_events(svc: Svc, me: Me, conversation_id: int) -> list[Event]:
    return await svc.conversations.events(me, conversation_id)


@router.get("/messages/{message_id}/source", response_class=Response)
async def message_source(svc: Svc, me: Me, message_id: int) -> Response:
    """The original bytes of a message (an .eml for email)."""
    data = await svc.conversations.source(me, message_id)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="message-{message_id}.bin"'},
    )


async def _attachment(svc: Services, me: Actor, message_id: int, attachment_id: int) -> Any:
    at, blobs = tables.attachments, tables.blobs
    async with svc.runtime.store.read() as conn:
        row = (
            await conn.execute(
                sa.select(at.c.filename, at.c.content_type, blobs.c.data)
                .join(m, m.c.id == at.c.message_id)
                .join(c, c.c.id == m.c.conversation_id)
                .outerjoin(blobs, blobs.c.sha256 == at.c.sha256)
                .where(at.c.id == attachment_id, at.c.message_id == message_id,
                       queries.visible(me))
            )
        ).one_or_none()  # fmt: skip
    if row is None or row.data is None:
        raise NotFound(f"no attachment {attachment_id} with stored contents")
    return row


@router.get("/messages/{message_id}/attachments/{attachment_id}", response_class=Response)
async def message_attachment(svc: Svc, me: Me, message_id: int, attachment_id: int) -> Response:
    row = await _attachment(svc, me, message_id, attachment_id)
    safe = row.filename.replace('"', "_")
    return Response(
        bytes(row.data),
        media_type=row.content_type,
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


# --- assignment and state -------------------------------------------------------------

NO_CONTENT: dict[str, Any] = {"status_code": status.HTTP_204_NO_CONTENT, "response_class": Response}


@router.post("/conversations/{conversation_id}/take", **NO_CONTENT)
async def take(svc: Svc, me: Me, conversation_id: int) -> None:
    await tracked(svc, conversation_id, lambda: svc.conversations.take(me, conversation_id))


@router.post("/conversations/{conversation_id}/unassign", **NO_CONTENT)
async def unassign(svc: Svc, me: Me, conversation_id: int) -> None:
    await tracked(svc, conversation_id, lambda: svc.conversations.unassign(me, conversation_id))


@router.post("/conversations/{conversation_id}/reassign", **NO_CONTENT)
async def reassign(svc: Svc, me: Me, conversation_id: int, body: AgentBody) -> None:
    await tracked(
        svc, conversation_id,
        lambda: svc.conversations.reassign(me, conversation_id, body.agent_id),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/transfer", **NO_CONTENT)
async def transfer(svc: Svc, me: Me, conversation_id: int, body: TransferBody) -> None:
    """To another agent of the conversation's group, or to another group's pool."""
    if body.agent_id is not None:
        agent_id = body.agent_id
        await tracked(
            svc, conversation_id,
            lambda: svc.routing.transfer_to_agent(me, conversation_id, agent_id),
        )  # fmt: skip
    else:
        group_id = int(body.group_id or 0)
        await tracked(
            svc, conversation_id,
            lambda: svc.routing.transfer_to_group(me, conversation_id, group_id),
            data={"group_id": group_id},
        )  # fmt: skip


@router.post("/conversations/{conversation_id}/close", **NO_CONTENT)
async def close(svc: Svc, me: Me, conversation_id: int) -> None:
    await tracked(svc, conversation_id, lambda: svc.conversations.close(me, conversation_id))


@router.post("/conversations/{conversation_id}/reopen", **NO_CONTENT)
async def reopen(svc: Svc, me: Me, conversation_id: int) -> None:
    await tracked(svc, conversation_id, lambda: svc.conversations.reopen(me, conversation_id))


@router.delete("/conversations/{conversation_id}", **NO_CONTENT)
async def delete(svc: Svc, me: Me, conversation_id: int) -> None:
    """Permanently, with its messages."""
    await tracked(svc, conversation_id, lambda: svc.conversations.delete(me, conversation_id))


# --- per-conversation features ----------------------------------------------------------


@router.put("/conversations/{conversation_id}/star", **NO_CONTENT)
async def star(svc: Svc, me: Me, conversation_id: int, body: StarBody) -> None:
    await tracked(
        svc, conversation_id, lambda: svc.conversations.star(me, conversation_id, body.starred),
        also=ChangeKind.UPDATED, data={"starred": body.starred},
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/tags", response_model=Tags)
async def tag(svc: Svc, me: Me, conversation_id: int, body: TagsBody) -> Tags:
    tags = await tracked(
        svc, conversation_id,
        lambda: svc.conversations.tag(me, conversation_id, body.add, body.remove),
        also=ChangeKind.UPDATED,
    )  # fmt: skip
    return Tags(tags=list(tags))


@router.put("/conversations/{conversation_id}/note", **NO_CONTENT)
async def set_note(svc: Svc, me: Me, conversation_id: int, body: NoteBody) -> None:
    await tracked(
        svc,
        conversation_id,
        lambda: svc.conversations.set_note(me, conversation_id, body.note),
        also=ChangeKind.UPDATED,
    )


@router.post("/conversations/{conversation_id}/comments", status_code=201, response_model=Created)
async def comment(svc: Svc, me: Me, conversation_id: int, body: CommentBody) -> Created:
    """An internal comment, stored with the messages and never sent."""
    mid = await tracked(
        svc, conversation_id, lambda: svc.conversations.comment(me, conversation_id, body.text),
        also=ChangeKind.MESSAGE, data={"direction": "note"},
    )  # fmt: skip
    return Created(message_id=mid)


@router.post("/conversations/{conversation_id}/contacts", **NO_CONTENT)
async def link_contact(svc: Svc, me: Me, conversation_id: int, body: ContactLinkBody) -> None:
    match = ContactMatch(
        source=body.source, external_id=body.external_id, display_name=body.display_name,
        type=body.type,
    )  # fmt: skip
    await tracked(
        svc,
        conversation_id,
        lambda: svc.conversations.link_contact(me, conversation_id, match),
        also=ChangeKind.UPDATED,
    )


@router.post("/messages/{message_id}/tags", response_model=Tags)
async def tag_message(svc: Svc, me: Me, message_id: int, body: TagsBody) -> Tags:
    tags = await svc.conversations.tag_message(me, message_id, body.add, body.remove)
    return Tags(tags=list(tags))


@router.post("/messages/read", **NO_CONTENT)
async def mark_read(svc: Svc, me: Me, body: ReadBody) -> None:
    """Read marks are the agent's own: nobody else's view changes."""
    await svc.conversations.mark_read(me, body.message_ids, body.read)


# --- sending --------------------------------------------------------------------------


async def _send(
    svc: Services,
    me: Actor,
    draft: Draft,
    options: SendOptions,
    *,
    conversation_id: int | None = None,
    account_id: str | None = None,
) -> SentOut | CancelledOut:
    before = await snapshot(svc.runtime.store, conversation_id) if conversation_id else None
    try:
        sent = await svc.conversations.send(
            me, draft, conversation_id=conversation_id, account_id=account_id,
            decision=options.decision, close=options.close,
            delay=timedelta(seconds=options.delay_seconds)
            if options.delay_seconds is not None else None,
            send_at=options.send_at,
        )  # fmt: skip
    except Cancelled:
        return CancelledOut()
    after = await snapshot(svc.runtime.store, sent.conversation_id)
    await svc.events.publish(
        compare(sent.conversation_id, before, after, ChangeKind.MESSAGE, sent.message_id,
                {"direction": "out"})
    )  # fmt: skip
    return SentOut(
        conversation_id=sent.conversation_id, message_id=sent.message_id,
        created_conversation=sent.created_conversation, send_after=sent.send_after,
    )  # fmt: skip


SEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": CancelledOut, "description": "the decision was cancel: nothing was sent"},
    409: {"description": "a decision is needed (`choices`), or the state forbids it"},
}


@router.post(
    "/conversations/{conversation_id}/messages",
    status_code=202,
    response_model=SentOut | CancelledOut,
    responses=SEND_RESPONSES,
)
async def reply(
    svc: Svc, me: Me, conversation_id: int, body: ComposeBody, response: Response
) -> SentOut | CancelledOut:
    """Reply in a conversation: queued for the outbox (202); cancel it until ``send_after``."""
    out = await _send(svc, me, body.draft(), body, conversation_id=conversation_id)
    if isinstance(out, CancelledOut):
        response.status_code = 200
    return out


@router.post(
    "/messages", status_code=202, response_model=SentOut | CancelledOut, responses=SEND_RESPONSES
)
async def compose(
    svc: Svc, me: Me, body: NewMessageBody, response: Response
) -> SentOut | CancelledOut:
    """A new message from ``account_id`` to ``to`` (threads into an existing conversation
    where the channel threads by address)."""
    out = await _send(svc, me, body.draft(), body, account_id=body.account_id)
    if isinstance(out, CancelledOut):
        response.status_code = 200
    return out


async def _forward_draft(svc: Services, me: Actor, message_id: int, body: ForwardBody) -> Any:
    async with svc.runtime.store.read() as conn:
        cid = (
            await conn.execute(sa.select(m.c.conversation_id).where(m.c.id == message_id))
        ).scalar_one_or_none()
    if cid is None:
        raise NotFound(f"no message {message_id}")
    detail = await svc.conversations.get(me, int(cid))  # 404 unless the agent sees it
    original = next((x for x in detail.messages if x.id == message_id), None)
    if original is None or original.direction == "note":
        raise NotFound(f"no message {message_id}")
    files = []
    for info in original.attachments:
        row = await _attachment(svc, me, message_id, info.id)
        files.append(
            Attachment(filename=row.filename, content_type=row.content_type, data=bytes(row.data))
        )
    subject = original.subject or detail.summary.subject
    header = "\n".join(
        [
            "---------- Forwarded message ----------",
            f"From: {original.sender_name} <{original.sender}>".replace(" <>", ""),
            f"Date: {original.sent_at.isoformat()}",
            f"Subject: {subject}",
        ]
    )
    text = f"{body.text}\n\n{header}\n\n{original.text}".lstrip("\n")
    draft = Draft(
        text=text, subject=f"Fwd: {subject}" if subject else None, to=tuple(body.to),
        attachments=tuple(files),
    )  # fmt: skip
    return draft, body.account_id or detail.summary.account_id


@router.post(
    "/messages/{message_id}/forward",
    status_code=202,
    response_model=SentOut | CancelledOut,
    responses=SEND_RESPONSES,
)
async def forward(
    svc: Svc, me: Me, message_id: int, body: ForwardBody, response: Response
) -> SentOut | CancelledOut:
    """Forward a message (its text and files) to other recipients, as a new message."""
    draft, account_id = await _forward_draft(svc, me, message_id, body)
    out = await _send(svc, me, draft, body, account_id=account_id)
    if isinstance(out, CancelledOut):
        response.status_code = 200
    return out


@router.post("/messages/{message_id}/cancel", **NO_CONTENT)
async def cancel(svc: Svc, me: Me, message_id: int) -> None:
    """Stop a delayed or scheduled message; 409 when it is already being sent."""
    async with svc.runtime.store.read() as conn:
        cid = (
            await conn.execute(sa.select(m.c.conversation_id).where(m.c.id == message_id))
        ).scalar_one_or_none()
    await svc.conversations.cancel(me, message_id)
    if cid is not None:
        await svc.events.publish(
            compare(int(cid), None, await snapshot(svc.runtime.store, int(cid)),
                    ChangeKind.UPDATED, message_id, {"cancelled": True})[:1]
        )  # fmt: skip
