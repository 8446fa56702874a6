"""Messages as they cross the plugin boundary, in both directions.

Inbound messages are what a channel's receive hook returns; outbound messages are what the
send hook is given. Both carry only normalised values (``Address``, ``Attachment``) so the
core never parses a provider format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidings.models.addresses import Address
from tidings.models.attachments import Attachment
from tidings.models.status import DeliveryStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ThreadHeaders(BaseModel):
    """Email threading headers (RFC 5322); empty for channels threaded by address."""

    model_config = ConfigDict(frozen=True)

    message_id: str | None = Field(default=None, max_length=998)
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()


class Consent(StrEnum):
    """A customer's messaging consent, as a keyword (STOP/START) or the provider reports it."""

    OPT_OUT = "opt_out"
    """The customer asked for no more messages: sends to them are refused before the provider."""
    OPT_IN = "opt_in"
    """The customer asked to receive messages again."""


class InboundMessage(BaseModel):
    """One message from a customer, as a channel's receive hook reports it.

    ``provider_id`` is the provider's own id of the message (Twilio MessageSid, a wamid, the
    Message-ID for email): the core stores nothing new when the same id arrives again.
    """

    model_config = ConfigDict(frozen=True)

    provider_id: str = Field(min_length=1, max_length=998)
    sender: Address
    recipients: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    subject: str | None = Field(default=None, max_length=998)
    text: str = ""
    html: str | None = Field(default=None, description="already sanitised for display")
    attachments: tuple[Attachment, ...] = ()
    sent_at: datetime = Field(default_factory=utcnow)
    thread: ThreadHeaders = Field(default_factory=ThreadHeaders)
    auto_reply: bool = False
    consent: Consent | None = Field(
        default=None, description="set when this message changes the sender's consent (STOP)"
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="channel-specific facts")
    raw: dict[str, Any] | None = Field(default=None, description="the provider payload")
    source: bytes | None = Field(default=None, repr=False, description="original bytes (.eml)")

    _aware_sent_at = field_validator("sent_at")(_aware)


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class TemplateRef(BaseModel):
    """A provider-approved template (WhatsApp) to send instead of free text."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=512)
    language: str = Field(default="en", max_length=20)
    parameters: tuple[str, ...] = ()


class OutboundMessage(BaseModel):
    """One message an agent sends, as the send hook receives it.

    ``id`` is ours and stable across retries; channels whose provider accepts an idempotency
    key should send it so a retry after a crash cannot duplicate the message.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=100)
    sender: Address | None = None
    to: tuple[Address, ...] = Field(min_length=1)
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    subject: str | None = Field(default=None, max_length=998)
    text: str = ""
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    priority: Priority = Priority.NORMAL
    thread: ThreadHeaders = Field(default_factory=ThreadHeaders)
    template: TemplateRef | None = None
    message_tag: str | None = Field(default=None, max_length=100)
    header_line: str | None = Field(default=None, max_length=100, description="fax header")
    meta: dict[str, Any] = Field(default_factory=dict)


class SendResult(BaseModel):
    """What the send hook returns: the provider's id for the message and its first status."""

    model_config = ConfigDict(frozen=True)

    provider_id: str = Field(min_length=1, max_length=998)
    status: DeliveryStatus = DeliveryStatus.SENT
    raw_status: str | None = None
    segments: int | None = Field(default=None, ge=1)
    raw: dict[str, Any] | None = None
