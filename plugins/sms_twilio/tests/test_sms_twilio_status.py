"""Status callbacks through the delivery_status hook: every documented word, and refusals."""

from __future__ import annotations

import pytest
from sms_twilio_samples import account, load_with, message_sid, signed_request, status_callback

from tidings import DeliveryStatus, MalformedPayload, SignatureError
from tidings.plugins import ChannelHandle
from tidings_sms_twilio import TwilioSms


@pytest.fixture
def handle() -> ChannelHandle:
    return load_with(TwilioSms()).channel("sms_twilio")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("accepted", DeliveryStatus.QUEUED),
        ("scheduled", DeliveryStatus.QUEUED),
        ("queued", DeliveryStatus.QUEUED),
        ("sending", DeliveryStatus.QUEUED),
        ("sent", DeliveryStatus.SENT),
        ("delivered", DeliveryStatus.DELIVERED),
        ("undelivered", DeliveryStatus.UNDELIVERED),
        ("failed", DeliveryStatus.FAILED),
        ("read", DeliveryStatus.READ),
        ("canceled", DeliveryStatus.FAILED),
        # Inbound-only words and anything new: unknown, raw word kept, never dropped.
        ("receiving", DeliveryStatus.UNKNOWN),
        ("received", DeliveryStatus.UNKNOWN),
        ("partially_delivered", DeliveryStatus.UNKNOWN),
        ("teleported", DeliveryStatus.UNKNOWN),
    ],
)
async def test_every_status_word(handle: ChannelHandle, word: str, status: DeliveryStatus) -> None:
    acct = account()
    params = status_callback(word)
    (update,) = await handle.delivery_status(acct, signed_request(acct, "status", params))
    assert update.provider_id == message_sid(42)
    assert update.status is status
    assert update.raw_status == word
    assert update.error_code is None
    assert update.error_message is None
    assert update.raw == params


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("word", "code", "meaning"),
    [
        ("undelivered", "30003", "Unreachable destination handset"),
        ("undelivered", "30005", "Unknown destination handset"),
        ("undelivered", "30006", "Landline or unreachable carrier"),
        ("undelivered", "30007", "filtered by the carrier"),
        ("failed", "30008", "Unknown error"),
        ("failed", "21610", "replied STOP"),
        ("failed", "39999", "Twilio error 39999"),
    ],
)
async def test_error_codes_get_a_meaning(
    handle: ChannelHandle, word: str, code: str, meaning: str
) -> None:
    acct = account()
    request = signed_request(acct, "status", status_callback(word, error_code=code))
    (update,) = await handle.delivery_status(acct, request)
    assert update.error_code == code
    assert update.error_message is not None
    assert meaning in update.error_message


@pytest.mark.anyio
async def test_old_sms_field_names_alone_suffice(handle: ChannelHandle) -> None:
    acct = account()
    params = status_callback("delivered")
    del params["MessageSid"], params["MessageStatus"]
    (update,) = await handle.delivery_status(acct, signed_request(acct, "status", params))
    assert (update.provider_id, update.status) == (message_sid(42), DeliveryStatus.DELIVERED)


@pytest.mark.anyio
async def test_status_signature(handle: ChannelHandle) -> None:
    acct = account()
    with pytest.raises(SignatureError):
        await handle.delivery_status(
            acct, signed_request(acct, "status", status_callback("sent"), signature="")
        )
    with pytest.raises(SignatureError):
        await handle.delivery_status(
            acct, signed_request(acct, "status", status_callback("sent"), token="x")
        )
    # Signed for the inbound URL but posted to the status URL.
    moved = signed_request(
        acct, "status", status_callback("sent"), sign_url=acct.webhook_url("inbound")
    )
    with pytest.raises(SignatureError):
        await handle.delivery_status(acct, moved)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("drop", "change", "words"),
    [
        (("MessageSid", "SmsSid"), {}, "MessageSid"),
        (("MessageStatus", "SmsStatus"), {}, "MessageStatus"),
        ((), {"MessageStatus": "  ", "SmsStatus": ""}, "MessageStatus"),
        ((), {"ErrorCode": "abc"}, "ErrorCode"),
        ((), {"AccountSid": "AC" + "e" * 32}, "not this account"),
    ],
)
async def test_malformed_callbacks(
    handle: ChannelHandle, drop: tuple[str, ...], change: dict[str, str], words: str
) -> None:
    acct = account()
    params = status_callback("sent")
    for name in drop:
        del params[name]
    params.update(change)
    with pytest.raises(MalformedPayload, match=words):
        await handle.delivery_status(acct, signed_request(acct, "status", params))
