"""A reference channel that passes the conformance suite, and variants that each break one rule.

"Acme" is a provider invented for these tests, documented here because the suite compares
a channel against its provider's documentation:

* Inbound: ``POST`` JSON ``{"messages": [{"id", "from", "text", "files": [{"name", "type",
  "size", "url"}]}]}`` to the ``in`` endpoint; status reports ``{"statuses": [{"id",
  "status", "error_code"?}]}`` to the ``status`` endpoint. Both carry ``X-Acme-Signature``:
  the hex HMAC-SHA256 of the raw body under the webhook secret.
* Outbound: ``POST https://api.acme.test/v1/messages`` with a bearer key and an
  ``Idempotency-Key``, JSON ``{"from", "to", "text", "files": [{"name", "type", "data"
  (base64)}]}`` → ``201 {"id", "status": "accepted"}``; ``429`` with ``Retry-After``,
  ``5xx``, or ``4xx {"error": {"code", "message"}}``.
* Status words: accepted, sent, delivered, read, failed, undelivered.
* Acme Feed (a second, polled product): a read-only feed of JSON items ``{"id", "from",
  "text"}`` read in order; the cursor is the index of the next item.

The module is self-contained (it is also copied into a temporary distribution by the CLI
tests), so it imports nothing from the test folders.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import Field, SecretStr, field_validator

from tidings import (
    Account,
    Address,
    Attachment,
    AttachmentLimits,
    Capabilities,
    Channel,
    ChannelSettings,
    DeliveryStatus,
    Endpoint,
    InboundMessage,
    MalformedPayload,
    OutboundMessage,
    PermanentSendError,
    PolledBatch,
    PolledItem,
    SendResult,
    SignatureError,
    StatusUpdate,
    TransientSendError,
    WebhookRequest,
    hookimpl,
    map_status,
)
from tidings.conversations import Conversations
from tidings.models import normalise_phone
from tidings.plugins import Plugins
from tidings.store import Store
from tidings.testing.conformance import (
    BadSettings,
    ChannelConformance,
    ExpectedAttachment,
    ExpectedMessage,
    InboundSample,
    MalformedSample,
    SendScenario,
    StoreIngestion,
)

API = "https://api.acme.test/v1/messages"
SIGNATURE = "x-acme-signature"

STATUS_WORDS = {
    "accepted": DeliveryStatus.QUEUED,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
    "undelivered": DeliveryStatus.UNDELIVERED,
}


class AcmeSettings(ChannelSettings):
    api_key: SecretStr
    webhook_secret: SecretStr
    sender: str

    @field_validator("sender")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalise_phone(value)


def acme_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AcmeChannel(Channel):
    name = "acme"
    kind = "sms"
    settings_model = AcmeSettings
    capabilities = Capabilities(
        delivery_status=True,
        read_receipts=True,
        max_text_length=1600,
        attachments=AttachmentLimits(max_count=3, max_bytes=1024 * 1024),
    )
    webhooks = {"in": Endpoint.MESSAGES, "status": Endpoint.STATUSES}
    status_words: Mapping[str, DeliveryStatus] = STATUS_WORDS

    def verified(self, account: Account[AcmeSettings], request: WebhookRequest) -> Any:
        given = request.header(SIGNATURE) or ""
        expected = acme_signature(account.settings.webhook_secret.get_secret_value(), request.body)
        if not hmac.compare_digest(given, expected):
            raise SignatureError("missing or wrong X-Acme-Signature")
        data = request.json_body()
        if not isinstance(data, dict):
            raise MalformedPayload("expected a JSON object")
        return data

    def message_id(self, account: Account[AcmeSettings], item: Mapping[str, Any]) -> str:
        return str(item["id"])

    def parse(
        self, account: Account[AcmeSettings], data: Mapping[str, Any]
    ) -> list[InboundMessage]:
        out = []
        for item in data["messages"]:
            files = tuple(
                Attachment(filename=f["name"], content_type=f["type"], size=f["size"], url=f["url"])
                for f in item.get("files", ())
            )
            out.append(
                InboundMessage(
                    provider_id=self.message_id(account, item),
                    sender=Address.phone(item["from"]),
                    recipients=(Address.phone(account.settings.sender),),
                    text=item.get("text", ""),
                    attachments=files,
                )
            )
        return out

    @hookimpl
    async def receive(
        self, account: Account[AcmeSettings], request: WebhookRequest
    ) -> list[InboundMessage]:
        data = self.verified(account, request)
        try:
            return self.parse(account, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedPayload(f"not an Acme message: {exc!r}") from None

    def fail(self, response: httpx.Response) -> Exception:
        if response.status_code == 429:
            retry = response.headers.get("retry-after")
            return TransientSendError(
                "rate limited", code="429", retry_after=float(retry) if retry else None
            )
        if response.status_code >= 500:
            return TransientSendError(f"Acme answered {response.status_code}", code="5xx")
        try:
            error = response.json()["error"]
            return PermanentSendError(str(error["message"]), code=str(error["code"]))
        except (ValueError, KeyError, TypeError):
            return PermanentSendError(f"Acme refused the message ({response.status_code})")

    @hookimpl
    async def send(self, account: Account[AcmeSettings], message: OutboundMessage) -> SendResult:
        body = {
            "from": account.settings.sender,
            "to": message.to[0].value,
            "text": message.text,
            "files": [
                {
                    "name": a.filename,
                    "type": a.content_type,
                    "data": base64.b64encode(a.data or b"").decode(),
                }
                for a in message.attachments
            ],
        }
        headers = {
            "authorization": f"Bearer {account.settings.api_key.get_secret_value()}",
            "idempotency-key": message.id,
        }
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(API, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise TransientSendError(f"Acme unreachable: {exc!r}") from None
        if response.status_code != 201:
            raise self.fail(response)
        data = response.json()
        return SendResult(
            provider_id=data["id"],
            status=map_status(data.get("status"), dict(self.status_words)),
            raw_status=data.get("status"),
        )

    def updates(self, data: Mapping[str, Any]) -> list[StatusUpdate]:
        return [
            StatusUpdate(
                provider_id=str(item["id"]),
                status=map_status(item.get("status"), dict(self.status_words)),
                raw_status=item.get("status"),
                error_code=item.get("error_code"),
            )
            for item in data["statuses"]
        ]

    @hookimpl
    async def delivery_status(
        self, account: Account[AcmeSettings], request: WebhookRequest
    ) -> list[StatusUpdate]:
        data = self.verified(account, request)
        try:
            return self.updates(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedPayload(f"not an Acme status report: {exc!r}") from None


# --- variants that each break one rule ---------------------------------------------------


class ForgedAccepted(AcmeChannel):
    """Compares the signature with ``==`` against the wrong thing: accepts anything."""

    def verified(self, account: Account[AcmeSettings], request: WebhookRequest) -> Any:
        data = request.json_body()
        if not isinstance(data, dict):
            raise MalformedPayload("expected a JSON object")
        return data


class StatusBackwards(AcmeChannel):
    """Maps a read receipt to ``sent``: replayed reports end behind where they should."""

    status_words = {**STATUS_WORDS, "read": DeliveryStatus.SENT}


class UnknownDropped(AcmeChannel):
    """Drops reports whose word it does not know instead of keeping them as unknown."""

    def updates(self, data: Mapping[str, Any]) -> list[StatusUpdate]:
        return [u for u in super().updates(data) if u.status is not DeliveryStatus.UNKNOWN]


class UnstableIds(AcmeChannel):
    """Makes ids from the arrival time: a provider's retry becomes a second message."""

    def message_id(self, account: Account[AcmeSettings], item: Mapping[str, Any]) -> str:
        return f"{item['id']}-{time.time_ns()}"


class CrashesOnMalformed(AcmeChannel):
    """Lets the KeyError of a missing field escape."""

    @hookimpl
    async def receive(
        self, account: Account[AcmeSettings], request: WebhookRequest
    ) -> list[InboundMessage]:
        return self.parse(account, self.verified(account, request))


class RepliesAnyway(AcmeChannel):
    """Declares a web form (no reply, no initiating) yet sends whatever it is given."""

    kind = "webform"
    capabilities = Capabilities(can_reply=False, can_initiate=False)
    webhooks = {"in": Endpoint.MESSAGES}
    delivery_status = None  # type: ignore[assignment]


class WebFormRefusing(RepliesAnyway):
    """The correct web form: it has no send hook at all."""

    send = None  # type: ignore[assignment]


class LaxSettings(AcmeChannel):
    """Takes any string as the sender number."""

    class Settings(ChannelSettings):
        api_key: SecretStr
        webhook_secret: SecretStr
        sender: str

    settings_model = Settings


class RateLimitPermanent(AcmeChannel):
    """Treats a 429 like any refusal: rate-limited messages are lost instead of retried."""

    def fail(self, response: httpx.Response) -> Exception:
        if response.status_code == 429:
            return PermanentSendError("too many requests", code="429")
        return super().fail(response)


class Registers:
    """A plugin object registering one channel (what a plugin module does)."""

    def __init__(self, channel: type[Channel]) -> None:
        self.channel = channel

    @hookimpl
    def register_channels(self) -> list[Channel]:
        return [self.channel()]


GOOD = Registers(AcmeChannel)
FORGED_ACCEPTED = Registers(ForgedAccepted)
STATUS_BACKWARDS = Registers(StatusBackwards)
UNKNOWN_DROPPED = Registers(UnknownDropped)
UNSTABLE_IDS = Registers(UnstableIds)
CRASHES_ON_MALFORMED = Registers(CrashesOnMalformed)
REPLIES_ANYWAY = Registers(RepliesAnyway)
WEBFORM_REFUSING = Registers(WebFormRefusing)
LAX_SETTINGS = Registers(LaxSettings)
RATE_LIMIT_PERMANENT = Registers(RateLimitPermanent)


# --- the vendor's conformance subclass ----------------------------------------------------


def _json(account: Account[Any], endpoint: str, payload: Any) -> WebhookRequest:
    return WebhookRequest(
        url=account.webhook_url(endpoint),
        endpoint=endpoint,
        headers={"content-type": "application/json"},
        body=json.dumps(payload).encode(),
    )


class AcmeConformance(ChannelConformance):
    """What the Acme vendor writes; a concrete ``Test…`` subclass names the entry point."""

    channel_name = "acme"
    signature_headers = (SIGNATURE,)

    @pytest.fixture
    def account_settings(self) -> Mapping[str, Any]:
        return {"api_key": "ak_live_1", "webhook_secret": "whsec_1", "sender": "+48 600 000 000"}

    @pytest.fixture
    def bad_settings(self) -> Sequence[BadSettings]:
        return [BadSettings("sender is not a number", {"sender": "call me"}, "sender")]

    @pytest.fixture
    def sign(self, account: Account[Any]) -> Callable[[WebhookRequest], WebhookRequest]:
        secret = account.settings.webhook_secret.get_secret_value()

        def sign(request: WebhookRequest) -> WebhookRequest:
            headers = {**request.headers, SIGNATURE: acme_signature(secret, request.body)}
            return request.model_copy(update={"headers": headers})

        return sign

    @pytest.fixture
    def inbound_samples(self, account: Account[Any]) -> Sequence[InboundSample]:
        text = {"messages": [{"id": "AM1", "from": "+48 600 100 200", "text": "Hello"}]}
        two = {
            "messages": [
                {"id": "AM2", "from": "0048600100201", "text": "one"},
                {"id": "AM3", "from": "+48600100202", "text": "two"},
            ]
        }
        file = {
            "name": "invoice.pdf",
            "type": "application/pdf",
            "size": 48213,
            "url": "https://files.acme.test/f/1",
        }
        with_file = {"messages": [{"id": "AM4", "from": "+48600100200", "files": [file]}]}
        return [
            InboundSample(
                "text",
                _json(account, "in", text),
                (ExpectedMessage("phone:+48600100200", "AM1", "Hello"),),
            ),
            InboundSample(
                "two messages",
                _json(account, "in", two),
                (
                    ExpectedMessage("phone:+48600100201", "AM2", "one"),
                    ExpectedMessage("phone:+48600100202", "AM3", "two"),
                ),
            ),
            InboundSample(
                "file",
                _json(account, "in", with_file),
                (
                    ExpectedMessage(
                        "phone:+48600100200",
                        "AM4",
                        attachments=(ExpectedAttachment("invoice.pdf", "application/pdf", 48213),),
                    ),
                ),
            ),
        ]

    @pytest.fixture
    def malformed_samples(self, account: Account[Any]) -> Sequence[MalformedSample]:
        return [
            MalformedSample("no sender", _json(account, "in", {"messages": [{"id": "AM9"}]})),
            MalformedSample("messages not a list", _json(account, "in", {"messages": 7})),
            MalformedSample("status without id", _json(account, "status", {"statuses": [{}]})),
        ]

    @pytest.fixture
    def recipient(self) -> Address:
        return Address.phone("+48600100200")

    @pytest.fixture
    def send_success(self) -> SendScenario:
        def arrange(router: Any) -> None:
            router.post(API).respond(201, json={"id": "AMout1", "status": "accepted"})

        return SendScenario("accepted", arrange, provider_id="AMout1", status=DeliveryStatus.QUEUED)

    @pytest.fixture
    def send_transient(self) -> Sequence[SendScenario]:
        def rate_limited(router: Any) -> None:
            router.post(API).respond(429, headers={"retry-after": "30"}, json={})

        def unavailable(router: Any) -> None:
            router.post(API).respond(503, text="down for maintenance")

        return [
            SendScenario("rate limited", rate_limited, code="429", retry_after=30.0),
            SendScenario("unavailable", unavailable, code="5xx"),
        ]

    @pytest.fixture
    def send_permanent(self) -> Sequence[SendScenario]:
        def invalid(router: Any) -> None:
            error = {"code": "invalid_number", "message": "The number is not valid"}
            router.post(API).respond(400, json={"error": error})

        return [SendScenario("invalid number", invalid, code="invalid_number")]

    @pytest.fixture
    def sent_attachments(self) -> Callable[[Any], Sequence[ExpectedAttachment]]:
        def read(router: Any) -> list[ExpectedAttachment]:
            body = json.loads(router.calls.last.request.content)
            return [
                ExpectedAttachment(f["name"], f["type"], len(base64.b64decode(f["data"])))
                for f in body["files"]
            ]

        return read

    @pytest.fixture
    def status_words(self) -> Mapping[str, DeliveryStatus]:
        return STATUS_WORDS

    @pytest.fixture
    def status_report(self, account: Account[Any]) -> Callable[[str, str], WebhookRequest]:
        def report(provider_id: str, word: str) -> WebhookRequest:
            return _json(account, "status", {"statuses": [{"id": provider_id, "status": word}]})

        return report


# --- store-backed ingestion broken on purpose (the suite must notice) ---------------------


class NoDedupeIngestion(StoreIngestion):
    """Makes every delivery's ids unique before storing: a provider's retry is stored twice."""

    deliveries = 0

    async def deliver(self, account: Account[Any], request: WebhookRequest | PolledBatch) -> int:
        messages = await self.plugins.channel(account.channel).receive(account, request)
        self.deliveries += 1
        fresh = [
            m.model_copy(update={"provider_id": f"{m.provider_id}#{self.deliveries}"})
            for m in messages
        ]
        conversations = Conversations(self.store, self.plugins, {account.id: account})
        return len((await conversations.ingest(account.id, fresh)).stored)


class StoresBeforeVerifying(StoreIngestion):
    """Stores what the body says, and only then lets the channel check the signature."""

    async def deliver(self, account: Account[Any], request: WebhookRequest | PolledBatch) -> int:
        assert isinstance(request, WebhookRequest)
        handle = self.plugins.channel(account.channel)
        assert isinstance(handle.channel, AcmeChannel)
        try:
            early = handle.channel.parse(account, request.json_body())
        except (KeyError, TypeError, ValueError, MalformedPayload):
            early = []
        conversations = Conversations(self.store, self.plugins, {account.id: account})
        await conversations.ingest(account.id, early)
        messages = await handle.receive(account, request)
        return len((await conversations.ingest(account.id, messages)).stored)


class AcmeWithIngestion(AcmeConformance):
    """``AcmeConformance`` running through ``ingestion_class`` instead of the default."""

    ingestion_class: ClassVar[type[StoreIngestion]] = StoreIngestion

    @pytest.fixture
    async def ingestion(
        self, plugins: Plugins, tmp_path: Path, anyio_backend: Any
    ) -> AsyncIterator[StoreIngestion]:
        store = Store.open(f"sqlite:///{tmp_path / 'broken-ingestion.db'}")
        try:
            await store.upgrade()
            yield self.ingestion_class(store, plugins)
        finally:
            await store.close()


# --- a polled channel: "Acme Feed", a read-only feed of JSON items -------------------------

FEEDS: dict[str, list[bytes]] = {}
"""The provider's side of Acme Feed: each feed's items (JSON ``{"id", "from", "text"}``)."""


class FeedSettings(ChannelSettings):
    feed: str = Field(pattern=r"^[a-z0-9-]{1,40}$")


class AcmeFeed(Channel):
    """Polls a feed two items at a time; the cursor is the index of the next item."""

    name = "acme_feed"
    kind = "feed"
    settings_model = FeedSettings
    capabilities = Capabilities(polled=True, can_reply=False, can_initiate=False)

    def cursor(self, after: int) -> dict[str, Any]:
        return {"next": after}

    @hookimpl
    async def poll(
        self, account: Account[FeedSettings], cursor: Mapping[str, Any] | None, follow: bool
    ) -> AsyncIterator[PolledBatch]:
        items = FEEDS.get(account.settings.feed, [])
        start = int((cursor or {}).get("next", 0))
        for first in range(start, len(items), 2):
            chunk = items[first : first + 2]
            yield PolledBatch(
                items=tuple(PolledItem(id=str(first + n), data=d) for n, d in enumerate(chunk)),
                cursor=self.cursor(first + len(chunk)),
                source=account.settings.feed,
            )

    @hookimpl
    def receive(
        self, account: Account[FeedSettings], request: WebhookRequest | PolledBatch
    ) -> list[InboundMessage]:
        if not isinstance(request, PolledBatch):
            raise MalformedPayload("Acme Feed is polled: it has no webhooks")
        out = []
        for item in request.items:
            try:
                data = json.loads(item.data)
                out.append(
                    InboundMessage(
                        provider_id=str(data["id"]),
                        sender=Address.handle(str(data["from"])),
                        text=str(data.get("text", "")),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedPayload(
                    f"item {item.id} is not an Acme Feed item: {exc!r}"
                ) from None
        return out

    @hookimpl
    def acknowledge(self, account: Account[FeedSettings], batch: PolledBatch) -> None:
        """Acme Feed has nothing to mark: the cursor alone says what was read."""


class CursorNotJson(AcmeFeed):
    """Puts a datetime into the cursor: it cannot be saved as the channel's state."""

    def cursor(self, after: int) -> dict[str, Any]:
        return {"next": after, "at": datetime(2025, 3, 1, tzinfo=UTC)}


class CursorStuck(AcmeFeed):
    """Always hands back the starting cursor: every poll fetches the whole feed again."""

    def cursor(self, after: int) -> dict[str, Any]:
        return {"next": 0}


FEED_GOOD = Registers(AcmeFeed)
FEED_CURSOR_NOT_JSON = Registers(CursorNotJson)
FEED_CURSOR_STUCK = Registers(CursorStuck)


def feed_item(item_id: str, sender: str, text: str) -> bytes:
    return json.dumps({"id": item_id, "from": sender, "text": text}).encode()


class AcmeFeedConformance(ChannelConformance):
    """What the Acme Feed vendor writes; a concrete ``Test…`` subclass names the plugin."""

    channel_name = "acme_feed"
    receives_attachments = False

    @pytest.fixture
    def account_settings(self) -> Mapping[str, Any]:
        return {"feed": f"feed-{uuid.uuid4().hex[:12]}"}

    @pytest.fixture
    def bad_settings(self) -> Sequence[BadSettings]:
        return [BadSettings("feed name with spaces", {"feed": "my feed"}, "feed")]

    @pytest.fixture
    def inbound_samples(self) -> Sequence[InboundSample]:
        def batch(first: int, *items: bytes) -> PolledBatch:
            return PolledBatch(
                items=tuple(PolledItem(id=str(first + n), data=d) for n, d in enumerate(items)),
                cursor={"next": first + len(items)},
            )

        return [
            InboundSample(
                "two items",
                batch(0, feed_item("F1", "anna", "hi"), feed_item("F2", "jan", "hello")),
                (
                    ExpectedMessage("handle:anna", "F1", "hi"),
                    ExpectedMessage("handle:jan", "F2", "hello"),
                ),
            ),
            InboundSample(
                "one item",
                batch(2, feed_item("F3", "anna", "again")),
                (ExpectedMessage("handle:anna", "F3", "again"),),
            ),
        ]

    @pytest.fixture
    def malformed_samples(self) -> Sequence[MalformedSample]:
        broken = PolledBatch(items=(PolledItem(id="9", data=b'{"id": "F9"}'),))
        return [MalformedSample("item without a sender", broken)]

    @pytest.fixture
    def poll_source(self, account: Account[Any]) -> Callable[[Sequence[PolledBatch]], None]:
        def put(batches: Sequence[PolledBatch]) -> None:
            feed = FEEDS.setdefault(account.settings.feed, [])
            feed.extend(item.data for b in batches for item in b.items)

        return put

    @pytest.fixture
    def recipient(self) -> Address:
        return Address.handle("anna")
