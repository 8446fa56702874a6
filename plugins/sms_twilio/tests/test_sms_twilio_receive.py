"""Inbound SMS and MMS through the receive hook, as the core calls it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
import respx
from sms_twilio_samples import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    AUTH_TOKEN,
    CUSTOMER,
    OUR_NUMBER,
    account,
    inbound_mms,
    inbound_sms,
    load_with,
    media_url,
    message_sid,
    mock_transport,
    route_media,
    signed_request,
    twilio_signature,
)

from tidings import (
    Consent,
    MalformedPayload,
    PolledBatch,
    SignatureError,
    WebhookRequest,
)
from tidings.plugins import ChannelHandle
from tidings_sms_twilio import TwilioSms

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-bytes" * 100
PNG = b"\x89PNG\r\n\x1a\n" + b"png-bytes" * 50


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


@pytest.mark.anyio
async def test_inbound_sms(handle: ChannelHandle) -> None:
    acct = account()
    params = inbound_sms(
        "Hello, is my order shipped?",
        extra={"ProfileName": "Jan", "WaId": "48600100200", "SomeNewField": "later"},
    )
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", params))
    assert msg.provider_id == message_sid(1)
    assert msg.sender.value == CUSTOMER
    assert msg.sender.name == "Jan"
    assert [r.value for r in msg.recipients] == [OUR_NUMBER]
    assert msg.text == "Hello, is my order shipped?"
    assert msg.attachments == ()
    assert msg.consent is None
    assert msg.meta["num_segments"] == 1
    assert msg.meta["profile_name"] == "Jan"
    assert msg.meta["wa_id"] == "48600100200"
    assert msg.meta["from_country"] == "PL"
    assert "from_city" not in msg.meta  # blank fields are not facts
    assert msg.raw == params  # everything Twilio sent, new fields included


@pytest.mark.anyio
async def test_reply_is_empty_twiml(handle: ChannelHandle) -> None:
    acct = account()
    for endpoint in ("inbound", "status"):
        reply = handle.channel.reply(acct, signed_request(acct, endpoint, inbound_sms()))
        assert reply.status_code == 200
        assert reply.content_type == "text/xml"
        assert reply.body == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


@pytest.mark.anyio
async def test_signature_is_checked_first(handle: ChannelHandle, router: respx.Router) -> None:
    acct = account()
    with pytest.raises(SignatureError):
        await handle.receive(acct, signed_request(acct, "inbound", inbound_sms(), signature=""))
    with pytest.raises(SignatureError):
        await handle.receive(acct, signed_request(acct, "inbound", inbound_sms(), token="nope"))
    # Signed for another account's URL: refused too.
    other = signed_request(
        acct, "inbound", inbound_sms(), sign_url="https://tidings.example.com/webhooks/x/inbound"
    )
    with pytest.raises(SignatureError):
        await handle.receive(acct, other)
    # An unsigned MMS never makes us fetch its media.
    mms = inbound_mms([(media_url(1), "image/jpeg")])
    with pytest.raises(SignatureError):
        await handle.receive(acct, signed_request(acct, "inbound", mms, signature=""))
    assert router.calls.call_count == 0


@pytest.mark.anyio
async def test_signatures_off_only_when_configured(handle: ChannelHandle) -> None:
    acct = account(verify_signatures=False)
    (msg,) = await handle.receive(
        acct, signed_request(acct, "inbound", inbound_sms(), signature="")
    )
    assert msg.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("drop", "change", "words"),
    [
        ("MessageSid", {}, "MessageSid"),
        ("From", {}, "From"),
        (None, {"From": "not-a-number"}, "From is not a phone number"),
        (None, {"To": "12"}, "To is not a phone number"),
        (None, {"NumMedia": "two"}, "NumMedia is not a number"),
        (None, {"NumMedia": "11"}, "out of range"),
        (None, {"NumMedia": "-1"}, "out of range"),
        (None, {"NumMedia": "1"}, "MediaUrl0"),
        (None, {"NumSegments": "x"}, "NumSegments"),
        (None, {"AccountSid": "AC" + "f" * 32}, "not this account"),
    ],
)
async def test_malformed_forms(
    handle: ChannelHandle, drop: str | None, change: dict[str, str], words: str
) -> None:
    acct = account()
    params = inbound_sms()
    if drop:
        del params[drop]
    params.update(change)
    with pytest.raises(MalformedPayload, match=words):
        await handle.receive(acct, signed_request(acct, "inbound", params))


@pytest.mark.anyio
async def test_not_a_form_and_not_polled(handle: ChannelHandle) -> None:
    acct = account(verify_signatures=False)
    garbage = WebhookRequest(url=acct.webhook_url("inbound"), endpoint="inbound", body=b"\xff\x00")
    with pytest.raises(MalformedPayload):
        await handle.receive(acct, garbage)
    with pytest.raises(MalformedPayload):
        await handle.receive(acct, PolledBatch())


@pytest.mark.anyio
async def test_whatsapp_prefixed_addresses(handle: ChannelHandle) -> None:
    acct = account()
    params = inbound_sms(extra={"From": f"whatsapp:{CUSTOMER}", "To": f"whatsapp:{OUR_NUMBER}"})
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", params))
    assert msg.sender.value == CUSTOMER
    assert msg.meta["twilio_channel"] == "whatsapp"


# --- consent keywords ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "consent"),
    [
        *[(word, Consent.OPT_OUT) for word in ("STOP", "stop", " Stop ", "STOPALL", "QUIT")],
        *[(word, Consent.OPT_OUT) for word in ("UNSUBSCRIBE", "CANCEL", "END")],
        *[(word, Consent.OPT_IN) for word in ("START", "yes", "Unstop")],
        ("HELP", None),
        ("stop please", None),
        ("Please stop", None),
    ],
)
async def test_keywords(handle: ChannelHandle, body: str, consent: Consent | None) -> None:
    acct = account()
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", inbound_sms(body)))
    assert msg.consent is consent
    if consent is not None:
        assert msg.meta["keyword"] == body.strip().upper()


@pytest.mark.anyio
async def test_help_and_info_are_flagged(handle: ChannelHandle) -> None:
    acct = account()
    for word in ("help", "INFO"):
        (msg,) = await handle.receive(acct, signed_request(acct, "inbound", inbound_sms(word)))
        assert msg.meta["help"] is True
        assert msg.consent is None


@pytest.mark.anyio
async def test_opt_out_type_from_advanced_opt_out_wins(handle: ChannelHandle) -> None:
    acct = account()
    custom = inbound_sms("BASTA", extra={"OptOutType": "STOP"})
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", custom))
    assert msg.consent is Consent.OPT_OUT
    assert msg.meta["opt_out_type"] == "STOP"
    again = inbound_sms("ALTA", extra={"OptOutType": "START"})
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", again))
    assert msg.consent is Consent.OPT_IN
    info = inbound_sms("AYUDA", extra={"OptOutType": "HELP"})
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", info))
    assert (msg.consent, msg.meta["help"]) == (None, True)


# --- MMS -----------------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.anyio
async def test_mms_with_two_media(handle: ChannelHandle, router: respx.Router) -> None:
    acct = account()
    first = route_media(router, media_url(1), JPEG, "image/jpeg")
    second = route_media(router, media_url(2), PNG, "image/png", via_cdn=False)
    params = inbound_mms([(media_url(1), "image/jpeg"), (media_url(2), "image/png")], "Look")
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", params))
    assert msg.provider_id.startswith("MM")
    assert msg.text == "Look"
    assert [(a.filename, a.content_type, a.data) for a in msg.attachments] == [
        (f"{message_sid(1, 'ME')}.jpg", "image/jpeg", JPEG),
        (f"{message_sid(2, 'ME')}.png", "image/png", PNG),
    ]
    assert msg.attachments[0].size == len(JPEG)
    assert "media_skipped" not in msg.meta
    # Credentials go to Twilio's media URL, never to the CDN it redirects to.
    assert first.calls.last.request.headers["authorization"] == _basic(ACCOUNT_SID, AUTH_TOKEN)
    assert second.calls.last.request.headers["authorization"] == _basic(ACCOUNT_SID, AUTH_TOKEN)
    cdn_calls = [c for c in router.calls if "amazonaws" in str(c.request.url)]
    assert len(cdn_calls) == 1
    assert "authorization" not in cdn_calls[0].request.headers


@pytest.mark.anyio
async def test_media_uses_the_api_key_when_configured(
    handle: ChannelHandle, router: respx.Router
) -> None:
    acct = account(api_key_sid=API_KEY_SID, api_key_secret=API_KEY_SECRET)
    route = route_media(router, media_url(1), JPEG, "image/jpeg", via_cdn=False)
    params = inbound_mms([(media_url(1), "image/jpeg")])
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", params))
    assert len(msg.attachments) == 1
    assert route.calls.last.request.headers["authorization"] == _basic(API_KEY_SID, API_KEY_SECRET)


@pytest.mark.anyio
async def test_media_refusals_keep_the_message(handle: ChannelHandle, router: respx.Router) -> None:
    acct = account(media_max_bytes=1000)
    big = route_media(router, media_url(1), b"x" * 5000, "image/jpeg", via_cdn=False)
    ok = route_media(router, media_url(4), b"y" * 999, "image/gif", via_cdn=False)
    lying = route_media(
        router, media_url(5), b"MZ\x90\x00", "application/x-msdownload", via_cdn=False
    )
    gone = router.get(media_url(6)).mock(return_value=httpx.Response(404))
    slow = router.get(media_url(7)).mock(side_effect=httpx.ConnectTimeout("slow"))
    params = inbound_mms(
        [
            (media_url(1), "image/jpeg"),  # over the size limit
            (media_url(2), "application/x-msdownload"),  # type refused before download
            ("https://evil.example.com/x.jpg", "image/jpeg"),  # not a Twilio host
            (media_url(4), "image/gif"),  # fine
            (media_url(5), "image/jpeg"),  # declared jpeg, served as an executable
            (media_url(6), "image/jpeg"),  # gone
            (media_url(7), "image/jpeg"),  # network error
            ("http://api.twilio.com/x.jpg", "image/jpeg"),  # not https
        ],
        "Here you go",
    )
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", params))
    assert msg.text == "Here you go"
    assert [a.data for a in msg.attachments] == [b"y" * 999]
    reasons = {item["index"]: item["reason"] for item in msg.meta["media_skipped"]}
    assert reasons == {
        0: "larger than the 1000 byte limit (5000 bytes)",  # told by Content-Length
        1: "content type 'application/x-msdownload' is not allowed",
        2: "host 'evil.example.com' is not a Twilio media host",
        4: "content type 'application/x-msdownload' is not allowed",
        5: "Twilio answered HTTP 404",
        6: "download failed: ConnectTimeout",
        7: "media URL is not https",
    }
    assert msg.meta["media_skipped"][2]["url"] == "https://evil.example.com/x.jpg"
    assert all(route.called for route in (big, ok, lying, gone, slow))
    assert not any("evil.example.com" in str(c.request.url) for c in router.calls)


@pytest.mark.anyio
async def test_oversized_media_stops_streaming_at_the_limit(
    handle: ChannelHandle, router: respx.Router
) -> None:
    """No Content-Length: we stop after the limit, not after the whole body."""
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(1000):
            sent.append(1)
            yield b"z" * 1024

    router.get(media_url(1)).mock(
        return_value=httpx.Response(200, headers={"content-type": "image/jpeg"}, content=chunks())
    )
    acct = account(media_max_bytes=10 * 1024)
    params = inbound_mms([(media_url(1), "image/jpeg")])
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", params))
    assert msg.attachments == ()
    assert msg.meta["media_skipped"][0]["reason"] == "larger than the 10240 byte limit"
    assert len(sent) <= 12


@pytest.mark.anyio
async def test_redirect_loops_and_plain_http_redirects_are_refused(
    handle: ChannelHandle, router: respx.Router
) -> None:
    router.get(media_url(1)).mock(
        return_value=httpx.Response(302, headers={"location": media_url(1)})
    )
    router.get(media_url(2)).mock(
        return_value=httpx.Response(302, headers={"location": "http://cdn.example/x"})
    )
    acct = account()
    params = inbound_mms([(media_url(1), "image/jpeg"), (media_url(2), "image/jpeg")])
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", params))
    assert [s["reason"] for s in msg.meta["media_skipped"]] == [
        "too many redirects",
        "Twilio redirected the media to a non-https URL",
    ]


@pytest.mark.anyio
async def test_get_webhooks_sign_the_url_alone(handle: ChannelHandle) -> None:
    """A number configured for HTTP GET: the parameters are the query, the URL is signed."""
    acct = account()
    url = acct.webhook_url("inbound") + "?" + urlencode(inbound_sms("via GET"))
    request = WebhookRequest(
        method="GET",
        url=url,
        endpoint="inbound",
        headers={"x-twilio-signature": twilio_signature(AUTH_TOKEN, url)},
    )
    (msg,) = await handle.receive(acct, request)
    assert msg.text == "via GET"
    forged = request.model_copy(update={"url": url.replace("via+GET", "forged")})
    with pytest.raises(SignatureError):
        await handle.receive(acct, forged)
