"""The base class a vendor subclasses to add a channel, and the account it runs for.

A channel is an object registered through the ``register_channels`` hook. Its three channel
hooks (``receive``, ``send``, ``delivery_status``, see ``tidings.hookspecs``) are methods
marked with ``@hookimpl``. The core calls them only for accounts whose ``channel`` names this
channel, so an implementation never has to ask "is this account mine?".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidings.models.addresses import Address
from tidings.models.capabilities import Capabilities
from tidings.models.messages import OutboundMessage
from tidings.models.webhooks import Endpoint, WebhookReply, WebhookRequest

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class ChannelSettings(BaseModel):
    """Base for a channel's settings model: unknown keys are refused, so typos fail at start.

    Use ``pydantic.SecretStr`` for tokens and passwords: their value never appears in a
    ``repr``, a log line or ``tidings accounts list``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


SettingsT = TypeVar("SettingsT", bound=ChannelSettings)


class Account(BaseModel, Generic[SettingsT]):
    """One configured channel account (a mailbox, a number, a page) and its settings."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=ACCOUNT_ID_PATTERN)
    channel: str = Field(pattern=NAME_PATTERN)
    project: str = Field(min_length=1, max_length=100)
    settings: SettingsT
    public_url: str = Field(default="http://127.0.0.1:8000", description="externally visible base")

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def webhook_url(self, endpoint: str) -> str:
        """The URL a provider must call for ``endpoint`` (what signatures are computed on)."""
        return f"{self.public_url}/webhooks/{self.id}/{endpoint}".rstrip("/")


class Channel:
    """Subclass this, set the class attributes, and implement the channel hooks.

    ``name`` is what accounts write in ``channel = "…"``; ``kind`` is the medium agents get
    permissions for (``email``, ``sms``, ``fax``, ``whatsapp``, ``messenger``, ``webform``,
    ``voicemail`` or a vendor's own word).
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    settings_model: ClassVar[type[ChannelSettings]] = ChannelSettings
    capabilities: ClassVar[Capabilities] = Capabilities()
    webhooks: ClassVar[Mapping[str, Endpoint]] = {}
    """Webhook endpoint names under ``/webhooks/{account_id}/`` and what each carries."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("name", "kind"):
            value = cls.__dict__.get(attr)
            if value is not None and not re.match(NAME_PATTERN, value):
                raise TypeError(f"{cls.__name__}.{attr} = {value!r} must match {NAME_PATTERN}")

    def own_address(self, account: Account[Any]) -> Address | None:
        """The account's own address (its number, mailbox or page), when it has one.

        Used as the "system" side of conversations and as the From of new messages.
        """
        return None

    def compose_info(self, account: Account[Any], message: OutboundMessage) -> dict[str, Any]:
        """Facts shown to the agent before sending, e.g. ``{"segments": 2, "encoding":
        "UCS-2"}`` for SMS. Must not call the provider. Default: nothing to show."""
        return {}

    async def aclose(self) -> None:
        """Release what the channel holds across calls (HTTP pools, connections). Called
        once when the service or worker stops."""
        return None

    def reply(self, account: Account[Any], request: WebhookRequest) -> WebhookReply:
        """The HTTP answer once the request's content is committed. Override for TwiML etc."""
        return WebhookReply()

    def __repr__(self) -> str:
        return f"<channel {getattr(self, 'name', '?')} ({type(self).__module__})>"
