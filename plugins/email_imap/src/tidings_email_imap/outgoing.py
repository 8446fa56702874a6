"""Outbound mail: building the MIME message and handing it to the SMTP server.

The message is built once as bytes; the same bytes go to SMTP and to the Sent folder, so
what the agent sees in Sent is exactly what the customer got.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from tidings import (
    Account,
    Address,
    AddressKind,
    OutboundMessage,
    PermanentSendError,
    Priority,
    TransientSendError,
)
from tidings.models import AttachmentLimits
from tidings_email_imap.imap import tls_context
from tidings_email_imap.parse import text_from_html
from tidings_email_imap.settings import EmailSettings, Security

_ID_NAMESPACE = uuid.UUID("6f1b6f0e-3c55-4a53-9d87-1f0b8ab0e0a1")
_PRIORITY = {
    Priority.HIGH: ("1 (Highest)", "high"),
    Priority.LOW: ("5 (Lowest)", "low"),
}


def _no_newlines(what: str, value: str | None) -> None:
    """CR or LF in a header value would let text become new headers (header injection)."""
    if value is not None and any(c in value for c in "\r\n\x00"):
        raise PermanentSendError(
            f"{what} contains a line break, which is not allowed in a mail header",
            code="header_injection",
        )


def _mailbox(address: Address, what: str) -> MimeAddress:
    if address.kind is not AddressKind.EMAIL:
        raise PermanentSendError(f"{what} {address.value!r} is not an email address")
    _no_newlines(f"{what} name", address.name)
    local, _, domain = address.value.rpartition("@")
    try:
        return MimeAddress(display_name=address.name or "", username=local, domain=domain)
    except (ValueError, TypeError) as exc:
        raise PermanentSendError(f"{what} {address.value!r}: {exc}") from None


def message_id_for(account: Account[EmailSettings], message: OutboundMessage) -> str:
    """Our Message-ID: the thread's when given, else derived from ``message.id``.

    Derived, not random, so an outbox retry of the same message carries the same
    Message-ID and a recipient's client can recognise the duplicate.
    """
    if message.thread.message_id:
        _no_newlines("Message-ID", message.thread.message_id)
        value = message.thread.message_id.strip()
        return value if value.startswith("<") else f"<{value}>"
    domain = account.settings.address.rpartition("@")[2]
    return f"<{uuid.uuid5(_ID_NAMESPACE, f'{account.id}/{message.id}')}@{domain}>"


def build_message(
    account: Account[EmailSettings],
    message: OutboundMessage,
    *,
    limits: AttachmentLimits | None = None,
    now: datetime | None = None,
) -> tuple[EmailMessage, str]:
    """The MIME message and its Message-ID. BCC goes only into the SMTP envelope."""
    settings = account.settings
    for what, value in (("subject", message.subject), *(
        ("In-Reply-To", v) for v in message.thread.in_reply_to
    ), *(("References", v) for v in message.thread.references)):  # fmt: skip
        _no_newlines(what, value)
    msg = EmailMessage(policy=policy.SMTP)
    message_id = message_id_for(account, message)
    try:
        local, _, domain = settings.address.rpartition("@")
        msg["From"] = MimeAddress(display_name=settings.display_name or "", username=local,
                                  domain=domain)  # fmt: skip
        msg["To"] = [_mailbox(a, "recipient") for a in message.to]
        if message.cc:
            msg["Cc"] = [_mailbox(a, "cc") for a in message.cc]
        for bcc in message.bcc:
            _mailbox(bcc, "bcc")  # validated, never written as a header
        if message.subject is not None:
            msg["Subject"] = message.subject
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        msg["Message-ID"] = message_id
        if message.thread.in_reply_to:
            msg["In-Reply-To"] = " ".join(message.thread.in_reply_to)
        references = list(message.thread.references)
        if references or message.thread.in_reply_to:
            for parent in message.thread.in_reply_to:
                if parent not in references:
                    references.append(parent)
            msg["References"] = " ".join(references[-50:])
        if message.priority in _PRIORITY:
            x_priority, importance = _PRIORITY[message.priority]
            msg["X-Priority"] = x_priority
            msg["Importance"] = importance
    except ValueError as exc:  # the email package's own refusal of a bad header value
        raise PermanentSendError(f"cannot build the message: {exc}", code="bad_header") from None

    text = message.text or (text_from_html(message.html) if message.html else "")
    msg.set_content(text)
    html_part = None
    if message.html:
        msg.add_alternative(message.html, subtype="html")
        payload = msg.get_payload()
        last = payload[-1] if isinstance(payload, list) and payload else None
        html_part = last if isinstance(last, EmailMessage) else None

    limits = limits or AttachmentLimits()
    if len(message.attachments) > limits.max_count:
        raise PermanentSendError(
            f"{len(message.attachments)} attachments, at most {limits.max_count} allowed"
        )
    for attachment in message.attachments:
        _no_newlines("attachment filename", attachment.filename)
        if attachment.data is None:
            raise PermanentSendError(
                f"attachment {attachment.filename!r} has no data (email needs the bytes)"
            )
        if len(attachment.data) > limits.max_bytes:
            raise PermanentSendError(
                f"attachment {attachment.filename!r} is larger than {limits.max_bytes} bytes"
            )
        maintype, _, subtype = attachment.content_type.partition("/")
        if attachment.inline and attachment.content_id and html_part is not None:
            _no_newlines("attachment content id", attachment.content_id)
            html_part.add_related(
                attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                cid=f"<{attachment.content_id}>", filename=attachment.filename,
                disposition="inline",
            )  # fmt: skip
        else:
            msg.add_attachment(
                attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                filename=attachment.filename,
            )  # fmt: skip
    return msg, message_id


def envelope_recipients(message: OutboundMessage) -> list[str]:
    seen: dict[str, None] = {}
    for address in (*message.to, *message.cc, *message.bcc):
        seen.setdefault(address.value, None)
    return list(seen)


async def smtp_send(
    settings: EmailSettings, sender: str, recipients: list[str], data: bytes
) -> dict[str, str]:
    """Submit ``data``; returns the refused recipients (address → SMTP reply) if some were.

    Classification: replies 4xx, timeouts and lost connections are transient; 5xx are
    permanent. When every recipient is refused the error is transient if any refusal was
    4xx (a retry may get through), else permanent.
    """
    password = settings.smtp_secret.get_secret_value() if settings.smtp_auth else None
    client = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port_value,
        use_tls=settings.smtp_security is Security.SSL,
        start_tls=settings.smtp_security is Security.STARTTLS,
        tls_context=(
            tls_context(str(settings.ca_file) if settings.ca_file else None)
            if settings.smtp_security is not Security.PLAIN
            else None
        ),
        username=settings.smtp_login if settings.smtp_auth else None,
        password=password,
        timeout=settings.timeout,
    )
    try:
        async with client:
            refused, _reply = await client.sendmail(sender, recipients, data)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if any(400 <= c < 500 for c in codes):
            raise TransientSendError(
                f"recipients refused: {detail}", code=str(min(codes))
            ) from None
        raise PermanentSendError(f"recipients refused: {detail}", code=str(max(codes))) from None
    except aiosmtplib.SMTPAuthenticationError as exc:
        # Wrong credentials stay wrong until someone fixes the settings; 454 is transient.
        cls = TransientSendError if 400 <= exc.code < 500 else PermanentSendError
        raise cls(f"SMTP login refused: {exc.code} {exc.message}", code=str(exc.code)) from None
    except aiosmtplib.SMTPResponseException as exc:
        cls = TransientSendError if exc.code < 500 else PermanentSendError
        raise cls(f"SMTP server said {exc.code} {exc.message}", code=str(exc.code)) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TransientSendError(f"SMTP connection failed: {exc or type(exc).__name__}") from None
    except ValueError as exc:  # an address aiosmtplib will not put on the wire
        raise PermanentSendError(f"cannot send: {exc}") from None
    return {addr: f"{reply.code} {reply.message}" for addr, reply in refused.items()}
