"""What the service hands a channel for one HTTP request, and what the channel answers.

Channels check signatures themselves, so they get the raw body bytes (never re-serialised
JSON) and the public URL the provider called (``public_url`` + path, not the internal one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field

from tidings.errors import MalformedPayload


class WebhookRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str = "POST"
    url: str = Field(description="the public URL the provider called, query string included")
    endpoint: str = Field(description="the endpoint name after /webhooks/{account_id}/")
    headers: Mapping[str, str] = Field(default_factory=dict, description="lower-cased names")
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def form(self) -> list[tuple[str, str]]:
        """The body as ``application/x-www-form-urlencoded`` pairs, in order."""
        try:
            text = self.body.decode("utf-8")
            return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedPayload(f"body is not a valid form: {exc}") from None

    def json_body(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedPayload(f"body is not valid JSON: {exc}") from None


class WebhookReply(BaseModel):
    """The HTTP answer, sent only after everything the request carried is committed."""

    model_config = ConfigDict(frozen=True)

    status_code: int = Field(default=200, ge=200, le=299)
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


class Endpoint(StrEnum):
    """Which hook(s) a webhook endpoint feeds."""

    MESSAGES = "messages"
    """Inbound messages: the receive hook."""
    STATUSES = "statuses"
    """Delivery reports: the delivery-status hook."""
    EVENTS = "events"
    """Both in one request (Meta): receive, then delivery status, one transaction."""


class PolledItem(BaseModel):
    """One raw item a polled channel fetched (e.g. one IMAP message: UID and RFC 822 bytes)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=300, description="the item's id at the source")
    data: bytes = Field(repr=False)
    meta: Mapping[str, Any] = Field(default_factory=dict)


class PolledBatch(BaseModel):
    """What a polled channel's ``poll`` hook yields: raw items plus the cursor after them.

    The core hands the batch to ``receive`` (and ``delivery_status``), commits the messages
    together with ``cursor`` (saved as the channel's state), and only then calls
    ``acknowledge`` — so a crash never marks as read what was not stored.
    """

    model_config = ConfigDict(frozen=True)

    items: tuple[PolledItem, ...] = ()
    cursor: Mapping[str, Any] | None = None
    source: str = Field(default="", max_length=300, description="e.g. the IMAP folder")
