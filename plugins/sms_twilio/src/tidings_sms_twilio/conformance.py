"""The Twilio channel's conformance suite: what ``tidings conformance sms_twilio`` runs.

Shipped inside the package (entry point ``tidings.conformance``) so a deployment can check
the distribution it installed; needs ``tidings-sms-twilio[conformance]``. Requests follow
Twilio's documentation: the incoming-message webhook and status-callback parameters
(form-encoded POSTs), the Message resource and the REST error object. Signatures are
computed here with the documented algorithm (URL, then every parameter name and value in
name order, HMAC-SHA1 under the auth token, base64), not with the plugin's own code, so a
passing suite shows the plugin agrees with Twilio rather than with itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

import httpx
import pytest

from tidings import Account, Address, DeliveryStatus, WebhookRequest
from tidings.testing.conformance import (
    BadSettings,
    ChannelConformance,
    ExpectedAttachment,
    ExpectedMessage,
    ExpectedStatus,
    InboundSample,
    MalformedSample,
    SendScenario,
    StatusSample,
    Unsignable,
)

pytest_plugins = ["tidings.testing.conformance"]

ACCOUNT_SID = "AC" + "5e1f0a2b3c4d5e6f" * 2
AUTH_TOKEN = "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a"  # noqa: S105 (a test value, not a secret)
OUR_NUMBER = "+15017122661"
CUSTOMER = "+48600100200"
SERVICE_SID = "MG" + "00112233445566778899aabbccddeeff"
API = "https://api.twilio.com"
MESSAGES = f"{API}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
SIGNATURE = "x-twilio-signature"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))

# Twilio's Message status values and what an agent is told.
STATUS_WORDS: Mapping[str, DeliveryStatus] = {
    "accepted": DeliveryStatus.QUEUED,
    "scheduled": DeliveryStatus.QUEUED,
    "queued": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.QUEUED,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    "read": DeliveryStatus.READ,
    "canceled": DeliveryStatus.FAILED,
    "received": DeliveryStatus.UNKNOWN,  # describes inbound messages, never one of ours
}


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


def twilio_signature(token: str, url: str, pairs: Sequence[tuple[str, str]]) -> str:
    data = url + "".join(name + value for name, value in sorted(pairs))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def form(account: Account[Any], endpoint: str, params: Mapping[str, str]) -> WebhookRequest:
    """A form POST as Twilio sends it (unsigned: the suite signs it with ``sign``)."""
    return WebhookRequest(
        method="POST",
        url=account.webhook_url(endpoint),
        endpoint=endpoint,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": "TwilioProxy/1.1",
            "i-twilio-idempotency-token": "8a3f2c1e-0000-4000-8000-00000000c0f0",
        },
        body=urlencode(list(params.items())).encode(),
    )


def incoming(message_sid: str, body: str, **extra: str) -> dict[str, str]:
    """The incoming-message webhook's documented parameters."""
    return {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": message_sid,
        "NumMedia": "0",
        "ToCity": "SAN FRANCISCO",
        "FromZip": "",
        "SmsSid": message_sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "PL",
        "To": OUR_NUMBER,
        "MessagingServiceSid": SERVICE_SID,
        "ToZip": "94105",
        "NumSegments": "1",
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": CUSTOMER,
        "ApiVersion": "2010-04-01",
        **extra,
    }


def callback(message_sid: str, status: str, **extra: str) -> dict[str, str]:
    """A status callback's parameters as Twilio posts them to StatusCallback."""
    return {
        "SmsSid": message_sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": CUSTOMER,
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": OUR_NUMBER,
        "ApiVersion": "2010-04-01",
        **extra,
    }


def media_url(message_sid: str, n: int) -> str:
    return f"{API}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/{sid('ME', n)}"


def serve_media(router: Any, url: str, content: bytes, content_type: str) -> None:
    """A media URL as Twilio serves it: a redirect to a short-lived CDN address."""
    cdn = f"https://s3-external-1.amazonaws.com/media.twiliocdn.com/{ACCOUNT_SID}/{url[-8:]}"
    router.get(url).respond(307, headers={"location": cdn})
    router.get(cdn).respond(200, content=content, headers={"content-type": content_type})


def resource(message_sid: str, status: str = "queued") -> dict[str, Any]:
    """The Message resource ``POST …/Messages.json`` answers with (201)."""
    return {
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": "Hello from tidings",
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": None,
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": OUR_NUMBER,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": message_sid,
        "status": status,
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media.json"
        },
        "to": CUSTOMER,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}.json",
    }


def rest_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def answer(status: int, body: Any = None, **headers: str) -> Callable[[Any], None]:
    def arrange(router: Any) -> None:
        response = (
            httpx.Response(status, json=body, headers=headers)
            if body is not None
            else httpx.Response(status, text="<html>Service Unavailable</html>", headers=headers)
        )
        router.post(MESSAGES).mock(return_value=response)

    return arrange


class TestTwilioConformance(ChannelConformance):
    plugin = "sms_twilio"
    channel_name = "sms_twilio"
    signature_headers = (SIGNATURE,)
    outbound_media_by_url = True  # Twilio fetches MMS media from MediaUrl

    @pytest.fixture
    def account_settings(self) -> Mapping[str, Any]:
        return {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": OUR_NUMBER}

    @pytest.fixture
    def bad_settings(self) -> Sequence[BadSettings]:
        return [
            BadSettings("account sid of another kind", {"account_sid": SERVICE_SID}, "account_sid"),
            BadSettings("number with spaces", {"from_number": "+48 600 100 200"}, "from_number"),
            BadSettings(
                "number and service both",
                {"messaging_service_sid": SERVICE_SID},
                "messaging_service_sid",
            ),
            BadSettings("empty auth token", {"auth_token": "  "}, "auth_token"),
            BadSettings("media host with a path", {"media_hosts": ["x.test/a"]}, "media_hosts"),
        ]

    @pytest.fixture
    def sign(self) -> Callable[[WebhookRequest], WebhookRequest]:
        def sign(request: WebhookRequest) -> WebhookRequest:
            content_type = (request.header("content-type") or "").split(";")[0].strip()
            url, pairs = request.url, []
            if content_type == "application/json":
                # JSON bodies: the URL carries the body's SHA-256 and is signed alone.
                digest = hashlib.sha256(request.body).hexdigest()
                url += ("&" if "?" in url else "?") + urlencode({"bodySHA256": digest})
            else:
                try:
                    text = request.body.decode("utf-8")
                    pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
                except (UnicodeDecodeError, ValueError):
                    raise Unsignable("Twilio signs the parameters of a form") from None
            signature = twilio_signature(AUTH_TOKEN, url, pairs)
            headers = {**request.headers, SIGNATURE: signature}
            return request.model_copy(update={"url": url, "headers": headers})

        return sign

    @pytest.fixture
    def inbound_samples(self, account: Account[Any]) -> Sequence[InboundSample]:
        key = f"phone:{CUSTOMER}"
        sms, stop, mms = sid("SM", 1), sid("SM", 2), sid("MM", 3)
        media = {
            "NumMedia": "2",
            "MediaContentType0": "image/jpeg",
            "MediaUrl0": media_url(mms, 1),
            "MediaContentType1": "image/png",
            "MediaUrl1": media_url(mms, 2),
        }

        def arrange(router: Any) -> None:
            serve_media(router, media_url(mms, 1), JPEG, "image/jpeg")
            serve_media(router, media_url(mms, 2), PNG, "image/png")

        return [
            InboundSample(
                "sms",
                form(account, "inbound", incoming(sms, "Hello, is my order shipped?")),
                (ExpectedMessage(key, sms, "Hello, is my order shipped?"),),
            ),
            InboundSample(
                "opt-out keyword",
                form(account, "inbound", incoming(stop, "STOP")),
                (ExpectedMessage(key, stop, "STOP"),),
            ),
            InboundSample(
                "mms with two media",
                form(account, "inbound", incoming(mms, "Look", **media)),
                (
                    ExpectedMessage(
                        key,
                        mms,
                        "Look",
                        attachments=(
                            ExpectedAttachment(f"{sid('ME', 1)}.jpg", "image/jpeg", len(JPEG)),
                            ExpectedAttachment(f"{sid('ME', 2)}.png", "image/png", len(PNG)),
                        ),
                    ),
                ),
                arrange=arrange,
            ),
        ]

    @pytest.fixture
    def malformed_samples(self, account: Account[Any]) -> Sequence[MalformedSample]:
        no_sender = incoming(sid("SM", 9), "hi")
        del no_sender["From"]
        no_sid = callback(sid("SM", 9), "sent")
        del no_sid["MessageSid"], no_sid["SmsSid"]
        return [
            MalformedSample("message without From", form(account, "inbound", no_sender)),
            MalformedSample(
                "NumMedia not a number",
                form(account, "inbound", incoming(sid("SM", 9), "hi", NumMedia="two")),
            ),
            MalformedSample("status without MessageSid", form(account, "status", no_sid)),
        ]

    @pytest.fixture
    def recipient(self) -> Address:
        return Address.phone(CUSTOMER)

    @pytest.fixture
    def send_success(self) -> SendScenario:
        return SendScenario(
            "queued",
            answer(201, resource(sid("SM", 42))),
            provider_id=sid("SM", 42),
            status=DeliveryStatus.QUEUED,
        )

    @pytest.fixture
    def send_transient(self) -> Sequence[SendScenario]:
        too_many = rest_error(20429, "Too Many Requests", 429)
        internal = rest_error(20500, "Internal Server Error", 500)
        return [
            SendScenario(
                "rate limited",
                answer(429, too_many, **{"Retry-After": "30"}),
                code="20429",
                retry_after=30.0,
            ),
            SendScenario("internal error", answer(500, internal), code="20500"),
            SendScenario("unavailable", answer(503), code="503"),
        ]

    @pytest.fixture
    def send_permanent(self) -> Sequence[SendScenario]:
        invalid = rest_error(21211, "The 'To' number +4860010 is not a valid phone number.", 400)
        stopped = rest_error(21610, "Attempt to send to unsubscribed recipient", 400)
        return [
            SendScenario("invalid number", answer(400, invalid), code="21211"),
            SendScenario("recipient replied STOP", answer(400, stopped), code="21610"),
        ]

    @pytest.fixture
    def sent_attachments(self) -> Callable[[Any], Sequence[str]]:
        def read(router: Any) -> list[str]:
            sent = parse_qs(router.calls.last.request.content.decode())
            return list(sent.get("MediaUrl", []))

        return read

    @pytest.fixture
    def status_words(self) -> Mapping[str, DeliveryStatus]:
        return STATUS_WORDS

    @pytest.fixture
    def sent_provider_id(self) -> Callable[[int], str]:
        return lambda n: sid("SM", 100 + n)

    @pytest.fixture
    def status_report(self, account: Account[Any]) -> Callable[[str, str], WebhookRequest]:
        return lambda provider_id, word: form(account, "status", callback(provider_id, word))

    @pytest.fixture
    def status_samples(self, account: Account[Any]) -> Sequence[StatusSample]:
        gone = sid("SM", 200)
        report = callback(gone, "undelivered", ErrorCode="30003")
        return [
            StatusSample(
                "undelivered with an error code",
                form(account, "status", report),
                (ExpectedStatus(gone, DeliveryStatus.UNDELIVERED, "undelivered"),),
            )
        ]
