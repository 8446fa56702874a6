"""Inbound webhooks: the incoming-message request and the status callback.

Both are ``application/x-www-form-urlencoded`` POSTs signed with ``X-Twilio-Signature``.
Twilio adds parameters without notice, so unknown names are kept in ``raw`` and otherwise
ignored; only the ones this channel needs are required.

MMS media are downloaded here, before the core commits the message, because the core stores
bytes and the media URLs need the account's credentials. A media item that cannot be taken
(host not Twilio's, type not allowed, over the size limit, download failure) is **skipped
with a note** in ``meta["media_skipped"]`` rather than refusing the whole request: Twilio
does not retry an incoming-message webhook, so refusing would lose the customer's text too.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import anyio
import httpx

from tidings import (
    Account,
    Address,
    Attachment,
    Consent,
    InboundMessage,
    MalformedPayload,
    PolledBatch,
    StatusUpdate,
    WebhookRequest,
    map_status,
)
from tidings_sms_twilio import signature
from tidings_sms_twilio.settings import TwilioSettings
from tidings_sms_twilio.status import STATUS_TABLE, error_meaning

MAX_MEDIA = 10
"""Twilio carries at most 10 media items per message."""
MAX_REDIRECTS = 5

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
"""Twilio's default opt-out keywords (a message that is exactly one of them, any case)."""
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

_META_FIELDS: dict[str, str] = {
    "MessagingServiceSid": "messaging_service_sid",
    "ProfileName": "profile_name",
    "WaId": "wa_id",
    "FromCountry": "from_country",
    "FromState": "from_state",
    "FromCity": "from_city",
    "FromZip": "from_zip",
    "ToCountry": "to_country",
    "ToState": "to_state",
    "ToCity": "to_city",
    "ToZip": "to_zip",
    "SmsStatus": "sms_status",
    "ApiVersion": "api_version",
    "OptOutType": "opt_out_type",
}
_INT_META_FIELDS: dict[str, str] = {"NumSegments": "num_segments", "NumMedia": "num_media"}

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/heic": ".heic",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "audio/amr": ".amr",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
    "text/calendar": ".ics",
    "text/plain": ".txt",
    "application/pdf": ".pdf",
}


# --- parameters -------------------------------------------------------------------------------


def checked_params(settings: TwilioSettings, request: WebhookRequest | PolledBatch) -> Params:
    """Verify the signature (unless explicitly switched off) and return the parameters."""
    if isinstance(request, PolledBatch):
        raise MalformedPayload("sms_twilio is not a polled channel")
    if settings.verify_signatures:
        assert settings.auth_token is not None  # the settings refuse verification without it
        signature.verify(settings.auth_token.get_secret_value(), request)
    if request.method.upper() == "GET":
        pairs = parse_qsl(urlsplit(request.url).query, keep_blank_values=True)
    elif signature.is_json(request):
        pairs = _json_pairs(request)
    else:
        pairs = request.form()
    return Params(pairs)


def _json_pairs(request: WebhookRequest) -> list[tuple[str, str]]:
    data = request.json_body()
    if not isinstance(data, dict):
        raise MalformedPayload("a JSON webhook body must be an object")
    pairs = []
    for key, value in data.items():
        if isinstance(value, str | int | float | bool):
            pairs.append((str(key), value if isinstance(value, str) else json.dumps(value)))
    return pairs


class Params:
    """Form parameters with typed, KeyError-free access."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._first: dict[str, str] = {}
        for name, value in pairs:
            self._first.setdefault(name, value)

    def get(self, name: str) -> str | None:
        return self._first.get(name)

    def required(self, name: str) -> str:
        value = self._first.get(name, "").strip()
        if not value:
            raise MalformedPayload(f"the request has no {name}")
        return value

    def integer(self, name: str, *, default: int = 0, maximum: int | None = None) -> int:
        text = self._first.get(name)
        if text is None or not text.strip():
            return default
        try:
            value = int(text.strip())
        except ValueError:
            raise MalformedPayload(f"{name} is not a number: {text[:40]!r}") from None
        if value < 0 or (maximum is not None and value > maximum):
            raise MalformedPayload(f"{name} is out of range: {value}")
        return value

    def as_dict(self) -> dict[str, Any]:
        """The raw payload: one string per name, a list for a name sent several times."""
        out: dict[str, Any] = {}
        for name, value in self.pairs:
            if name in out:
                previous = out[name]
                out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                out[name] = value
        return out


def _check_account(settings: TwilioSettings, params: Params) -> None:
    sid = params.get("AccountSid")
    if sid is not None and sid != settings.account_sid:
        raise MalformedPayload(f"AccountSid {sid[:40]!r} is not this account's")


def _phone(value: str, field: str) -> tuple[Address, str | None]:
    """A phone address; Twilio prefixes channel addresses (``whatsapp:+48…``)."""
    channel = None
    text = value.strip()
    head, sep, rest = text.partition(":")
    if sep and head.isalpha():
        channel, text = head.lower(), rest
    try:
        return Address.phone(text), channel
    except ValueError as exc:
        raise MalformedPayload(f"{field} is not a phone number: {exc}") from None


# --- incoming messages ------------------------------------------------------------------------


async def parse_inbound(
    account: Account[TwilioSettings],
    request: WebhookRequest | PolledBatch,
    client: httpx.AsyncClient,
) -> list[InboundMessage]:
    settings = account.settings
    params = checked_params(settings, request)
    _check_account(settings, params)
    sid = params.required("MessageSid")
    if len(sid) > 200:
        raise MalformedPayload("MessageSid is too long")
    profile_name = params.get("ProfileName") or None
    sender, channel = _phone(params.required("From"), "From")
    if profile_name:
        sender = sender.model_copy(update={"name": profile_name[:300]})
    to = params.get("To")
    recipients = (_phone(to, "To")[0],) if to and to.strip() else ()
    text = params.get("Body") or ""
    num_media = params.integer("NumMedia", maximum=MAX_MEDIA)

    meta: dict[str, Any] = {
        key: params.get(name) for name, key in _META_FIELDS.items() if params.get(name)
    }
    for name, key in _INT_META_FIELDS.items():
        if params.get(name) is not None:
            meta[key] = params.integer(name)
    if channel is not None:
        meta["twilio_channel"] = channel
    consent = _consent(text, params.get("OptOutType"), meta)

    media = [_media_item(params, index) for index in range(num_media)]
    attachments, skipped = await download_all(client, settings, media)
    if skipped:
        meta["media_skipped"] = skipped
    return [
        InboundMessage(
            provider_id=sid,
            sender=sender,
            recipients=recipients,
            text=text,
            attachments=tuple(attachments),
            consent=consent,
            meta=meta,
            raw=params.as_dict(),
        )
    ]


def _consent(text: str, opt_out_type: str | None, meta: dict[str, Any]) -> Consent | None:
    """STOP/START/HELP as Twilio recognises them: the whole body is one keyword, any case.

    ``OptOutType`` (sent when Advanced Opt-Out is on) is Twilio's own verdict, which also
    covers custom and localised keywords, so it wins over our keyword lists.
    """
    kind = (opt_out_type or "").strip().upper()
    keyword = text.strip().upper()
    if not kind:
        if keyword in OPT_OUT_KEYWORDS:
            kind = "STOP"
        elif keyword in OPT_IN_KEYWORDS:
            kind = "START"
        elif keyword in HELP_KEYWORDS:
            kind = "HELP"
    if not kind:
        return None
    meta["keyword"] = keyword[:50]
    if kind == "STOP":
        return Consent.OPT_OUT
    if kind == "START":
        return Consent.OPT_IN
    if kind == "HELP":
        meta["help"] = True
    return None


# --- media ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaItem:
    index: int
    url: str
    declared_type: str | None


def _media_item(params: Params, index: int) -> MediaItem:
    url = params.required(f"MediaUrl{index}")
    declared = params.get(f"MediaContentType{index}")
    declared = declared.split(";")[0].strip().lower() if declared else None
    return MediaItem(index, url, declared or None)


class MediaSkipped(Exception):
    """A media item we will not take; the reason goes into the message's meta."""


async def download_all(
    client: httpx.AsyncClient, settings: TwilioSettings, items: list[MediaItem]
) -> tuple[list[Attachment], list[dict[str, Any]]]:
    """Download every item concurrently; keep the message order of the ones we took."""
    results: list[Attachment | str | None] = [None] * len(items)

    async def one(position: int, item: MediaItem) -> None:
        try:
            with anyio.fail_after(settings.media_timeout):
                results[position] = await fetch_media(client, settings, item)
        except MediaSkipped as exc:
            results[position] = str(exc)
        except TimeoutError:
            results[position] = f"download timed out after {settings.media_timeout:g} s"
        except httpx.HTTPError as exc:
            results[position] = f"download failed: {type(exc).__name__}"

    async with anyio.create_task_group() as tg:
        for position, item in enumerate(items):
            tg.start_soon(one, position, item)
    attachments = [r for r in results if isinstance(r, Attachment)]
    skipped = [
        {
            "index": item.index,
            "url": item.url,
            "content_type": item.declared_type,
            "reason": result,
        }
        for item, result in zip(items, results, strict=True)
        if isinstance(result, str)
    ]
    return attachments, skipped


def _check_url(settings: TwilioSettings, url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    base = urlsplit(settings.base_url)
    plain_http_ok = base.scheme == "http" and host == base.hostname
    if parts.scheme != "https" and not plain_http_ok:
        raise MediaSkipped("media URL is not https")
    if not settings.media_host_allowed(host):
        raise MediaSkipped(f"host {host!r} is not a Twilio media host")
    return host


async def fetch_media(
    client: httpx.AsyncClient, settings: TwilioSettings, item: MediaItem
) -> Attachment:
    """Stream one media item, stopping as soon as it is over ``media_max_bytes``.

    Credentials go only to the first URL (a Twilio host). Twilio answers it with a redirect
    to a pre-signed CDN URL, which is followed without credentials.
    """
    if item.declared_type and not settings.media_type_allowed(item.declared_type):
        raise MediaSkipped(f"content type {item.declared_type!r} is not allowed")
    _check_url(settings, item.url)
    url = item.url
    auth: tuple[str, str] | None = settings.rest_credentials()
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request("GET", url)
        response = await client.send(request, stream=True, auth=auth)
        try:
            if response.is_redirect:
                location = response.headers.get("location", "")
                target = urljoin(url, location)
                if not location or urlsplit(target).scheme != "https":
                    raise MediaSkipped("Twilio redirected the media to a non-https URL")
                url, auth = target, None
                continue
            return await _read_media(response, settings, item)
        finally:
            await response.aclose()
    raise MediaSkipped("too many redirects")


async def _read_media(
    response: httpx.Response, settings: TwilioSettings, item: MediaItem
) -> Attachment:
    if response.status_code != 200:
        raise MediaSkipped(f"Twilio answered HTTP {response.status_code}")
    header_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    content_type = header_type or item.declared_type or "application/octet-stream"
    if not settings.media_type_allowed(content_type):
        raise MediaSkipped(f"content type {content_type!r} is not allowed")
    limit = settings.media_max_bytes
    declared_length = response.headers.get("content-length", "")
    if declared_length.isdigit() and int(declared_length) > limit:
        raise MediaSkipped(f"larger than the {limit} byte limit ({declared_length} bytes)")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            raise MediaSkipped(f"larger than the {limit} byte limit")
        chunks.append(chunk)
    return Attachment(
        filename=media_filename(item.url, content_type, item.index),
        content_type=content_type,
        data=b"".join(chunks),
    )


def media_filename(url: str, content_type: str, index: int) -> str:
    """``ME…`` sid from the media URL plus an extension from the type: stable and unique."""
    stem = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or f"media{index}"
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    extension = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ""
    return f"{stem}{extension}"


# --- status callbacks -------------------------------------------------------------------------


def parse_status(
    account: Account[TwilioSettings], request: WebhookRequest | PolledBatch
) -> list[StatusUpdate]:
    params = checked_params(account.settings, request)
    _check_account(account.settings, params)
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid or not sid.strip():
        raise MalformedPayload("the status callback has no MessageSid")
    word = params.get("MessageStatus") or params.get("SmsStatus")
    if not word or not word.strip():
        raise MalformedPayload("the status callback has no MessageStatus")
    code = (params.get("ErrorCode") or "").strip() or None
    if code is not None and (len(code) > 20 or not code.isdigit()):
        raise MalformedPayload(f"ErrorCode is not a Twilio error code: {code[:40]!r}")
    return [
        StatusUpdate(
            provider_id=sid.strip()[:300],
            status=map_status(word, STATUS_TABLE),
            raw_status=word.strip()[:100],
            error_code=code,
            error_message=error_meaning(code),
            raw=params.as_dict(),
        )
    ]
