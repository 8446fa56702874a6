"""Channels used by the contract tests: small but complete, one sync and one async.

They implement the channel hooks the way a vendor would, so the tests exercise the
contract (dispatch, async, return checks) rather than a mock of it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import SecretStr

from tidings import (
    Account,
    Address,
    Capabilities,
    Channel,
    ChannelSettings,
    DeliveryStatus,
    Endpoint,
    InboundMessage,
    MalformedPayload,
    OutboundMessage,
    PolledBatch,
    PolledItem,
    SendResult,
    SignatureError,
    StatusUpdate,
    WebhookRequest,
    hookimpl,
    map_status,
)


class SignedSettings(ChannelSettings):
    secret: SecretStr
    sender: str = "+48600000000"


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


STATUS_WORDS = {
    "accepted": DeliveryStatus.QUEUED,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}


class AsyncJsonChannel(Channel):
    """JSON webhooks signed with HMAC-SHA256 of the raw body; async hooks."""

    name = "test_json"
    kind = "sms"
    settings_model = SignedSettings
    capabilities = Capabilities(delivery_status=True)
    webhooks = {"in": Endpoint.MESSAGES, "status": Endpoint.STATUSES}

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def _verified(self, account: Account[SignedSettings], request: WebhookRequest) -> Any:
        given = request.header("x-signature") or ""
        expected = sign(account.settings.secret.get_secret_value(), request.body)
        if not hmac.compare_digest(given, expected):
            raise SignatureError("bad or missing X-Signature")
        data = request.json_body()
        if not isinstance(data, dict):
            raise MalformedPayload("expected a JSON object")
        return data

    @hookimpl
    async def receive(
        self, account: Account[SignedSettings], request: WebhookRequest
    ) -> list[InboundMessage]:
        data = self._verified(account, request)
        try:
            return [
                InboundMessage(
                    provider_id=str(item["id"]),
                    sender=Address.phone(item["from"]),
                    recipients=(Address.phone(account.settings.sender),),
                    text=item.get("text", ""),
                )
                for item in data["messages"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedPayload(f"bad message: {exc}") from None

    @hookimpl
    async def send(self, account: Account[SignedSettings], message: OutboundMessage) -> SendResult:
        self.sent.append((account.id, message.id))
        return SendResult(provider_id=f"{account.id}-{message.id}", status=DeliveryStatus.QUEUED)

    @hookimpl
    async def delivery_status(
        self, account: Account[SignedSettings], request: WebhookRequest
    ) -> list[StatusUpdate]:
        data = self._verified(account, request)
        return [
            StatusUpdate(
                provider_id=str(item["id"]),
                status=map_status(item.get("status"), STATUS_WORDS),
                raw_status=item.get("status"),
            )
            for item in data["statuses"]
        ]


class SyncFormChannel(Channel):
    """A web-form channel with plain (sync) hooks and no replies."""

    name = "test_form"
    kind = "webform"
    capabilities = Capabilities(can_reply=False, can_initiate=False)
    webhooks = {"": Endpoint.MESSAGES}

    @hookimpl
    def receive(self, account: Account[Any], request: WebhookRequest) -> list[InboundMessage]:
        fields = dict(request.form())
        if "email" not in fields:
            raise MalformedPayload("the form has no email field")
        return [
            InboundMessage(
                provider_id=fields.get("submission", "s1"),
                sender=Address.email(fields["email"]),
                text=fields.get("message", ""),
            )
        ]


class ChannelsPlugin:
    """A plugin object registering both channels (what a plugin module would do)."""

    def __init__(self) -> None:
        self.json = AsyncJsonChannel()
        self.form = SyncFormChannel()

    @hookimpl
    def register_channels(self) -> list[Channel]:
        return [self.json, self.form]


class MailboxSettings(ChannelSettings):
    folder: str = "INBOX"


class PolledMailboxChannel(Channel):
    """A polled channel over an in-process mailbox: items are (uid, raw text) pairs.

    ``acknowledged`` records which uids were marked handled, in order.
    """

    name = "test_polled"
    kind = "email"
    settings_model = MailboxSettings
    capabilities = Capabilities(polled=True, can_initiate=False, can_reply=False)

    def __init__(self, mailbox: list[tuple[int, str]], batch_size: int = 2) -> None:
        self.mailbox = mailbox
        self.batch_size = batch_size
        self.acknowledged: list[str] = []

    @hookimpl
    async def poll(
        self, account: Account[MailboxSettings], cursor: dict[str, Any] | None, follow: bool
    ) -> Any:
        last = (cursor or {}).get("last_uid", 0)
        pending = [(uid, text) for uid, text in self.mailbox if uid > last]
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            yield PolledBatch(
                items=tuple(PolledItem(id=str(uid), data=text.encode()) for uid, text in chunk),
                cursor={"last_uid": chunk[-1][0]},
                source=account.settings.folder,
            )

    @hookimpl
    def receive(
        self, account: Account[MailboxSettings], request: WebhookRequest | PolledBatch
    ) -> list[InboundMessage]:
        if not isinstance(request, PolledBatch):
            raise MalformedPayload("this channel is polled, it has no webhooks")
        out = []
        for item in request.items:
            sender, _, text = item.data.decode().partition("\n")
            out.append(InboundMessage(provider_id=item.id, sender=Address.email(sender), text=text))
        return out

    @hookimpl
    async def acknowledge(self, account: Account[MailboxSettings], batch: PolledBatch) -> None:
        self.acknowledged.extend(item.id for item in batch.items)
