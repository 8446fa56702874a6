"""The one delivery-status vocabulary every channel maps into.

Providers name their states differently (Twilio ``sending``, Meta ``sent``, SMTP reply codes,
fax phase-E results). Agents need one small set, and the outbox needs an order so that a late
report never moves a message backwards. The provider's own word and error code are kept beside
the normalised value (``StatusUpdate.raw_status``) so nothing is lost in translation, and a
word we do not know becomes ``unknown`` rather than being dropped.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    """Accepted by us or the provider, not yet handed to the network."""
    SENT = "sent"
    """Handed to the carrier / next hop."""
    DELIVERED = "delivered"
    """The recipient's device or mailbox has it."""
    READ = "read"
    """The recipient opened it (channels with read receipts). Implies delivered."""
    FAILED = "failed"
    """Could not be sent at all (rejected by the provider)."""
    UNDELIVERED = "undelivered"
    """Sent, but the carrier could not deliver it."""
    UNKNOWN = "unknown"
    """The provider said something we cannot map, or a crash left the outcome open."""

    @property
    def rank(self) -> int:
        """Progress order: a status may only replace one of strictly lower rank.

        ``failed``, ``undelivered`` and ``delivered`` share a rank: the first final answer
        wins, so a late ``failed`` cannot erase a ``delivered`` or the reverse. ``read`` is
        above them because a read receipt proves delivery whatever came before.
        """
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        return self.rank >= _RANK[DeliveryStatus.DELIVERED]


_RANK = {
    DeliveryStatus.UNKNOWN: 0,
    DeliveryStatus.QUEUED: 1,
    DeliveryStatus.SENT: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.FAILED: 3,
    DeliveryStatus.UNDELIVERED: 3,
    DeliveryStatus.READ: 4,
}


def advances(current: DeliveryStatus | None, new: DeliveryStatus) -> bool:
    """True when ``new`` may replace ``current`` (monotonic, idempotent)."""
    if current is None:
        return True
    return new.rank > current.rank


def map_status(raw: str | None, table: dict[str, DeliveryStatus]) -> DeliveryStatus:
    """Map a provider's word through ``table``; anything unmapped is ``unknown``."""
    if raw is None:
        return DeliveryStatus.UNKNOWN
    return table.get(raw.strip().lower(), DeliveryStatus.UNKNOWN)


class StatusUpdate(BaseModel):
    """A provider's report about one outbound message, normalised.

    ``provider_id`` is the id the send hook returned; the core finds the message by it, so a
    report that arrives before the send call returned is kept and applied once the id is known.
    """

    model_config = ConfigDict(frozen=True)

    provider_id: str = Field(min_length=1, max_length=300)
    status: DeliveryStatus
    raw_status: str | None = Field(default=None, max_length=100)
    error_code: str | None = Field(default=None, max_length=100)
    error_message: str | None = Field(default=None, max_length=2000)
    occurred_at: datetime | None = None
    raw: dict[str, Any] | None = None
