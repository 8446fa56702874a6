"""Accounts and channel handles for the email_imap tests (real Dovecot and SMTP servers)."""

from __future__ import annotations

from typing import Any

from tidings import Account
from tidings.plugins import ChannelHandle, load_plugins
from tidings.testing.mailservers import DovecotServer, MailUser, SmtpServer
from tidings_email_imap import EmailSettings


def handle() -> ChannelHandle:
    """The channel as the core reaches it: through the installed entry point."""
    return load_plugins({"TIDINGS_PLUGINS": "email_imap"}).channel("email_imap")


def account(
    imap: DovecotServer,
    user: MailUser,
    smtp: SmtpServer | None = None,
    *,
    account_id: str = "mailbox",
    **overrides: Any,
) -> Account[EmailSettings]:
    settings: dict[str, Any] = {
        "address": user.address,
        "display_name": "Support Team",
        "imap_host": imap.host,
        "imap_port": imap.imap_port,
        "imap_security": "plain",
        "imap_password": user.password,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port if smtp is not None else 1,
        "smtp_security": "plain",
        "smtp_auth": False,
        "timeout": 10,
        "ca_file": str(imap.ca_file),
    }
    settings.update(overrides)
    return Account[EmailSettings](
        id=account_id,
        channel="email_imap",
        project="support",
        settings=EmailSettings.model_validate(settings),
    )
