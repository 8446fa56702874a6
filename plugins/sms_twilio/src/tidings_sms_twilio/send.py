"""Sending: one ``POST …/Messages.json`` per outbound message, failures classified.

Twilio answers ``201`` with the Message resource, or an error object
``{"code", "message", "more_info", "status"}``. What the outbox does next depends only on
the class of error we raise:

* transient (retried with backoff): HTTP 429 or error 20429, any 5xx, timeouts and
  connection errors; ``Retry-After`` (seconds or an HTTP date) becomes ``retry_after``;
* permanent (shown to the agent, never retried): every other 4xx — 21211 invalid number,
  21610 opted out, 21614 not a mobile, 30006 landline… — and messages we can tell are
  unsendable before calling Twilio (several recipients, a non-phone address, too long).

Twilio has no idempotency key for Messages, so ``message.id`` cannot be passed on; a read
timeout after the request left may mean Twilio did create the message.

A send is one prepared ``httpx.Request`` given to the account's pooled client
(:class:`Messages`). Everything that is the same for every send of an account — the URL,
the ``Authorization`` header, the client's default headers, the timeouts — is built once,
with the client; ``AsyncClient.post`` would merge and re-parse all of it and run the auth
flow for every message (about 0.1 ms of CPU each). The request still goes through
``AsyncClient.send``, so whatever is attached to the client (respx's mocks, event hooks)
sees every send.
"""

from __future__ import annotations

import base64
import email.utils
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import httpx

from tidings import (
    Account,
    AddressKind,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    TransientSendError,
    map_status,
)
from tidings_sms_twilio.settings import TwilioSettings
from tidings_sms_twilio.status import STATUS_TABLE, error_meaning

MAX_BODY = 1600
MAX_MEDIA = 10
RATE_LIMIT_CODE = "20429"


def messages_url(settings: TwilioSettings) -> str:
    return f"{settings.base_url}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"


def build_form(account: Account[TwilioSettings], message: OutboundMessage) -> list[tuple[str, str]]:
    """The form Twilio's Messages resource takes, or ``PermanentSendError`` if none fits."""
    settings = account.settings
    if len(message.to) != 1:
        raise PermanentSendError("an SMS goes to exactly one number; send one message each")
    (to,) = message.to
    if to.kind is not AddressKind.PHONE:
        raise PermanentSendError(f"an SMS goes to a phone number, not a {to.kind.value} address")
    if len(message.text) > MAX_BODY:
        raise PermanentSendError(f"the text is {len(message.text)} characters; Twilio takes 1600")
    media = []
    for attachment in message.attachments:
        if attachment.url is None:
            raise PermanentSendError(
                f"attachment {attachment.filename!r} has no public URL; Twilio fetches MMS "
                "media from a URL"
            )
        media.append(attachment.url)
    if len(media) > MAX_MEDIA:
        raise PermanentSendError(f"{len(media)} attachments; Twilio takes at most {MAX_MEDIA}")
    if not message.text and not media:
        raise PermanentSendError("nothing to send: no text and no media")
    form = [("To", to.value)]
    if settings.messaging_service_sid is not None:
        form.append(("MessagingServiceSid", settings.messaging_service_sid))
    else:
        assert settings.from_number is not None  # one of the two, by the settings' rules
        form.append(("From", settings.from_number))
    if message.text:
        form.append(("Body", message.text))
    form.extend(("MediaUrl", url) for url in media)
    form.append(("StatusCallback", account.webhook_url("status")))
    return form


_SAME_PER_ACCOUNT = frozenset({"From", "MessagingServiceSid", "StatusCallback"})
"""The form's fields whose value every send of an account repeats."""


def encode_form(form: list[tuple[str, str]], known: dict[tuple[str, str], str]) -> bytes:
    """``urlencode(form)``, the pairs every send of an account repeats encoded once.

    ``urlencode`` quotes every key and value anew: 13 µs for an SMS's four pairs, of which
    only ``To`` and ``Body`` change from send to send (3 µs for those two). ``known`` holds
    the encoded repeating pairs: a few per account."""
    parts = []
    for key, value in form:
        pair = known.get((key, value))
        if pair is None:
            pair = f"{quote_plus(key)}={quote_plus(value)}"
            if key in _SAME_PER_ACCOUNT:
                known[(key, value)] = pair
        parts.append(pair)
    return "&".join(parts).encode("ascii")


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` value HTTP Basic auth sends (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass(frozen=True)
class Messages:
    """One account's Messages resource: built once per pooled client, used by every send."""

    client: httpx.AsyncClient
    url: httpx.URL
    headers: httpx.Headers
    extensions: dict[str, Any]
    encoded: dict[tuple[str, str], str] = field(default_factory=dict, compare=False)
    """The account's repeating form pairs, encoded (``encode_form``)."""

    @classmethod
    def of(cls, client: httpx.AsyncClient, settings: TwilioSettings) -> Messages:
        """``client``'s default headers and timeouts, with the account's credentials and
        the ``Host`` httpx would add."""
        url = httpx.URL(messages_url(settings))
        headers = httpx.Headers({"Host": url.netloc.decode("ascii")})
        headers.update(client.headers)
        headers["Authorization"] = basic_authorization(*settings.rest_credentials())
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return cls(
            client=client,
            url=url,
            headers=headers,
            extensions={"timeout": client.timeout.as_dict()},
        )

    async def post(self, form: list[tuple[str, str]]) -> httpx.Response:
        """POST ``form``; the answer is read whole (a JSON object of a few hundred bytes).

        The body is given as a ready ``ByteStream`` with its ``Content-Length`` (and the
        prepared ``Host``): ``content=`` would have httpx sniff the content's type, add the
        same headers again and read the stream back (about 40 µs a send, against 5)."""
        body = encode_form(form, self.encoded)
        request = httpx.Request(
            "POST",
            self.url,
            headers=self.headers,
            stream=httpx.ByteStream(body),
            extensions=self.extensions,
        )
        request.headers["Content-Length"] = str(len(body))
        response = await self.client.send(request)
        # httpx binds a response's stream to the response (to stamp ``elapsed`` on close),
        # a reference cycle: every answer — about a dozen objects with its headers and
        # request — was left for the cyclic garbage collector, whose young collections then
        # ran every 25 sends or so. The answer is read and closed by now; its bytes as a
        # plain stream end the cycle, so reference counting frees it when the send is done.
        response.stream = httpx.ByteStream(response.content)
        return response


async def send_message(
    messages: Messages, account: Account[TwilioSettings], message: OutboundMessage
) -> SendResult:
    form = build_form(account, message)
    try:
        response = await messages.post(form)
    except httpx.TimeoutException as exc:
        raise TransientSendError(f"Twilio did not answer in time ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise TransientSendError(f"cannot reach Twilio ({type(exc).__name__})") from None
    if response.status_code in (200, 201):
        return _result(response)
    raise classify_error(response)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _result(response: httpx.Response) -> SendResult:
    data = _json(response)
    sid = data.get("sid")
    if not isinstance(sid, str) or not sid:
        # Twilio may have created the message: retrying could send it twice.
        raise PermanentSendError(
            f"Twilio answered HTTP {response.status_code} without a message sid; "
            "check the Twilio console before resending"
        )
    word = data.get("status") if isinstance(data.get("status"), str) else None
    return SendResult(
        provider_id=sid,
        status=map_status(word, STATUS_TABLE),
        raw_status=word,
        segments=_segments(data.get("num_segments")),
        raw=data,
    )


def _segments(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 1 else None


def classify_error(response: httpx.Response) -> TransientSendError | PermanentSendError:
    data = _json(response)
    raw_code = data.get("code")
    code = str(raw_code) if isinstance(raw_code, int | str) and str(raw_code) else None
    message = data.get("message") if isinstance(data.get("message"), str) else None
    reason = message or error_meaning(code) or f"Twilio answered HTTP {response.status_code}"
    status = response.status_code
    if status == 429 or code == RATE_LIMIT_CODE:
        return TransientSendError(
            reason,
            code=code or "429",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    if status >= 500:
        return TransientSendError(
            reason,
            code=code or str(status),
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    return PermanentSendError(reason, code=code or str(status))


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
