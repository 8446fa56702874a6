"""Sending through the send hook: the exact request, every failure class, pooled clients."""

from __future__ import annotations

import base64
import email.utils
import gc
import gzip
import json
import time
import weakref
import zlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import respx
from aiohttp import web
from sms_twilio_samples import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    AUTH_TOKEN,
    CUSTOMER,
    OUR_NUMBER,
    SERVICE_SID,
    account,
    load_with,
    message_resource,
    message_sid,
    messages_path,
    mock_transport,
    outbound,
    rest_error,
    route_send,
    serving,
)

from tidings import (
    Address,
    Attachment,
    DeliveryStatus,
    OutboundMessage,
    PermanentSendError,
    TransientSendError,
)
from tidings.plugins import ChannelHandle
from tidings_sms_twilio import TwilioSms
from tidings_sms_twilio.send import Messages, encode_form, retry_after_seconds
from tidings_sms_twilio.transport import Http11Transport


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_mocked=True)


@pytest.fixture
async def channel(router: respx.Router) -> AsyncIterator[TwilioSms]:
    ch = TwilioSms(transport=mock_transport(router))
    yield ch
    await ch.aclose()


@pytest.fixture
def handle(channel: TwilioSms) -> ChannelHandle:
    return load_with(channel).channel("sms_twilio")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _form(route: respx.Route) -> list[tuple[str, str]]:
    return parse_qsl(route.calls.last.request.content.decode(), keep_blank_values=True)


@pytest.mark.anyio
async def test_send_sms(handle: ChannelHandle, router: respx.Router) -> None:
    route = route_send(router)
    result = await handle.send(account(), outbound("Your order has shipped."))
    request = route.calls.last.request
    assert request.url == f"https://api.twilio.com{messages_path()}"
    assert request.headers["authorization"] == _basic(ACCOUNT_SID, AUTH_TOKEN)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["user-agent"].startswith("tidings-sms-twilio/")
    assert _form(route) == [
        ("To", CUSTOMER),
        ("From", OUR_NUMBER),
        ("Body", "Your order has shipped."),
        ("StatusCallback", "https://tidings.example.com/webhooks/twilio-main/status"),
    ]
    assert result.provider_id == message_sid(42)
    assert (result.status, result.raw_status, result.segments) == (
        DeliveryStatus.QUEUED,
        "queued",
        1,
    )
    assert result.raw == message_resource()


@pytest.mark.anyio
async def test_send_mms_with_service_and_api_key(
    handle: ChannelHandle, router: respx.Router
) -> None:
    acct = account(
        from_number=None,
        messaging_service_sid=SERVICE_SID,
        api_key_sid=API_KEY_SID,
        api_key_secret=API_KEY_SECRET,
    )
    route = route_send(
        router, json=message_resource("MM" + "1" * 32, status="accepted", num_segments="2")
    )
    media = ["https://files.example.com/a.jpg", "https://files.example.com/b.png"]
    result = await handle.send(acct, outbound("Photos: 😀", media=media))
    assert route.calls.last.request.headers["authorization"] == _basic(API_KEY_SID, API_KEY_SECRET)
    assert _form(route) == [
        ("To", CUSTOMER),
        ("MessagingServiceSid", SERVICE_SID),
        ("Body", "Photos: 😀"),
        ("MediaUrl", media[0]),
        ("MediaUrl", media[1]),
        ("StatusCallback", "https://tidings.example.com/webhooks/twilio-main/status"),
    ]
    assert (result.provider_id, result.status, result.segments) == (
        "MM" + "1" * 32,
        DeliveryStatus.QUEUED,
        2,
    )


@pytest.mark.anyio
async def test_base_url_is_configurable(handle: ChannelHandle, router: respx.Router) -> None:
    acct = account(base_url="https://api.dublin.ie1.twilio.com/")
    route = route_send(router, base="https://api.dublin.ie1.twilio.com")
    await handle.send(acct, outbound())
    assert route.called


# --- failures ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_429_with_retry_after_seconds(handle: ChannelHandle, router: respx.Router) -> None:
    route_send(
        router,
        status_code=429,
        json=rest_error(20429, "Too Many Requests", 429),
        headers={"Retry-After": "17"},
    )
    with pytest.raises(TransientSendError) as info:
        await handle.send(account(), outbound())
    assert (info.value.code, info.value.retry_after) == ("20429", 17.0)
    assert info.value.reason == "Too Many Requests"


@pytest.mark.anyio
async def test_429_with_retry_after_date_and_no_body(
    handle: ChannelHandle, router: respx.Router
) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    route_send(router, status_code=429, json={}, headers={"Retry-After": when})
    with pytest.raises(TransientSendError) as info:
        await handle.send(account(), outbound())
    assert info.value.code == "429"
    assert info.value.retry_after is not None
    assert 110 <= info.value.retry_after <= 121


@pytest.mark.anyio
async def test_error_20429_is_transient_whatever_the_http_status(
    handle: ChannelHandle, router: respx.Router
) -> None:
    route_send(router, status_code=400, json=rest_error(20429, "Too Many Requests", 400))
    with pytest.raises(TransientSendError) as info:
        await handle.send(account(), outbound())
    assert (info.value.code, info.value.retry_after) == ("20429", None)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_transient(handle: ChannelHandle, router: respx.Router, status: int) -> None:
    route_send(router, status_code=status, json=rest_error(20500, "Internal Server Error", status))
    with pytest.raises(TransientSendError) as info:
        await handle.send(account(), outbound())
    assert info.value.code == "20500"


@pytest.mark.anyio
async def test_5xx_html_body(handle: ChannelHandle, router: respx.Router) -> None:
    router.post(f"https://api.twilio.com{messages_path()}").mock(
        return_value=httpx.Response(502, text="<html>Bad Gateway</html>")
    )
    with pytest.raises(TransientSendError) as info:
        await handle.send(account(), outbound())
    assert (info.value.code, info.value.reason) == ("502", "Twilio answered HTTP 502")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("read"), httpx.ConnectTimeout("connect"), httpx.ConnectError("refused")],
)
async def test_timeouts_and_connection_errors_are_transient(
    handle: ChannelHandle, router: respx.Router, error: Exception
) -> None:
    route_send(router, side_effect=error)
    with pytest.raises(TransientSendError) as info:
        await handle.send(account(), outbound())
    assert type(error).__name__ in info.value.reason
    assert AUTH_TOKEN not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "message"),
    [
        (21211, "The 'To' number +4860010 is not a valid phone number."),
        (21610, "Attempt to send to unsubscribed recipient"),
        (21614, "'To' number is not a valid mobile number"),
        (30006, "Landline or unreachable carrier"),
        (20003, "Authenticate"),
    ],
)
async def test_4xx_is_permanent_with_twilios_code_and_message(
    handle: ChannelHandle, router: respx.Router, code: int, message: str
) -> None:
    status = 401 if code == 20003 else 400
    route_send(router, status_code=status, json=rest_error(code, message, status))
    with pytest.raises(PermanentSendError) as info:
        await handle.send(account(), outbound())
    assert (info.value.code, info.value.reason) == (str(code), message)


@pytest.mark.anyio
async def test_201_without_sid_is_not_retried(handle: ChannelHandle, router: respx.Router) -> None:
    route_send(router, json={"status": "queued"})
    with pytest.raises(PermanentSendError, match="without a message sid"):
        await handle.send(account(), outbound())


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("message", "words"),
    [
        (
            OutboundMessage(
                id="m", to=(Address.phone(CUSTOMER), Address.phone("+48600100201")), text="x"
            ),
            "exactly one number",
        ),
        (OutboundMessage(id="m", to=(Address.email("a@b.example"),), text="x"), "phone number"),
        (outbound("x" * 1601), "1600"),
        (outbound(""), "nothing to send"),
        (
            OutboundMessage(
                id="m",
                to=(Address.phone(CUSTOMER),),
                attachments=(Attachment(filename="a.jpg", data=b"jpg"),),
            ),
            "no public URL",
        ),
        (outbound("x", media=[f"https://f.example/{i}.jpg" for i in range(11)]), "at most 10"),
    ],
)
async def test_unsendable_messages_never_reach_twilio(
    handle: ChannelHandle, router: respx.Router, message: OutboundMessage, words: str
) -> None:
    route = route_send(router)
    with pytest.raises(PermanentSendError, match=words):
        await handle.send(account(), message)
    assert not route.called


# --- pooled clients ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_client_per_account_reused(router: respx.Router) -> None:
    made: list[httpx.AsyncBaseTransport] = []

    def factory() -> httpx.AsyncBaseTransport:
        made.append(mock_transport(router))
        return made[-1]

    channel = TwilioSms(transport=factory)
    handle = load_with(channel).channel("sms_twilio")
    route_send(router)
    a, b = account("a"), account("b")
    try:
        for _ in range(3):
            await handle.send(a, outbound())
        await handle.send(b, outbound())
        assert len(made) == 2  # one transport (connection pool) per account
        assert await channel.client(a) is await channel.client(a)
        assert await channel.client(a) is not await channel.client(b)
        # New settings for an account: a new client, the old one closed.
        old = await channel.client(a)
        changed = account("a", read_timeout=5)
        await handle.send(changed, outbound())
        assert await channel.client(changed) is not old
        assert old.is_closed
        assert len(made) == 3
    finally:
        await channel.aclose()
    assert (await channel.client(a)) is not None  # usable again after aclose
    await channel.aclose()


@pytest.mark.anyio
async def test_cookies_are_not_kept(
    channel: TwilioSms, handle: ChannelHandle, router: respx.Router
) -> None:
    """An API client with fixed credentials has no session: a Set-Cookie changes nothing."""
    route = route_send(router, headers={"Set-Cookie": "session=abc; Path=/"})
    await handle.send(account(), outbound())
    await handle.send(account(), outbound())
    assert "cookie" not in route.calls.last.request.headers
    assert not (await channel.client(account())).cookies


@pytest.fixture
async def local_twilio() -> AsyncIterator[tuple[str, list[tuple[str, int]]]]:
    """A local Twilio-shaped Messages endpoint over real TCP; records each request's peer."""
    peers: list[tuple[str, int]] = []

    async def create(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != _basic(ACCOUNT_SID, AUTH_TOKEN):
            return web.json_response(rest_error(20003, "Authenticate", 401), status=401)
        form = await request.post()
        peers.append(request.transport.get_extra_info("peername")[:2])  # type: ignore[union-attr]
        sid = message_sid(len(peers))
        return web.json_response(message_resource(sid, body=str(form.get("Body", ""))), status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", create)
    async with serving(app) as url:
        yield url, peers


@pytest.mark.anyio
async def test_default_transport_keeps_connections_alive(
    local_twilio: tuple[str, list[tuple[str, int]]],
) -> None:
    """The real default transport (aiohttp) against a real server: one connection reused."""
    base, peers = local_twilio
    channel = TwilioSms()
    handle = load_with(channel).channel("sms_twilio")
    try:
        acct = account("a", base_url=base)
        results = [await handle.send(acct, outbound(f"n{i}")) for i in range(5)]
        assert [r.provider_id for r in results] == [message_sid(i) for i in range(1, 6)]
        assert len(set(peers)) == 1
        await handle.send(account("b", base_url=base), outbound())
        assert len(set(peers)) == 2  # another account, its own pool
    finally:
        await channel.aclose()


class _Keeping(Http11Transport):
    """The default transport, keeping a weak reference to every answer it gives."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[weakref.ref[httpx.Response]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.answers.append(weakref.ref(response))
        return response


@pytest.mark.anyio
async def test_a_send_reads_the_answer_whole_and_leaves_no_cycle_behind(
    local_twilio: tuple[str, list[tuple[str, int]]],
) -> None:
    """The answer is read whole and closed, and freed by reference counting as soon as the
    send is done, not left for the cyclic collector (whose young collections the cycle
    httpx's ``AsyncClient.send`` makes had run every few dozen sends)."""
    base, _ = local_twilio
    acct = account(base_url=base)
    form = [("To", CUSTOMER), ("From", OUR_NUMBER), ("Body", "Hi")]
    transport = _Keeping()
    async with httpx.AsyncClient(transport=transport) as client:
        messages = Messages.of(client, acct.settings)
        await messages.post(form)  # the connection is opened and pooled
        gc.collect()
        gc.disable()
        try:
            answer = await messages.post(form)
            assert answer.status == 201
            assert answer.headers["content-type"] == "application/json; charset=utf-8"
            assert answer.json()["sid"] == message_sid(2)
            assert json.loads(answer.body) == answer.json()
            assert [ref() for ref in transport.answers] == [None, None]
        finally:
            gc.enable()


@pytest.mark.anyio
@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_an_answer_with_a_content_coding_is_decoded(coding: str) -> None:
    """Twilio may compress its answer (the client asks for gzip): httpx decodes it."""
    resource = message_resource(message_sid(1))
    raw = json.dumps(resource).encode()
    packed = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)

    async def answer(request: httpx.Request) -> httpx.Response:
        stream = httpx.ByteStream(packed)  # unread, as the default transport answers
        headers = {"Content-Encoding": coding, "Content-Type": "application/json"}
        return httpx.Response(201, headers=headers, stream=stream)

    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=transport) as client:
        messages = Messages.of(client, account().settings)
        sent = await messages.post([("To", CUSTOMER), ("From", OUR_NUMBER), ("Body", "Hi")])
    assert (sent.status, sent.json()) == (201, resource)


def test_the_form_is_encoded_as_urlencode_does_with_repeating_pairs_encoded_once() -> None:
    known: dict[tuple[str, str], str] = {}
    callback = "https://tidings.example.com/webhooks/twilio-main/status?a=1&b=ü"
    forms = [
        [("To", "+48600100200"), ("From", OUR_NUMBER), ("Body", "Zażółć & = + ? % ~ 😀\n"),
         ("MediaUrl", "https://example.com/a b.png"), ("StatusCallback", callback)],
        [("To", "+48600100201"), ("MessagingServiceSid", SERVICE_SID), ("Body", "a+b=c"),
         ("StatusCallback", callback)],
    ]  # fmt: skip
    for form in forms * 2:
        assert encode_form(form, known) == urlencode(form).encode("ascii")
    assert set(known) == {("From", OUR_NUMBER), ("MessagingServiceSid", SERVICE_SID),
                          ("StatusCallback", callback)}  # fmt: skip


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("5", now=now) == 5.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(date, now=now) == 30.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds(past, now=now) == 0.0
