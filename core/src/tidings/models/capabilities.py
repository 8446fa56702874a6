"""What a channel can do, declared once and read by the core, the outbox and the suite.

Reply rules (issue: "reply rules from channel capabilities") are derived from this, never
hard-coded per channel name, so a vendor's channel gets the same treatment as ours.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Threading(StrEnum):
    """How inbound messages are grouped into conversations."""

    ADDRESS = "address"
    """One conversation per customer address and channel account (SMS, fax, WhatsApp...)."""
    MESSAGE_HEADERS = "message_headers"
    """By Message-ID / In-Reply-To / References, then base subject (email)."""


class AttachmentLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_count: int = Field(default=10, ge=1)
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1, description="per attachment")
    content_types: tuple[str, ...] = Field(
        default=(), description="allowed types, e.g. 'image/*'; empty means any"
    )

    def allows(self, content_type: str) -> bool:
        if not self.content_types:
            return True
        major = content_type.split("/")[0]
        return any(t in (content_type, f"{major}/*", "*/*") for t in self.content_types)


class Capabilities(BaseModel):
    """Declared abilities of a channel. Defaults describe a plain two-way text channel."""

    model_config = ConfigDict(frozen=True)

    threading: Threading = Threading.ADDRESS
    can_reply: bool = True
    """False for web forms and voicemail: replying is refused with a clear error."""
    can_initiate: bool = True
    """Whether an agent may start a conversation (send to an address with no history)."""
    reply_window: timedelta | None = None
    """Free-form replies only within this time of the customer's last message."""
    outside_window: tuple[str, ...] = ()
    """What is allowed outside the window: 'template' (WhatsApp), 'message_tag' (Messenger)."""
    attachments: AttachmentLimits | None = None
    """None: the channel sends no attachments."""
    subject: bool = False
    cc_bcc: bool = False
    html: bool = False
    max_text_length: int | None = None
    delivery_status: bool = False
    read_receipts: bool = False
    polled: bool = False
    """True when the channel pulls (IMAP); False when the provider pushes webhooks."""
    deduplicates_sends: bool = False
    """True when the provider rejects a repeated send of the same idempotency key, so the
    outbox may resend after a crash instead of marking the message 'unknown — check'."""
