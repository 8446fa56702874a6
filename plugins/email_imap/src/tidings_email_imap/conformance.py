"""The email channel's conformance suite: what ``tidings conformance email_imap`` runs.

Shipped inside the package (entry point ``tidings.conformance``) so a deployment can check
the distribution it installed; needs ``tidings-email-imap[conformance]`` and Dovecot
(``tidings.testing.mailservers`` starts a private one, and an SMTP server in front of it).

Email is polled, so the inbound samples are ``PolledBatch``es of raw RFC 5322 mail as
clients write it, and the suite's live poll checks append the same mail to a real mailbox
and read it back through ``poll``. Sends go to the real SMTP server, which is the
"provider mock": a scenario arranges it to refuse a recipient (``550``/``451``) or the
message (a ``DATA`` reply). Bounces are RFC 3464 reports and map through their Action
words.
"""

from __future__ import annotations

import base64
import hashlib
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from tidings import Address, DeliveryStatus, PolledBatch, PolledItem
from tidings.testing.conformance import (
    BadSettings,
    ChannelConformance,
    ExpectedAttachment,
    ExpectedMessage,
    ExpectedStatus,
    InboundSample,
    SendScenario,
    StatusSample,
)
from tidings.testing.mailservers import DovecotServer, MailUser, SmtpServer

pytest_plugins = ["tidings.testing.conformance", "tidings.testing.mailservers"]

CUSTOMER = "jan.kowalski@example.org"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

# RFC 3464 Action words and what an agent is told.
DSN_ACTIONS: Mapping[str, DeliveryStatus] = {
    "failed": DeliveryStatus.UNDELIVERED,
    "delayed": DeliveryStatus.UNKNOWN,
    "delivered": DeliveryStatus.DELIVERED,
    "expanded": DeliveryStatus.DELIVERED,
    "relayed": DeliveryStatus.SENT,
}
_DSN_STATUS = {"failed": "5.1.1", "delayed": "4.4.1"}


def crlf(text: str) -> bytes:
    """Dedent and use CRLF line ends, as IMAP serves mail."""
    body = textwrap.dedent(text).lstrip("\n")
    return body.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def b64(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def plain(message_id: str | None, subject: str, text: str, to: str) -> bytes:
    header = f"Message-ID: {message_id}\n" if message_id else ""
    return crlf(
        f"From: Jan Kowalski <{CUSTOMER}>\n"
        f"To: {to}\n"
        f"Subject: {subject}\n"
        "Date: Mon, 03 Mar 2025 10:15:00 +0100\n"
        f"{header}"
        "MIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="utf-8"\n'
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        f"{text}\n"
    )


def gmail_reply(to: str) -> bytes:
    """Gmail's reply: alternative(plain quoted-printable, html), threaded by headers."""
    return crlf(f"""\
        MIME-Version: 1.0
        References: <first@example.org> <ticket-1@example.test>
        In-Reply-To: <ticket-1@example.test>
        From: =?UTF-8?Q?Jan_Kowalski?= <{CUSTOMER}>
        Date: Tue, 4 Mar 2025 09:01:12 +0100
        Message-ID: <CAF=gmail-reply-1@mail.gmail.com>
        Subject: Re: [Ticket #1] =?UTF-8?Q?Zam=C3=B3wienie_1234?=
        To: Support <{to}>
        Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f6"

        --000000000000a1b2c3d4e5f6
        Content-Type: text/plain; charset="UTF-8"
        Content-Transfer-Encoding: quoted-printable

        Dzi=C4=99kuj=C4=99, paczka dotar=C5=82a.

        --000000000000a1b2c3d4e5f6
        Content-Type: text/html; charset="UTF-8"
        Content-Transfer-Encoding: quoted-printable

        <div dir=3D"ltr">Dzi=C4=99kuj=C4=99, paczka <b>dotar=C5=82a</b>.</div>

        --000000000000a1b2c3d4e5f6--
        """)


def with_attachments(to: str) -> bytes:
    """Thunderbird: mixed(plain, PDF named per RFC 2231, PNG named per RFC 2047)."""
    return crlf(f"""\
        Message-ID: <a1b2c3d4-tb@example.org>
        Date: Thu, 6 Mar 2025 14:00:00 +0100
        MIME-Version: 1.0
        User-Agent: Mozilla Thunderbird
        To: {to}
        From: Jan Kowalski <{CUSTOMER}>
        Subject: =?UTF-8?B?RmFrdHVyYSB6YSBtYXJ6ZWM=?=
        Content-Type: multipart/mixed; boundary="------------tbBoundary01"

        This is a multi-part message in MIME format.
        --------------tbBoundary01
        Content-Type: text/plain; charset=UTF-8; format=flowed
        Content-Transfer-Encoding: 7bit

        Please find the invoice attached.

        --------------tbBoundary01
        Content-Type: application/pdf;
         name*=UTF-8''Faktura%20%C5%BC%C3%B3%C5%82ta.pdf
        Content-Disposition: attachment;
         filename*=UTF-8''Faktura%20%C5%BC%C3%B3%C5%82ta.pdf
        Content-Transfer-Encoding: base64

        {textwrap.indent(b64(PDF), " " * 8).strip()}
        --------------tbBoundary01
        Content-Type: image/png; name="=?UTF-8?B?emRqxJljaWUucG5n?="
        Content-Disposition: attachment; filename="=?UTF-8?B?emRqxJljaWUucG5n?="
        Content-Transfer-Encoding: base64

        {textwrap.indent(b64(PNG), " " * 8).strip()}
        --------------tbBoundary01--
        """)


def bounce(original_id: str, action: str, to: str, *, headers_only: bool = False) -> bytes:
    """A Postfix delivery report (RFC 3464) about our message ``original_id``."""
    status = _DSN_STATUS.get(action, "2.0.0")
    kind = "text/rfc822-headers" if headers_only else "message/rfc822"
    original = (
        f"Content-Type: {kind}\n\n"
        f"From: Support <{to}>\nTo: nobody@example.org\nSubject: Your request\n"
        f"Message-ID: {original_id}\nDate: Mon, 10 Mar 2025 08:59:00 +0100\n"
    )
    if not headers_only:
        original += "Content-Type: text/plain; charset=utf-8\n\nHello, about your request...\n"
    text = (
        "Date: Mon, 10 Mar 2025 09:00:00 +0100 (CET)\n"
        "From: MAILER-DAEMON@mx.example.test (Mail Delivery System)\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"To: {to}\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        f"Message-ID: <dsn-{action}-{hashlib.sha256(original_id.encode()).hexdigest()[:12]}"
        "@mx.example.test>\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"\n'
        "\n"
        "--B0UND\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "This is the mail system at host mx.example.test.\n"
        "\n"
        "--B0UND\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.example.test\n"
        "\n"
        "Final-Recipient: rfc822; nobody@example.org\n"
        f"Action: {action}\n"
        f"Status: {status}\n"
        f"Diagnostic-Code: smtp; {'550' if status.startswith('5') else '250'} {status}\n"
        "\n"
        "--B0UND\n"
        f"{original}"
        "\n"
        "--B0UND--\n"
    )
    return text.replace("\n", "\r\n").encode()


def batch(first_uid: int, *mails: bytes) -> PolledBatch:
    """Mail as ``poll`` yields it: UIDs in order, the cursor after the last one."""
    items = tuple(
        PolledItem(
            id=str(first_uid + n),
            data=raw,
            meta={"uid": first_uid + n, "uidvalidity": 1741000000, "folder": "INBOX"},
        )
        for n, raw in enumerate(mails)
    )
    last = first_uid + len(mails) - 1
    return PolledBatch(
        items=items, cursor={"uidvalidity": 1741000000, "last_uid": last}, source="INBOX"
    )


def attachments_of(raw: bytes) -> list[ExpectedAttachment]:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    out = []
    for part in message.walk():
        filename = part.get_filename()
        if filename and not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(ExpectedAttachment(filename, part.get_content_type(), len(payload)))
    return out


class TestEmailImapConformance(ChannelConformance):
    plugin = "email_imap"
    channel_name = "email_imap"

    @pytest.fixture
    def mailbox(self, imap_server: DovecotServer) -> MailUser:
        """The support mailbox the account reads: fresh for every check."""
        return imap_server.add_user()

    @pytest.fixture
    def account_settings(
        self, imap_server: DovecotServer, smtp_server: SmtpServer, mailbox: MailUser
    ) -> Mapping[str, Any]:
        return {
            "address": mailbox.address,
            "display_name": "Support Team",
            "imap_host": imap_server.host,
            "imap_port": imap_server.imap_port,
            "imap_security": "plain",
            "imap_password": mailbox.password,
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_security": "plain",
            "smtp_auth": False,
            "timeout": 10,
            "ca_file": str(imap_server.ca_file),
        }

    @pytest.fixture
    def bad_settings(self) -> Sequence[BadSettings]:
        return [
            BadSettings("not an address", {"address": "support at example"}, "address"),
            BadSettings("port out of range", {"imap_port": 70000}, "imap_port"),
            BadSettings("host with a line break", {"smtp_host": "mx\r\nRCPT"}, "smtp_host"),
            BadSettings("no such security", {"smtp_security": "tls13"}, "smtp_security"),
            BadSettings("fetch chunk of zero", {"fetch_chunk": 0}, "fetch_chunk"),
        ]

    @pytest.fixture
    def provider_mock(self, smtp_server: SmtpServer) -> Callable[[], AbstractContextManager[Any]]:
        """The real SMTP server, its refusal rules and records reset for each scenario."""

        @contextmanager
        def server() -> Iterator[SmtpServer]:
            smtp_server.reset()
            try:
                yield smtp_server
            finally:
                smtp_server.reset()

        return server

    @pytest.fixture
    def inbound_samples(self, mailbox: MailUser) -> Sequence[InboundSample]:
        to = mailbox.address
        key = f"email:{CUSTOMER}"
        numbered = [
            plain(f"<bulk-{n}@example.org>", f"Message {n}", f"This is message {n}.", to)
            for n in range(3)
        ]
        return [
            InboundSample(
                "plain text",
                batch(1, plain("<simple-1@example.org>", "Order 1234", "Where is it?", to)),
                (ExpectedMessage(key, "<simple-1@example.org>", "Where is it?\n"),),
            ),
            InboundSample(
                "gmail reply",
                batch(2, gmail_reply(to)),
                (ExpectedMessage(key, "<CAF=gmail-reply-1@mail.gmail.com>"),),
            ),
            InboundSample(
                "attachments",
                batch(3, with_attachments(to)),
                (
                    ExpectedMessage(
                        key,
                        "<a1b2c3d4-tb@example.org>",
                        attachments=(
                            ExpectedAttachment("Faktura żółta.pdf", "application/pdf", len(PDF)),
                            ExpectedAttachment("zdjęcie.png", "image/png", len(PNG)),
                        ),
                    ),
                ),
            ),
            InboundSample(
                "no Message-ID (a content hash instead)",
                batch(4, plain(None, "No id", "My client sets no Message-ID.", to)),
                (ExpectedMessage(key, None, "My client sets no Message-ID.\n"),),
            ),
            InboundSample(
                "three in one batch",
                batch(5, *numbered),
                tuple(
                    ExpectedMessage(key, f"<bulk-{n}@example.org>", f"This is message {n}.\n")
                    for n in range(3)
                ),
            ),
            InboundSample(
                "a bounce is a delivery report, not a message",
                batch(8, bounce("<ours-1@example.test>", "failed", to)),
                (),
            ),
        ]

    @pytest.fixture
    def poll_source(
        self, imap_server: DovecotServer, mailbox: MailUser
    ) -> Callable[[Sequence[PolledBatch]], object]:
        def append(batches: Sequence[PolledBatch]) -> None:
            imap_server.append_many(mailbox, [item.data for b in batches for item in b.items])

        return append

    @pytest.fixture
    def recipient(self, imap_server: DovecotServer) -> Address:
        return Address.email(imap_server.add_user().address)

    @pytest.fixture
    def send_success(self) -> SendScenario:
        return SendScenario("accepted", lambda smtp: None, status=DeliveryStatus.SENT)

    @pytest.fixture
    def send_transient(self, recipient: Address) -> Sequence[SendScenario]:
        def greylisted(smtp: SmtpServer) -> None:
            smtp.tempfail.add(recipient.value)

        def full(smtp: SmtpServer) -> None:
            smtp.data_reply = "452 4.3.1 Insufficient system storage"

        return [
            SendScenario("recipient greylisted", greylisted, code="451"),
            SendScenario("server storage full", full, code="452"),
        ]

    @pytest.fixture
    def send_permanent(self, recipient: Address) -> Sequence[SendScenario]:
        def unknown(smtp: SmtpServer) -> None:
            smtp.reject.add(recipient.value)

        def spam(smtp: SmtpServer) -> None:
            smtp.data_reply = "554 5.7.1 Message rejected as spam"

        return [
            SendScenario("unknown recipient", unknown, code="550"),
            SendScenario("rejected as spam", spam, code="554"),
        ]

    @pytest.fixture
    def sent_attachments(self) -> Callable[[Any], Sequence[ExpectedAttachment]]:
        def read(smtp: SmtpServer) -> list[ExpectedAttachment]:
            assert smtp.deliveries, "the SMTP server accepted nothing"
            return attachments_of(smtp.deliveries[-1].data)

        return read

    @pytest.fixture
    def status_words(self) -> Mapping[str, DeliveryStatus]:
        return DSN_ACTIONS

    @pytest.fixture
    def sent_provider_id(self) -> Callable[[int], str]:
        return lambda n: f"<conformance-{n}@example.test>"

    @pytest.fixture
    def status_report(self, mailbox: MailUser) -> Callable[[str, str], PolledBatch]:
        return lambda provider_id, word: batch(50, bounce(provider_id, word, mailbox.address))

    @pytest.fixture
    def status_samples(self, mailbox: MailUser) -> Sequence[StatusSample]:
        ours = "<conformance-9@example.test>"
        return [
            StatusSample(
                "bounce quoting only the headers",
                batch(60, bounce(ours, "failed", mailbox.address, headers_only=True)),
                (ExpectedStatus(ours, DeliveryStatus.UNDELIVERED, "failed"),),
            )
        ]
