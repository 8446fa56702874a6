"""What the conversation service takes and returns (the HTTP API and CLI reuse these)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidings.models import Attachment, DeliveryStatus, Priority, TemplateRef


class State(StrEnum):
    NEW = "new"
    """Unassigned and open: in the shared pool."""
    ASSIGNED = "assigned"
    CLOSED = "closed"


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMINISTRATOR = "administrator"


class Actor(BaseModel):
    """The agent doing something, with what the server knows they may do."""

    model_config = ConfigDict(frozen=True)

    id: int
    username: str
    role: Role = Role.AGENT
    can_view_all: bool = False
    permissions: frozenset[tuple[int, str]] = frozenset()
    """(project id, channel kind) pairs the agent works on."""

    def may_work_on(self, project_id: int, kind: str) -> bool:
        return (project_id, kind) in self.permissions

    @property
    def privileged(self) -> bool:
        return self.role in (Role.SUPERVISOR, Role.ADMINISTRATOR)


class View(StrEnum):
    MINE = "mine"
    """Assigned to me and not closed."""
    ACTIVE = "active"
    """Not closed (that I may see)."""
    UNASSIGNED = "unassigned"
    """Open and in the shared pool."""
    CLOSED = "closed"
    ALL = "all"
    """Every conversation of my projects and channels, whoever has it (needs the permission)."""


class DateField(StrEnum):
    STARTED = "started"
    REOPENED = "reopened"
    CLOSED = "closed"
    UPDATED = "updated"
    LAST_MESSAGE = "last_message"


class Side(StrEnum):
    CUSTOMER = "customer"
    SYSTEM = "system"


class SlaSignal(StrEnum):
    """The three SLA clocks of a conversation's priority (``tidings.routing.sla``)."""

    REACTION_MISSED = "reaction_missed"
    """No agent reply within the reaction time (or the first reply came later)."""
    ALARM_REACHED = "alarm_reached"
    """The execution alarm passed while the conversation was still open."""
    EXECUTION_MISSED = "execution_missed"
    """Not closed within the execution time (or closed later)."""


class DateRange(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: DateField
    start: datetime | None = None
    end: datetime | None = None


class Filters(BaseModel):
    """Combinable filters; every given one must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dates: tuple[DateRange, ...] = ()
    starred: bool | None = None
    tags: tuple[str, ...] = Field(default=(), description="conversations carrying all of these")
    project: str | None = None
    contact: tuple[str, str] | None = Field(default=None, description="(source, external id)")
    assignee: int | None = None
    participant: str | None = Field(default=None, description="address text, either side")
    participant_side: Side | None = None
    subject: str | None = Field(default=None, description="subject contains")
    conversation_id: int | None = None
    attachment_name: str | None = Field(default=None, description="attachment name contains")
    kind: str | None = None
    channel: str | None = None
    state: State | None = None
    search: str | None = Field(default=None, description="customer name or message text")
    sla: SlaSignal | None = Field(default=None, description="this SLA signal was raised")


class Page(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


class Metrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_count: int
    started_at: datetime
    last_message_at: datetime
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None
    closed_at: datetime | None
    reopened_at: datetime | None
    processing_time: timedelta
    customer_waiting_now: timedelta
    total_wait_for_agent: timedelta
    total_wait_for_customer: timedelta
    time_to_first_reply: timedelta | None
    total_time_in_queue: timedelta
    since_last_queue_entry: timedelta | None


class ConversationSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    project: str
    account_id: str
    channel: str
    kind: str
    customer: str
    customer_name: str
    system: str
    subject: str
    state: State
    assignee_id: int | None
    starred: bool
    tags: tuple[str, ...] = ()
    metrics: Metrics


class AttachmentInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    filename: str
    content_type: str
    size: int | None
    sha256: str | None
    inline: bool


class MessageView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    conversation_id: int
    direction: str
    provider_id: str | None
    sender: str
    sender_name: str
    recipients: dict[str, Any]
    subject: str
    text: str
    html: str | None
    sent_at: datetime
    author_id: int | None
    status: DeliveryStatus | None
    status_raw: str | None
    error_code: str | None
    error_message: str | None
    meta: dict[str, Any] = {}
    """Channel facts and threading headers (``message_id``, ``in_reply_to``, ``references``)."""
    tags: tuple[str, ...] = ()
    read: bool = False
    attachments: tuple[AttachmentInfo, ...] = ()


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    at: datetime
    actor_id: int | None
    kind: str
    data: dict[str, Any]


class LinkedContact(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    external_id: str
    display_name: str


class ConversationDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    summary: ConversationSummary
    note: str
    contacts: tuple[LinkedContact, ...]
    messages: tuple[MessageView, ...]
    all_read: bool


class Decision(StrEnum):
    """What a sender chooses when the customer's conversation belongs to another agent."""

    CANCEL = "cancel"
    ASSIGN_AND_SEND = "assign_and_send"
    SEND_ONLY = "send_only"


class Draft(BaseModel):
    """An outbound message as an agent composes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = ""
    html: str | None = None
    subject: str | None = None
    to: tuple[str, ...] = Field(default=(), description="addresses; empty means the customer")
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL
    attachments: tuple[Attachment, ...] = ()
    header_line: str | None = None
    template: TemplateRef | None = None
    """A provider-approved template (WhatsApp outside the 24 h window)."""
    message_tag: str | None = Field(default=None, max_length=100)
    """A message tag (Messenger outside the window, e.g. HUMAN_AGENT)."""

    @model_validator(mode="after")
    def _has_content(self) -> Draft:
        if not (self.text.strip() or self.html or self.attachments or self.template):
            raise ValueError("a message needs text, HTML or an attachment")
        return self
