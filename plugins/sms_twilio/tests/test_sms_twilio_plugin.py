"""The installed distribution as a deployment loads it: entry point, declarations, hooks."""

from __future__ import annotations

import pytest
from sms_twilio_samples import account, inbound_sms, signed_request

from tidings import AttachmentLimits, Endpoint, Threading
from tidings.plugins import load_plugins
from tidings_sms_twilio import TwilioSms


def test_loaded_through_its_entry_point() -> None:
    plugins = load_plugins({"TIDINGS_PLUGINS": "sms_twilio"})
    handle = plugins.channel("sms_twilio")
    assert isinstance(handle.channel, TwilioSms)
    assert handle.implemented == {"receive", "send", "delivery_status"}
    (row,) = [r for r in plugins.info() if r.name == "sms_twilio"]
    assert row.distribution == "tidings-sms-twilio"
    assert row.channels == ("sms_twilio",)
    blocked = load_plugins({"TIDINGS_DISABLE_PLUGINS": "sms_twilio"})
    assert "sms_twilio" not in blocked.channels


def test_declarations() -> None:
    channel = TwilioSms()
    assert (channel.name, channel.kind) == ("sms_twilio", "sms")
    caps = channel.capabilities
    assert caps.delivery_status is True
    assert caps.max_text_length == 1600
    assert caps.threading is Threading.ADDRESS
    assert isinstance(caps.attachments, AttachmentLimits)
    assert caps.attachments.max_count == 10
    assert caps.attachments.allows("image/jpeg")
    assert not caps.attachments.allows("application/x-msdownload")
    assert channel.webhooks == {"inbound": Endpoint.MESSAGES, "status": Endpoint.STATUSES}


@pytest.mark.anyio
async def test_entry_point_channel_receives() -> None:
    """The default-constructed channel (aiohttp transport) handles a plain SMS end to end."""
    plugins = load_plugins({"TIDINGS_PLUGINS": "sms_twilio"})
    handle = plugins.channel("sms_twilio")
    acct = account()
    (msg,) = await handle.receive(acct, signed_request(acct, "inbound", inbound_sms("hi")))
    assert msg.text == "hi"
    assert isinstance(handle.channel, TwilioSms)
    await handle.channel.aclose()
