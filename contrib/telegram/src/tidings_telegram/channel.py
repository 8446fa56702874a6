"""The Telegram channel: Bot API webhooks in, ``sendMessage``/``sendDocument`` out.

Facts from the Bot API documentation (core.telegram.org/bots/api) this relies on:

* ``setWebhook`` takes a ``secret_token`` (1-256 of ``A-Z a-z 0-9 _ -``) that Telegram sends
  back in the ``X-Telegram-Bot-Api-Secret-Token`` header of every update; it is the only
  proof a request comes from Telegram, so it is compared in constant time before parsing.
* An update carries ``update_id`` and at most one of ``message``, ``edited_message``,
  ``callback_query``…; a ``message`` has ``message_id`` (unique within its chat), ``chat``,
  ``from``, ``date`` (Unix time), and ``text`` or ``caption``, ``photo`` (sizes, largest
  last) or ``document``.
* Files are fetched with ``getFile`` (bots may download up to 20 MB) and then
  ``https://api.telegram.org/file/bot<token>/<file_path>``.
* Every method answers ``{"ok": true, "result": …}`` or ``{"ok": false, "error_code",
  "description", "parameters": {"retry_after"}}``; 429 carries ``retry_after``.
* Telegram reports no delivery or read receipts to bots, and a bot cannot write first to a
  user ("bot can't initiate conversation with a user"), so the channel only replies.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from tidings import (
    Account,
    Address,
    AddressKind,
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
    SendResult,
    SignatureError,
    TransientSendError,
    WebhookRequest,
    hookimpl,
)

SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 (a header name)
UPDATES_ENDPOINT = "updates"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
"""Telegram lets bots download files up to 20 MB."""
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
"""…and upload documents up to 50 MB."""
MAX_TEXT = 4096
MAX_CAPTION = 1024
_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramSettings(ChannelSettings):
    bot_token: SecretStr
    """From @BotFather, ``123456:ABC-…``; it is part of every API URL, so never logged."""
    secret_token: SecretStr
    """Chosen by you and given to ``setWebhook``; Telegram echoes it in every update."""
    max_download_bytes: int = Field(default=MAX_DOWNLOAD_BYTES, ge=1, le=MAX_DOWNLOAD_BYTES)
    api_base: str = Field(default="https://api.telegram.org", pattern=r"^https?://[^/\s]+$")
    """Change only for a self-hosted Bot API server."""

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN.match(value.get_secret_value()):
            raise ValueError("not a bot token from @BotFather (digits, ':', then the key)")
        return value

    @field_validator("secret_token")
    @classmethod
    def _secret_shape(cls, value: SecretStr) -> SecretStr:
        if not _SECRET.match(value.get_secret_value()):
            raise ValueError("1-256 characters of A-Z, a-z, 0-9, '_' and '-' (Bot API rule)")
        return value


# --- the documented update shape (unknown fields ignored: the Bot API grows) --------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TgUser(_Lenient):
    id: int
    is_bot: bool = False
    first_name: str
    last_name: str | None = None
    username: str | None = None

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)


class TgChat(_Lenient):
    id: int
    type: str
    title: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class TgPhotoSize(_Lenient):
    file_id: str
    file_unique_id: str
    width: int
    height: int
    file_size: int | None = None


class TgDocument(_Lenient):
    file_id: str
    file_unique_id: str
    file_name: str | None = None
    mime_type: str | None = None
    file_size: int | None = None


class TgMessage(_Lenient):
    message_id: int
    from_: TgUser | None = Field(default=None, alias="from")
    chat: TgChat
    date: int
    text: str | None = None
    caption: str | None = None
    photo: tuple[TgPhotoSize, ...] = ()
    document: TgDocument | None = None


class TgUpdate(_Lenient):
    update_id: int
    message: TgMessage | None = None


class _File(BaseModel):
    """What the suite needs to fetch one file: the id, the name and type we give it."""

    file_id: str
    filename: str
    content_type: str
    size: int | None


# --- the channel -----------------------------------------------------------------------


class TelegramChannel(Channel):
    name = "telegram"
    kind = "telegram"
    settings_model = TelegramSettings
    capabilities = Capabilities(
        can_reply=True,
        can_initiate=False,
        max_text_length=MAX_TEXT,
        attachments=AttachmentLimits(max_count=1, max_bytes=MAX_UPLOAD_BYTES),
        delivery_status=False,
    )
    webhooks = {UPDATES_ENDPOINT: Endpoint.MESSAGES}

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=httpx.Timeout(10.0, read=30.0))

    @staticmethod
    def _method_url(settings: TelegramSettings, method: str) -> str:
        return f"{settings.api_base}/bot{settings.bot_token.get_secret_value()}/{method}"

    # -- receive ---------------------------------------------------------------------

    @hookimpl
    async def receive(
        self, account: Account[TelegramSettings], request: WebhookRequest
    ) -> list[InboundMessage]:
        expected = account.settings.secret_token.get_secret_value().encode()
        given = (request.header(SECRET_HEADER) or "").encode()
        if not hmac.compare_digest(given, expected):
            raise SignatureError("missing or wrong X-Telegram-Bot-Api-Secret-Token")
        data = request.json_body()
        if not isinstance(data, dict):
            raise MalformedPayload("a Telegram update is a JSON object")
        try:
            update = TgUpdate.model_validate(data)
        except ValidationError as exc:
            raise MalformedPayload(f"not a Telegram update: {exc.errors()[0]['msg']}") from None
        if update.message is None:
            return []  # edits, button presses…: documented, but not a customer message
        return [await self._message(account, update, update.message, data)]

    async def _message(
        self,
        account: Account[TelegramSettings],
        update: TgUpdate,
        message: TgMessage,
        raw: dict[str, Any],
    ) -> InboundMessage:
        user = message.from_
        name = user.full_name if user else (message.chat.title or None)
        files = self._files(message)
        attachments: list[Attachment] = []
        skipped: list[dict[str, Any]] = []
        if files:
            async with self._client() as client:
                for file in files:
                    data, why = await self._download(client, account.settings, file)
                    if data is None:
                        skipped.append(
                            {"filename": file.filename, "size": file.size, "reason": why}
                        )
                        continue
                    attachments.append(
                        Attachment(
                            filename=file.filename, content_type=file.content_type, data=data
                        )
                    )
        meta: dict[str, Any] = {"update_id": update.update_id, "chat_type": message.chat.type}
        if user and user.username:
            meta["username"] = user.username
        if skipped:
            meta["skipped_attachments"] = skipped
        return InboundMessage(
            # message_id is unique within a chat; the pair is stable across redelivery.
            provider_id=f"{message.chat.id}:{message.message_id}",
            sender=Address.handle(str(message.chat.id), name=name),
            text=message.text or message.caption or "",
            attachments=tuple(attachments),
            sent_at=datetime.fromtimestamp(message.date, UTC),
            meta=meta,
            raw=raw,
        )

    @staticmethod
    def _files(message: TgMessage) -> list[_File]:
        files = []
        if message.photo:
            largest = message.photo[-1]  # sizes come smallest first
            files.append(
                _File(
                    file_id=largest.file_id,
                    filename=f"photo_{largest.file_unique_id}.jpg",
                    content_type="image/jpeg",
                    size=largest.file_size,
                )
            )
        if message.document is not None:
            doc = message.document
            files.append(
                _File(
                    file_id=doc.file_id,
                    filename=doc.file_name or f"document_{doc.file_unique_id}",
                    content_type=doc.mime_type or "application/octet-stream",
                    size=doc.file_size,
                )
            )
        return files

    async def _download(
        self, client: httpx.AsyncClient, settings: TelegramSettings, file: _File
    ) -> tuple[bytes | None, str]:
        """The file's bytes, or ``None`` and why (too big): the message is kept either way."""
        limit = settings.max_download_bytes
        if file.size is not None and file.size > limit:
            return None, f"{file.size} bytes is over the {limit}-byte download limit"
        response = await client.post(
            self._method_url(settings, "getFile"), json={"file_id": file.file_id}
        )
        try:
            answer = _json(response)
        except MalformedPayload as exc:
            return None, f"getFile: {exc}"
        result = answer.get("result")
        path = result.get("file_path") if isinstance(result, dict) else None
        if answer.get("ok") is not True or not isinstance(path, str) or not path:
            return None, f"getFile: {answer.get('description') or 'no file_path'}"
        url = f"{settings.api_base}/file/bot{settings.bot_token.get_secret_value()}/{path}"
        chunks: list[bytes] = []
        received = 0
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                return None, f"download answered HTTP {response.status_code}"
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > limit:
                    return None, f"over the {limit}-byte download limit"
                chunks.append(chunk)
        return b"".join(chunks), ""

    # -- send ------------------------------------------------------------------------

    @hookimpl
    async def send(
        self, account: Account[TelegramSettings], message: OutboundMessage
    ) -> SendResult:
        to = message.to[0]
        if to.kind is not AddressKind.HANDLE or not re.match(r"^-?\d+$", to.value):
            raise PermanentSendError(f"{to.key} is not a Telegram chat id", code="bad_address")
        chat_id = to.value
        settings = account.settings
        try:
            async with self._client() as client:
                if not message.attachments:
                    result = await self._send(
                        client,
                        settings,
                        "sendMessage",
                        json={"chat_id": chat_id, "text": message.text},
                    )
                else:
                    result = await self._send_document(client, settings, chat_id, message)
        except httpx.TransportError as exc:
            # The exception text may hold the URL, and the URL holds the token: name the kind.
            raise TransientSendError(f"Telegram unreachable ({type(exc).__name__})") from None
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if not isinstance(message_id, int):
            raise TransientSendError("Telegram answered ok without a message_id", code="no_id")
        return SendResult(provider_id=f"{chat_id}:{message_id}", status=DeliveryStatus.SENT)

    async def _send_document(
        self,
        client: httpx.AsyncClient,
        settings: TelegramSettings,
        chat_id: str,
        message: OutboundMessage,
    ) -> Any:
        (file,) = message.attachments[:1]
        caption = message.text
        if len(caption) > MAX_CAPTION:  # a caption is shorter than a message: send both
            await self._send(
                client, settings, "sendMessage", json={"chat_id": chat_id, "text": caption}
            )
            caption = ""
        fields = {"chat_id": chat_id, **({"caption": caption} if caption else {})}
        if file.data is None:  # a URL: Telegram fetches it itself
            return await self._send(
                client, settings, "sendDocument", json={**fields, "document": file.url}
            )
        upload = {"document": (file.filename, file.data, file.content_type)}
        return await self._send(client, settings, "sendDocument", data=fields, files=upload)

    async def _send(
        self, client: httpx.AsyncClient, settings: TelegramSettings, method: str, **kwargs: Any
    ) -> Any:
        response = await client.post(self._method_url(settings, method), **kwargs)
        try:
            data = _json(response)
        except MalformedPayload:
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientSendError(
                    f"Telegram answered HTTP {response.status_code}", code=str(response.status_code)
                ) from None
            raise PermanentSendError(
                f"Telegram answered HTTP {response.status_code}", code=str(response.status_code)
            ) from None
        if data.get("ok") is True:
            return data.get("result")
        code = data.get("error_code", response.status_code)
        reason = str(data.get("description") or f"HTTP {response.status_code}")
        parameters = data.get("parameters")
        retry = parameters.get("retry_after") if isinstance(parameters, Mapping) else None
        if code == 429 or response.status_code == 429:
            after = float(retry) if isinstance(retry, int | float) else None
            raise TransientSendError(reason, code="429", retry_after=after)
        if (isinstance(code, int) and code >= 500) or response.status_code >= 500:
            raise TransientSendError(reason, code=str(code))
        raise PermanentSendError(reason, code=str(code))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise MalformedPayload(
            f"Telegram answered non-JSON (HTTP {response.status_code})"
        ) from None
    if not isinstance(data, dict):
        raise MalformedPayload("Telegram answered something other than an object")
    return data


async def set_webhook(
    account: Account[TelegramSettings],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    drop_pending_updates: bool = False,
) -> str:
    """Point the bot's webhook at this account's URL with its secret token; return the URL.

    Only ``message`` updates are asked for: the channel has nothing to do with the others.
    """
    settings = account.settings
    url = account.webhook_url(UPDATES_ENDPOINT)
    body = {
        "url": url,
        "secret_token": settings.secret_token.get_secret_value(),
        "allowed_updates": ["message"],
        "drop_pending_updates": drop_pending_updates,
    }
    async with httpx.AsyncClient(transport=transport, timeout=30.0) as client:
        response = await client.post(TelegramChannel._method_url(settings, "setWebhook"), json=body)
    data = _json(response)
    if data.get("ok") is not True:
        raise PermanentSendError(
            str(data.get("description") or "setWebhook failed"), code=str(data.get("error_code"))
        )
    return url
