"""Settings of an email account: one IMAP mailbox to read, one SMTP server to send through.

Validation happens when the configuration is loaded, so a wrong port or a missing host
stops start-up with the field's name instead of failing at the first send.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from tidings import ChannelSettings
from tidings.models import normalise_email


class Security(StrEnum):
    """How the connection is protected."""

    SSL = "ssl"
    """Implicit TLS from the first byte (IMAP 993, SMTP 465)."""
    STARTTLS = "starttls"
    """Plain connection upgraded with STARTTLS before login (IMAP 143, SMTP 587)."""
    PLAIN = "plain"
    """No TLS at all: only for servers on the same machine or in tests."""


# Providers whose SMTP servers refuse message submission on port 25 from clients.
SUBMISSION_ONLY_HOSTS = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "office365.com",
    "hotmail.com",
    "live.com",
)


def is_submission_only(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in SUBMISSION_ONLY_HOSTS)


class EmailSettings(ChannelSettings):
    """An ``[[accounts]]`` entry with ``channel = "email_imap"`` (see the README)."""

    address: str = Field(description="the mailbox address, used as From")
    display_name: str | None = Field(default=None, max_length=200)

    imap_host: str = Field(min_length=1, max_length=255)
    imap_port: int | None = Field(default=None, ge=1, le=65535)
    imap_security: Security = Security.SSL
    imap_username: str | None = Field(default=None, description="defaults to address")
    imap_password: SecretStr
    folder: str = Field(default="INBOX", min_length=1, max_length=500)
    only_unread: bool = Field(default=True, description="fetch only messages without \\Seen")
    idle: bool = Field(default=True, description="use IMAP IDLE when the server offers it")
    poll_interval: float = Field(default=60.0, gt=0, le=3600, description="seconds")
    idle_timeout: float = Field(
        default=25 * 60.0, gt=0, le=29 * 60.0, description="re-issue IDLE after (s)"
    )
    timeout: float = Field(default=30.0, gt=0, le=600, description="per network call (s)")
    fetch_chunk: int = Field(default=50, ge=1, le=1000, description="messages per batch")
    parse_worker: bool = Field(
        default=True,
        description="parse a backlog (more than one batch) in a worker process, on another "
        "core, while the previous batch is stored",
    )

    smtp_host: str = Field(min_length=1, max_length=255)
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_security: Security = Security.STARTTLS
    smtp_username: str | None = Field(default=None, description="defaults to imap_username")
    smtp_password: SecretStr | None = Field(default=None, description="defaults to IMAP's")
    smtp_auth: bool = Field(default=True, description="log in to the SMTP server")
    sent_folder: str = Field(default="Sent", min_length=1, max_length=500)
    save_sent: bool = Field(default=True, description="APPEND a copy of sent mail")

    ca_file: Path | None = Field(
        default=None, description="PEM file of CAs to trust instead of the system's"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return normalise_email(value)

    @field_validator("imap_host", "smtp_host", "folder", "sent_folder", "display_name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and any(c in value for c in "\r\n\x00"):
            raise ValueError("must be a single line")
        return value

    @model_validator(mode="after")
    def _ports(self) -> Self:
        if self.smtp_port == 25 and is_submission_only(self.smtp_host):
            # Port 25 is server-to-server relay: these providers refuse clients there, so
            # the account could never send. Refusing now beats a failure at the first send.
            raise ValueError(
                f"smtp_port: 25 does not work with {self.smtp_host} (the provider refuses "
                'client submission on port 25); use 587 with smtp_security = "starttls" '
                'or 465 with "ssl"'
            )
        return self

    @property
    def imap_port_value(self) -> int:
        if self.imap_port is not None:
            return self.imap_port
        return 993 if self.imap_security is Security.SSL else 143

    @property
    def smtp_port_value(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {Security.SSL: 465, Security.STARTTLS: 587, Security.PLAIN: 25}[self.smtp_security]

    @property
    def imap_login(self) -> str:
        return self.imap_username or self.address

    @property
    def smtp_login(self) -> str:
        return self.smtp_username or self.imap_login

    @property
    def smtp_secret(self) -> SecretStr:
        return self.smtp_password or self.imap_password
