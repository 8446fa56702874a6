"""Reusable Twilio samples: accounts, signed webhook requests, REST answers, respx routes.

Payloads follow Twilio's documentation (incoming-message webhook parameters, status
callback parameters, the Message resource JSON and the REST error object); signatures are
computed with the documented algorithm, independently of the plugin's own code, so a test
that passes proves the plugin agrees with the algorithm rather than with itself. The
conformance suite can import these builders too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import respx
from aiohttp import web

from tidings import (
    Account,
    Address,
    Attachment,
    Channel,
    OutboundMessage,
    WebhookRequest,
    hookimpl,
)
from tidings.plugins import Plugins, load_plugins
from tidings_sms_twilio import TwilioSettings, TwilioSms

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6"
API_KEY_SID = "SK" + "fedcba9876543210" * 2
API_KEY_SECRET = "kS3cr3t-api-key-secret-value-000"
SERVICE_SID = "MG" + "00112233445566778899aabbccddeeff"
OUR_NUMBER = "+15017122661"
CUSTOMER = "+48600100200"
PUBLIC_URL = "https://tidings.example.com"
TWILIO_API = "https://api.twilio.com"

# Twilio's worked example on its "Webhooks security" page.
DOC_EXAMPLE_TOKEN = "12345"
DOC_EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_EXAMPLE_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_EXAMPLE_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def settings(**overrides: Any) -> TwilioSettings:
    data: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": OUR_NUMBER,
    }
    data.update(overrides)
    return TwilioSettings.model_validate({k: v for k, v in data.items() if v is not None})


def account(account_id: str = "twilio-main", **overrides: Any) -> Account[TwilioSettings]:
    return Account[TwilioSettings](
        id=account_id,
        channel="sms_twilio",
        project="support",
        settings=settings(**overrides),
        public_url=PUBLIC_URL,
    )


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """Twilio's algorithm, written out step by step (sort names, then a name's values)."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    data = url
    for name in sorted(grouped):
        for value in sorted(grouped[name]):
            data += name + value
    mac = hmac.new(token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _pairs(params: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, Mapping) else list(params)


def signed_request(
    acct: Account[TwilioSettings],
    endpoint: str,
    params: Mapping[str, str] | Sequence[tuple[str, str]],
    *,
    url: str | None = None,
    sign_url: str | None = None,
    token: str = AUTH_TOKEN,
    signature: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> WebhookRequest:
    """A form POST as Twilio sends it to ``acct``'s ``endpoint``, signed with ``token``.

    ``sign_url`` signs a different spelling of the URL than the one received (port tests);
    ``signature`` overrides the header ("" leaves it out).
    """
    pairs = _pairs(params)
    target = url or acct.webhook_url(endpoint)
    sig = twilio_signature(token, sign_url or target, pairs) if signature is None else signature
    all_headers = {
        "content-type": "application/x-www-form-urlencoded",
        "user-agent": "TwilioProxy/1.1",
        "i-twilio-idempotency-token": "4f1b2c3d-0000-4000-8000-000000000000",
    }
    if sig:
        all_headers["x-twilio-signature"] = sig
    all_headers.update(headers or {})
    return WebhookRequest(
        method="POST",
        url=target,
        endpoint=endpoint,
        headers=all_headers,
        body=urlencode(pairs).encode(),
    )


def message_sid(n: int = 1, prefix: str = "SM") -> str:
    return f"{prefix}{n:032x}"


def inbound_sms(
    body: str = "Hello, is my order shipped?",
    *,
    sid: str | None = None,
    sender: str = CUSTOMER,
    to: str = OUR_NUMBER,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The incoming-message webhook parameters for a plain SMS (Twilio's documented set)."""
    params = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": sid or message_sid(1),
        "NumMedia": "0",
        "ToCity": "SAN FRANCISCO",
        "FromZip": "",
        "SmsSid": sid or message_sid(1),
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "PL",
        "To": to,
        "MessagingServiceSid": SERVICE_SID,
        "ToZip": "94105",
        "NumSegments": "1",
        "MessageSid": sid or message_sid(1),
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    params.update(extra or {})
    return params


def media_url(n: int, msg: str | None = None) -> str:
    return (
        f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/"
        f"{msg or message_sid(7, 'MM')}/Media/{message_sid(n, 'ME')}"
    )


def inbound_mms(
    media: Sequence[tuple[str, str]], body: str = "", *, sid: str | None = None
) -> dict[str, str]:
    """An MMS: ``media`` is (MediaUrl, MediaContentType) per item, numbered from 0."""
    params = inbound_sms(body, sid=sid or message_sid(7, "MM"))
    params["NumMedia"] = str(len(media))
    for index, (url, content_type) in enumerate(media):
        params[f"MediaContentType{index}"] = content_type
        params[f"MediaUrl{index}"] = url
    return params


def status_callback(
    status: str, *, sid: str | None = None, error_code: str | None = None
) -> dict[str, str]:
    """A status callback's parameters as Twilio posts them to StatusCallback."""
    params = {
        "SmsSid": sid or message_sid(42),
        "SmsStatus": status,
        "MessageStatus": status,
        "To": CUSTOMER,
        "MessageSid": sid or message_sid(42),
        "AccountSid": ACCOUNT_SID,
        "From": OUR_NUMBER,
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        params["ErrorCode"] = error_code
    return params


def outbound(
    text: str = "Your order has shipped.",
    *,
    to: str = CUSTOMER,
    media: Sequence[str] = (),
    mid: str = "out-1",
) -> OutboundMessage:
    return OutboundMessage(
        id=mid,
        to=(Address.phone(to),),
        text=text,
        attachments=tuple(
            Attachment(filename=f"m{i}.jpg", content_type="image/jpeg", url=url)
            for i, url in enumerate(media)
        ),
    )


def message_resource(
    sid: str | None = None,
    *,
    status: str = "queued",
    body: str = "Your order has shipped.",
    num_segments: str = "1",
    num_media: str = "0",
) -> dict[str, Any]:
    """The 201 answer of ``POST …/Messages.json``: the Message resource."""
    sid = sid or message_sid(42)
    return {
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": None,
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": OUR_NUMBER,
        "num_media": num_media,
        "num_segments": num_segments,
        "messaging_service_sid": None,
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json"
        },
        "to": CUSTOMER,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
    }


def rest_error(code: int, message: str, status: int) -> dict[str, Any]:
    """Twilio's REST error object."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def messages_path(sid: str = ACCOUNT_SID) -> str:
    return f"/2010-04-01/Accounts/{sid}/Messages.json"


def route_send(
    router: respx.Router,
    *,
    status_code: int = 201,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    side_effect: Any = None,
    base: str = TWILIO_API,
) -> respx.Route:
    """Mock Twilio's Messages.json for the default account."""
    route = router.post(f"{base}{messages_path()}")
    if side_effect is not None:
        route.side_effect = side_effect
    else:
        route.return_value = httpx.Response(
            status_code, json=message_resource() if json is None else json, headers=headers
        )
    return route


def route_media(
    router: respx.Router,
    url: str,
    content: bytes,
    content_type: str,
    *,
    via_cdn: bool = True,
) -> respx.Route:
    """A Twilio media URL; like Twilio's it redirects to a pre-signed CDN URL by default."""
    found = httpx.Response(200, content=content, headers={"content-type": content_type})
    if not via_cdn:
        return router.get(url).mock(return_value=found)
    cdn = (
        f"https://s3-external-1.amazonaws.com/media.twiliocdn.com/{ACCOUNT_SID}/"
        + hashlib.sha256(url.encode()).hexdigest()
        + "?X-Amz-Signature=abc123"
    )
    router.get(cdn).mock(return_value=found)
    return router.get(url).mock(return_value=httpx.Response(307, headers={"location": cdn}))


class ChannelPlugin:
    """A plugin object registering one given channel (to inject a transport in tests)."""

    def __init__(self, channel: TwilioSms) -> None:
        self.channel = channel

    @hookimpl
    def register_channels(self) -> list[Channel]:
        return [self.channel]


def load_with(channel: TwilioSms) -> Plugins:
    """Plugins holding ``channel`` only, dispatched exactly as the core does."""
    return load_plugins(
        {}, extra=[("sms_twilio_under_test", ChannelPlugin(channel))], entry_points_enabled=False
    )


def mock_transport(router: respx.Router) -> httpx.MockTransport:
    """What a test passes as ``TwilioSms(transport=…)``: respx behind the real send code."""
    return httpx.MockTransport(router.async_handler)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served over real TCP on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
