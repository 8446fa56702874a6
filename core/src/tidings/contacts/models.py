"""What the contacts service takes and returns (the HTTP API and templates reuse these)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tidings.models import Address, AddressKind, ContactType


class ContactAddress(BaseModel):
    """An address of a contact; ``field`` names the phone/email field it came from, or is
    ``None`` for an address attached directly (e.g. an unknown sender's)."""

    model_config = ConfigDict(frozen=True)

    address: Address
    field: str | None = None
    is_default: bool = False


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    """Given by the store, never changed: the ``external_id`` of the built-in lookup source."""
    type: ContactType
    display_name: str
    vip: bool = False
    owner: str | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    """Field name -> value (``str``; ``Decimal`` numbers; aware ``datetime``s)."""
    addresses: tuple[ContactAddress, ...] = ()
    created_at: datetime
    updated_at: datetime

    @property
    def phones(self) -> tuple[Address, ...]:
        return tuple(a.address for a in self.addresses if a.address.kind is AddressKind.PHONE)

    @property
    def emails(self) -> tuple[Address, ...]:
        return tuple(a.address for a in self.addresses if a.address.kind is AddressKind.EMAIL)

    @property
    def default_phone(self) -> Address | None:
        """The number a call or SMS uses without asking: the default-phone field when it is
        filled, else the only number; ``None`` when the agent has to choose."""
        for a in self.addresses:
            if a.is_default and a.address.kind is AddressKind.PHONE:
                return a.address
        phones = self.phones
        return phones[0] if len(phones) == 1 else None


class RelatedContact(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    type: ContactType
    display_name: str
    label: str


class ActivityKind(StrEnum):
    NOTE = "note"
    STATUS_CHANGE = "status_change"
    ATTACHMENT = "attachment"
    EMAIL = "email"
    SMS = "sms"
    CALL = "call"


class Activity(BaseModel):
    """One entry of a contact's activity history."""

    model_config = ConfigDict(frozen=True)

    id: int
    contact_id: int
    kind: ActivityKind
    at: datetime
    actor_id: int | None
    text: str
    """The note, or a one-line summary (subject of an email, text of an SMS…)."""
    note: str = ""
    """The short note an agent added to a non-note activity."""
    data: dict[str, Any] = Field(default_factory=dict)
    edited_at: datetime | None = None


class AttachmentContent(BaseModel):
    model_config = ConfigDict(frozen=True)

    filename: str
    content_type: str
    data: bytes = Field(repr=False)


class LinkResult(BaseModel):
    """What attaching an address did: the contact and the conversations now linked to it."""

    model_config = ConfigDict(frozen=True)

    contact: Contact
    conversation_ids: tuple[int, ...]
