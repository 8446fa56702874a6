"""tidings-sms-twilio: SMS and MMS through Twilio Programmable Messaging.

This module is the plugin registered in the ``tidings`` entry-point group; it only declares
the channel. Everything else lives in the submodules.
"""

from __future__ import annotations

from tidings import Channel, hookimpl
from tidings_sms_twilio.channel import TwilioSms
from tidings_sms_twilio.settings import TwilioSettings

__all__ = ["TwilioSettings", "TwilioSms", "register_channels"]


@hookimpl
def register_channels() -> list[Channel]:
    return [TwilioSms()]
