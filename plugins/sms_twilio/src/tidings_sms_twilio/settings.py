"""Settings of one Twilio account (one number or one Messaging Service).

Cross-field rules are written as field validators on the *later* field (pydantic validates
fields in declaration order and hands earlier values in ``info.data``), so a refusal carries
the name of the field the operator has to fix in ``tidings.toml`` rather than an empty
location.
"""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from tidings import ChannelSettings
from tidings.models import normalise_phone

DEFAULT_MEDIA_TYPES: tuple[str, ...] = (
    "image/*",
    "video/*",
    "audio/*",
    "application/pdf",
    "text/vcard",
    "text/x-vcard",
    "text/calendar",
    "text/plain",
)
"""What inbound MMS media we download by default: what handsets send and agents can open."""

DEFAULT_MEDIA_HOSTS: tuple[str, ...] = ("api.twilio.com", "*.twilio.com", "*.twiliocdn.com")
"""Hosts a MediaUrl may point at. Twilio serves media under the REST API host (regional
edges are ``api.<edge>.<region>.twilio.com``) and redirects to its CDN."""

_ACCOUNT_SID = r"^AC[0-9a-fA-F]{32}$"
_API_KEY_SID = r"^SK[0-9a-fA-F]{32}$"
_SERVICE_SID = r"^MG[0-9a-fA-F]{32}$"


class TwilioSettings(ChannelSettings):
    """One Twilio account as configured in ``[[accounts]]`` with ``channel = "sms_twilio"``."""

    account_sid: str = Field(pattern=_ACCOUNT_SID, description="the AC… sid of the account")
    verify_signatures: bool = Field(
        default=True,
        description="check X-Twilio-Signature; only ever switch off explicitly, for local tests",
    )
    auth_token: SecretStr | None = Field(
        default=None,
        description="checks webhook signatures, and authenticates REST calls without an API key",
        validate_default=True,
    )
    api_key_sid: str | None = Field(default=None, pattern=_API_KEY_SID)
    api_key_secret: SecretStr | None = Field(default=None, validate_default=True)
    from_number: str | None = Field(default=None, description="the sending number, E.164")
    messaging_service_sid: str | None = Field(
        default=None, pattern=_SERVICE_SID, validate_default=True
    )
    base_url: str = Field(
        default="https://api.twilio.com", description="REST base: tests, regional edges"
    )
    media_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1, le=100 * 1024 * 1024)
    media_content_types: tuple[str, ...] = Field(default=DEFAULT_MEDIA_TYPES, min_length=1)
    media_hosts: tuple[str, ...] = Field(default=DEFAULT_MEDIA_HOSTS, min_length=1)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    read_timeout: float = Field(default=20.0, gt=0, le=300)
    media_timeout: float = Field(default=30.0, gt=0, le=600)

    @field_validator("auth_token")
    @classmethod
    def _token_for_signatures(cls, value: SecretStr | None, info: ValidationInfo) -> Any:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        if value is None and info.data.get("verify_signatures", True):
            raise ValueError(
                "required: Twilio signs webhooks with the auth token, even when REST calls use "
                "an API key (set verify_signatures = false only for local tests)"
            )
        return value

    @field_validator("api_key_secret")
    @classmethod
    def _key_pair(cls, value: SecretStr | None, info: ValidationInfo) -> Any:
        if "api_key_sid" not in info.data:
            return value  # the sid itself failed; that error names its field
        sid = info.data["api_key_sid"]
        if (sid is None) != (value is None):
            raise ValueError("api_key_sid and api_key_secret go together")
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        if sid is None and info.data.get("auth_token") is None and "auth_token" in info.data:
            raise ValueError("REST calls need auth_token or api_key_sid + api_key_secret")
        return value

    @field_validator("from_number")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("+"):
            raise ValueError(f"must be in E.164 (+ and digits), got {value!r}")
        normalised = normalise_phone(value)
        if normalised != value:
            raise ValueError(f"must be in E.164 without spaces, e.g. {normalised!r}")
        return value

    @field_validator("messaging_service_sid")
    @classmethod
    def _one_sender(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "from_number" not in info.data:
            return value
        if (info.data["from_number"] is None) == (value is None):
            raise ValueError("set exactly one of from_number or messaging_service_sid")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")

    @field_validator("media_content_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            major, _, minor = item.partition("/")
            if not major or not minor or item != item.strip().lower():
                raise ValueError(f"not a lower-case content type like 'image/*': {item!r}")
        return value

    @field_validator("media_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            bare = item.removeprefix("*.")
            if not bare or "*" in bare or "/" in item or ":" in item or item != item.lower():
                raise ValueError(f"not a lower-case host name or '*.domain': {item!r}")
        return value

    # --- derived values --------------------------------------------------------------------

    def rest_credentials(self) -> tuple[str, str]:
        """Basic-auth pair for the REST API and media: the API key when given."""
        if self.api_key_sid is not None and self.api_key_secret is not None:
            return self.api_key_sid, self.api_key_secret.get_secret_value()
        assert self.auth_token is not None  # guaranteed by the validators
        return self.account_sid, self.auth_token.get_secret_value()

    def media_host_allowed(self, host: str) -> bool:
        """Whether media may be fetched from ``host`` (the REST base host always may)."""
        host = host.lower().rstrip(".")
        if host == (urlsplit(self.base_url).hostname or ""):
            return True
        for pattern in self.media_hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and host != pattern[2:]:
                    return True
            elif fnmatch.fnmatchcase(host, pattern):
                return True
        return False

    def media_type_allowed(self, content_type: str) -> bool:
        major = content_type.split("/")[0]
        return any(t in (content_type, f"{major}/*", "*/*") for t in self.media_content_types)
