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

A send is one prepared ``httpx.Request`` handed to the account's transport
(:class:`Messages`). Everything that is the same for every send of an account — the URL,
the ``Authorization`` header, the client's default headers, the timeouts — is built once,
with the client; ``AsyncClient.post`` would merge and re-parse all of it and run the auth
flow for every message (about 0.1 ms of CPU each).

The request goes to the transport the client would pick for it, directly, not through
``AsyncClient.send``, and the answer's bytes are taken from the transport's stream. For a
JSON answer of a few hundred bytes, ``send`` (its auth and redirect loops, event hooks,
request contexts, the stream bound back to the response) and reading the body through
httpx's decoder and chunker generators cost about 80 µs of CPU a message; the direct call
and the stream's bytes about 10. In the outbox worker that was a sixth of its CPU per SMS
(``bench/README.md``, session 11). Nothing ``send`` adds applies here: the client has no
auth, follows no redirects (the Messages resource answers 201 or an error) and keeps no
cookies, and the timeouts travel in the request's extensions. A transport given to the
channel (respx's in tests), a mounted one and ``respx.mock(using="httpx")`` (which the
conformance suite uses) all still see every send, and an answer with a content coding is
still decoded by httpx.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple
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


class Answer(NamedTuple):
    """Twilio's answer to a send, read whole: all that classifying it looks at."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; ``{}`` if it is not one."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


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

    async def post(self, form: list[tuple[str, str]]) -> Answer:
        """POST ``form`` and read the answer whole (a JSON object of a few hundred bytes).

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
        # The transport ``AsyncClient.send`` would use: the client's own, or a mounted one,
        # or respx's when ``respx.mock(using="httpx")`` patches this very method.
        transport = self.client._transport_for_url(self.url)
        response = await transport.handle_async_request(request)
        try:
            return Answer(response.status_code, response.headers, await _body(response))
        finally:
            await response.aclose()


async def _body(response: httpx.Response) -> bytes:
    """The answer's body, as ``Response.aread`` would give it."""
    if response.is_stream_consumed:  # read already (``httpx.MockTransport``'s answers are)
        return response.content
    if any(name.lower() == b"content-encoding" for name, _ in response.headers.raw):
        return await response.aread()  # httpx's decoders
    # No content coding: the bytes of the transport's stream are the body. ``aread`` and
    # ``aiter_raw`` would pass them through generators, chunkers and request contexts (30
    # and 12 µs of CPU for a Twilio answer); ``post`` closes the response, and the stream.
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)  # a transport's answer
    return b"".join([part async for part in stream])


async def send_message(
    messages: Messages, account: Account[TwilioSettings], message: OutboundMessage
) -> SendResult:
    form = build_form(account, message)
    try:
        answer = await messages.post(form)
    except httpx.TimeoutException as exc:
        raise TransientSendError(f"Twilio did not answer in time ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise TransientSendError(f"cannot reach Twilio ({type(exc).__name__})") from None
    if answer.status in (200, 201):
        return _result(answer)
    raise classify_error(answer)


def _result(answer: Answer) -> SendResult:
    data = answer.json()
    sid = data.get("sid")
    if not isinstance(sid, str) or not sid:
        # Twilio may have created the message: retrying could send it twice.
        raise PermanentSendError(
            f"Twilio answered HTTP {answer.status} without a message sid; "
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


def classify_error(answer: Answer) -> TransientSendError | PermanentSendError:
    data = answer.json()
    raw_code = data.get("code")
    code = str(raw_code) if isinstance(raw_code, int | str) and str(raw_code) else None
    message = data.get("message") if isinstance(data.get("message"), str) else None
    reason = message or error_meaning(code) or f"Twilio answered HTTP {answer.status}"
    status = answer.status
    if status == 429 or code == RATE_LIMIT_CODE:
        return TransientSendError(
            reason,
            code=code or "429",
            retry_after=retry_after_seconds(answer.headers.get("retry-after")),
        )
    if status >= 500:
        return TransientSendError(
            reason,
            code=code or str(status),
            retry_after=retry_after_seconds(answer.headers.get("retry-after")),
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
