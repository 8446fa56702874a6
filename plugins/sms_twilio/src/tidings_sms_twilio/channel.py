"""The ``sms_twilio`` channel: SMS and MMS through Twilio Programmable Messaging.

HTTP goes through one ``httpx.AsyncClient`` per account, kept for the life of the channel
so sends reuse keep-alive connections to Twilio. httpx stays the API (respx can mock it);
the transport underneath is chosen here: by default our :class:`Http11Transport`, because
httpx's own connection pool spends several milliseconds of CPU per request once dozens of
sends are in flight, and aiohttp's request machinery about 0.3 ms, where ours spends under
a tenth of that (see the README's figures).
Pass ``transport=`` to use another one: a transport instance (shared by every account's
client — what tests do with respx) or a zero-argument factory (one transport per account).

Sends hand the client's transport a request prepared once per account
(``send.Messages``).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from tidings import (
    Account,
    AttachmentLimits,
    Capabilities,
    Channel,
    Endpoint,
    InboundMessage,
    OutboundMessage,
    PolledBatch,
    SendResult,
    StatusUpdate,
    Threading,
    WebhookReply,
    WebhookRequest,
    hookimpl,
)
from tidings_sms_twilio.receive import parse_inbound, parse_status
from tidings_sms_twilio.segments import count_segments
from tidings_sms_twilio.send import Messages, send_message
from tidings_sms_twilio.settings import TwilioSettings
from tidings_sms_twilio.transport import Http11Transport

TransportSpec = httpx.AsyncBaseTransport | Callable[[], httpx.AsyncBaseTransport]

TWIML_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

MMS_LIMITS = AttachmentLimits(
    max_count=10,
    max_bytes=5 * 1024 * 1024,
    content_types=("image/*", "video/*", "audio/*", "application/pdf", "text/vcard"),
)
"""Twilio takes up to 10 media URLs and 5 MB of media per message."""


def _user_agent() -> str:
    try:
        return f"tidings-sms-twilio/{version('tidings-sms-twilio')}"
    except PackageNotFoundError:
        return "tidings-sms-twilio"


def default_transport() -> httpx.AsyncBaseTransport:
    """Our HTTP/1.1 pool under the httpx API (the cheapest we measured)."""
    return Http11Transport(max_connections=100, keepalive_expiry=60)


class _NoJar(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing (shared safely: it never holds state)."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


class _NoCookies(httpx.Cookies):
    """No cookies, and no work looking for them in answers."""

    def __init__(self) -> None:
        super().__init__(_NoJar())

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _NoCookies()


class ApiClient(httpx.AsyncClient):
    """The pooled client: an ``httpx.AsyncClient`` that keeps no cookies.

    Twilio's REST API and media hosts hold no session state, and for every answer httpx
    otherwise wraps the request in a ``urllib`` request and the headers in an
    ``email.message`` to look for ``Set-Cookie`` — measured at about a tenth of the CPU of
    a whole send.
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise ValueError("the Twilio client keeps no cookies")


@dataclass
class _Pooled:
    client: httpx.AsyncClient
    messages: Messages
    settings: TwilioSettings
    loop: asyncio.AbstractEventLoop


class TwilioSms(Channel):
    """SMS/MMS through Twilio: webhooks ``inbound`` (messages) and ``status`` (callbacks)."""

    name = "sms_twilio"
    kind = "sms"
    settings_model = TwilioSettings
    capabilities = Capabilities(
        threading=Threading.ADDRESS,
        delivery_status=True,
        attachments=MMS_LIMITS,
        max_text_length=1600,
    )
    webhooks = {"inbound": Endpoint.MESSAGES, "status": Endpoint.STATUSES}

    def __init__(self, transport: TransportSpec | None = None) -> None:
        self._transport = transport
        self._pool: dict[str, _Pooled] = {}

    # --- HTTP clients ----------------------------------------------------------------------

    def _new_transport(self) -> httpx.AsyncBaseTransport:
        if self._transport is None:
            return default_transport()
        if isinstance(self._transport, httpx.AsyncBaseTransport):
            return self._transport
        return self._transport()

    async def client(self, account: Account[TwilioSettings]) -> httpx.AsyncClient:
        """The account's pooled client, created on first use and kept.

        A client is rebuilt when the account's settings change, or when it is used from a
        different event loop (its connections belong to the loop that opened them).
        """
        return (await self._pooled(account)).client

    async def _pooled(self, account: Account[TwilioSettings]) -> _Pooled:
        loop = asyncio.get_running_loop()
        pooled = self._pool.get(account.id)
        if (
            pooled is not None
            and pooled.loop is loop
            and (pooled.settings is account.settings or pooled.settings == account.settings)
        ):
            return pooled
        settings = account.settings
        client = ApiClient(
            transport=self._new_transport(),
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            headers={"User-Agent": _user_agent()},
            follow_redirects=False,
            trust_env=False,
        )
        fresh = _Pooled(client, Messages.of(client, settings), settings, loop)
        self._pool[account.id] = fresh
        if pooled is not None and pooled.loop is loop:
            await pooled.client.aclose()  # settings changed: drop the old connections
        return fresh

    async def aclose(self) -> None:
        """Close every pooled client (at shutdown)."""
        pool, self._pool = self._pool, {}
        for pooled in pool.values():
            await pooled.client.aclose()

    # --- channel hooks ---------------------------------------------------------------------

    @hookimpl
    async def receive(
        self, account: Account[TwilioSettings], request: WebhookRequest | PolledBatch
    ) -> Sequence[InboundMessage]:
        return await parse_inbound(account, request, await self.client(account))

    @hookimpl
    async def send(self, account: Account[TwilioSettings], message: OutboundMessage) -> SendResult:
        return await send_message((await self._pooled(account)).messages, account, message)

    @hookimpl
    async def delivery_status(
        self, account: Account[TwilioSettings], request: WebhookRequest | PolledBatch
    ) -> Sequence[StatusUpdate]:
        return parse_status(account, request)

    # --- answers and pre-send facts --------------------------------------------------------

    def reply(self, account: Account[Any], request: WebhookRequest) -> WebhookReply:
        """Empty TwiML: Twilio logs an error for an empty body, and we answer nothing."""
        return WebhookReply(body=TWIML_EMPTY, content_type="text/xml")

    def compose_info(self, account: Account[Any], message: OutboundMessage) -> dict[str, Any]:
        info: dict[str, Any] = dict(count_segments(message.text).as_dict())
        info["max_length"] = 1600
        info["too_long"] = len(message.text) > 1600
        if message.attachments:
            info["mms"] = True
        return info
