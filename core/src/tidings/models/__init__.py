"""Pydantic models for every boundary of tidings (plugins, store, API)."""

from tidings.models.addresses import Address, AddressKind, normalise_email, normalise_phone
from tidings.models.attachments import Attachment, safe_filename
from tidings.models.capabilities import AttachmentLimits, Capabilities, Threading
from tidings.models.contacts import ContactMatch, ContactType, merge_matches
from tidings.models.messages import (
    Consent,
    InboundMessage,
    OutboundMessage,
    Priority,
    SendResult,
    TemplateRef,
    ThreadHeaders,
)
from tidings.models.status import DeliveryStatus, StatusUpdate, advances, map_status
from tidings.models.webhooks import (
    Endpoint,
    PolledBatch,
    PolledItem,
    WebhookReply,
    WebhookRequest,
)

__all__ = [
    "Address",
    "AddressKind",
    "Attachment",
    "AttachmentLimits",
    "Capabilities",
    "Consent",
    "ContactMatch",
    "ContactType",
    "DeliveryStatus",
    "Endpoint",
    "InboundMessage",
    "OutboundMessage",
    "PolledBatch",
    "PolledItem",
    "Priority",
    "SendResult",
    "StatusUpdate",
    "TemplateRef",
    "ThreadHeaders",
    "Threading",
    "WebhookReply",
    "WebhookRequest",
    "advances",
    "map_status",
    "merge_matches",
    "normalise_email",
    "normalise_phone",
    "safe_filename",
]
