"""Settings: what an operator writes, and refusals that name the field to fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sms_twilio_samples import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    AUTH_TOKEN,
    OUR_NUMBER,
    SERVICE_SID,
    settings,
)

from tidings import ConfigError
from tidings.config import build_account, parse_config
from tidings.plugins import load_plugins
from tidings_sms_twilio import TwilioSettings


def refused_field(**data: Any) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        TwilioSettings.model_validate(data)
    first = info.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"]


BASE = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": OUR_NUMBER}


def test_defaults() -> None:
    s = settings()
    assert s.verify_signatures is True
    assert s.base_url == "https://api.twilio.com"
    assert s.rest_credentials() == (ACCOUNT_SID, AUTH_TOKEN)
    assert s.media_max_bytes == 5 * 1024 * 1024
    assert s.media_host_allowed("api.twilio.com")
    assert s.media_host_allowed("api.dublin.ie1.twilio.com")
    assert s.media_host_allowed("media.twiliocdn.com")
    assert not s.media_host_allowed("twilio.com.evil.example")
    assert not s.media_host_allowed("eviltwilio.com")


def test_api_key_is_used_for_rest_and_token_kept_for_signatures() -> None:
    s = settings(api_key_sid=API_KEY_SID, api_key_secret=API_KEY_SECRET)
    assert s.rest_credentials() == (API_KEY_SID, API_KEY_SECRET)
    assert s.auth_token is not None


def test_messaging_service_instead_of_a_number() -> None:
    s = settings(from_number=None, messaging_service_sid=SERVICE_SID)
    assert s.messaging_service_sid == SERVICE_SID


def test_secrets_stay_out_of_reprs() -> None:
    s = settings(api_key_sid=API_KEY_SID, api_key_secret=API_KEY_SECRET)
    text = repr(s) + str(s) + s.model_dump_json()
    assert AUTH_TOKEN not in text
    assert API_KEY_SECRET not in text


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"account_sid": "AB123"}, "account_sid", "pattern"),
        ({"auth_token": None}, "auth_token", "signs webhooks"),
        ({"auth_token": "  "}, "auth_token", "empty"),
        ({"api_key_sid": API_KEY_SID}, "api_key_secret", "go together"),
        ({"api_key_secret": API_KEY_SECRET}, "api_key_secret", "go together"),
        ({"api_key_sid": "SK1"}, "api_key_sid", "pattern"),
        ({"from_number": "600100200"}, "from_number", "E.164"),
        ({"from_number": "+48 600 100 200"}, "from_number", "+48600100200"),
        ({"from_number": "+1"}, "from_number", "phone number"),
        ({"messaging_service_sid": SERVICE_SID}, "messaging_service_sid", "exactly one"),
        ({"from_number": None}, "messaging_service_sid", "exactly one"),
        ({"messaging_service_sid": "MG12"}, "messaging_service_sid", "pattern"),
        ({"base_url": "ftp://api.twilio.com"}, "base_url", "http(s)"),
        ({"base_url": "https://api.twilio.com?x=1"}, "base_url", "query"),
        ({"media_max_bytes": 0}, "media_max_bytes", "greater than or equal"),
        ({"media_content_types": ["IMAGE/*"]}, "media_content_types", "lower-case"),
        ({"media_content_types": []}, "media_content_types", "at least 1"),
        ({"media_hosts": ["*.evil.*"]}, "media_hosts", "host name"),
        ({"read_timeout": 0}, "read_timeout", "greater than"),
        ({"auth_tokn": "x"}, "auth_tokn", "Extra inputs"),
    ],
)
def test_refusals_name_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    data = {**BASE, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    loc, msg = refused_field(**data)
    assert loc == field
    assert words in msg


def test_signatures_off_must_be_explicit_and_then_an_api_key_suffices() -> None:
    s = TwilioSettings.model_validate(
        {
            "account_sid": ACCOUNT_SID,
            "verify_signatures": False,
            "api_key_sid": API_KEY_SID,
            "api_key_secret": API_KEY_SECRET,
            "from_number": OUR_NUMBER,
        }
    )
    assert s.auth_token is None
    assert s.rest_credentials() == (API_KEY_SID, API_KEY_SECRET)
    loc, msg = refused_field(
        account_sid=ACCOUNT_SID, verify_signatures=False, from_number=OUR_NUMBER
    )
    assert (loc, "auth_token or api_key_sid" in msg) == ("api_key_secret", True)


def test_config_file_errors_name_account_and_field() -> None:
    """Through the core's own config path, as ``tidings.toml`` is read."""
    plugins = load_plugins({"TIDINGS_PLUGINS": "sms_twilio"})
    config = parse_config(
        {
            "accounts": [
                {
                    "id": "sms-1",
                    "channel": "sms_twilio",
                    "project": "support",
                    "account_sid": ACCOUNT_SID,
                    "from_number": OUR_NUMBER,
                }
            ]
        },
        env={},
    )
    with pytest.raises(ConfigError) as info:
        build_account(config.accounts[0], config, plugins)
    assert (info.value.account, info.value.field) == ("sms-1", "auth_token")
