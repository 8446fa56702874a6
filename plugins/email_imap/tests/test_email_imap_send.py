"""send through the real SMTP server into Dovecot, the Sent copy, and error classes."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import email_imap_samples as samples
import pytest
from email_imap_helpers import account, handle

from tidings import (
    Address,
    Attachment,
    DeliveryStatus,
    OutboundMessage,
    PermanentSendError,
    Priority,
    ThreadHeaders,
    TransientSendError,
)
from tidings.testing.mailservers import DovecotServer, MailUser, SmtpServer

pytestmark = pytest.mark.anyio


def parsed(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def reply_to(customer: MailUser, **extra: object) -> OutboundMessage:
    values: dict[str, object] = {
        "id": "out-1",
        "to": (Address.email(customer.address, name="Jan Kowalski"),),
        "subject": "Re: Zamówienie 1234",
        "text": "Dzień dobry,\nyour parcel left today.",
        "html": '<p>Your parcel <b>left today</b>.</p><img src="cid:logo@tidings">',
        "thread": ThreadHeaders(
            in_reply_to=("<CAF=gmail-reply-1@mail.gmail.com>",),
            references=("<first@example.org>",),
        ),
        "priority": Priority.HIGH,
        "attachments": (
            Attachment(
                filename="Faktura żółta.pdf", content_type="application/pdf", data=samples.PDF_SMALL
            ),
            Attachment(
                filename="logo.png",
                content_type="image/png",
                data=samples.PNG_1X1,
                inline=True,
                content_id="logo@tidings",
            ),
        ),
    }
    values.update(extra)
    return OutboundMessage.model_validate(values)


async def test_send_arrives_with_headers_attachments_and_a_sent_copy(
    imap_server: DovecotServer, smtp_server: SmtpServer
) -> None:
    agent, customer, colleague, hidden = (imap_server.add_user() for _ in range(4))
    acct = account(imap_server, agent, smtp_server)
    message = reply_to(
        customer,
        cc=(Address.email(colleague.address),),
        bcc=(Address.email(hidden.address),),
    )
    result = await handle().send(acct, message)
    assert result.status is DeliveryStatus.SENT
    assert result.provider_id.endswith("@example.test>")

    (raw,) = imap_server.messages(customer)
    got = parsed(raw)
    assert got["Message-ID"] == result.provider_id
    assert got["From"] == f"Support Team <{agent.address}>"
    assert got["To"] == f"Jan Kowalski <{customer.address}>"
    assert got["Cc"] == colleague.address
    assert got["Bcc"] is None
    assert hidden.address.encode() not in raw.split(b"\r\n\r\n")[0].split(b"Delivered-To")[0]
    assert got["Subject"] == "Re: Zamówienie 1234"
    assert got["In-Reply-To"] == "<CAF=gmail-reply-1@mail.gmail.com>"
    assert got["References"] == "<first@example.org> <CAF=gmail-reply-1@mail.gmail.com>"
    assert (got["X-Priority"], got["Importance"]) == ("1 (Highest)", "high")
    assert got["Date"] is not None

    # What the customer got reads back through our own parser the same way.
    inbound = (await handle().receive(acct, _as_batch(raw))).pop()
    assert inbound.text.startswith("Dzień dobry,\nyour parcel left today.")
    names = {(a.filename, a.content_type, a.inline) for a in inbound.attachments}
    assert names == {
        ("Faktura żółta.pdf", "application/pdf", False),
        ("logo.png", "image/png", True),
    }
    assert {a.data for a in inbound.attachments} == {samples.PDF_SMALL, samples.PNG_1X1}

    # Bcc got it too (envelope only); so did the cc.
    assert len(imap_server.messages(hidden)) == 1
    assert len(imap_server.messages(colleague)) == 1

    # A copy in the agent's Sent folder (SPECIAL-USE \\Sent), flagged \\Seen.
    (copy,) = imap_server.messages(agent, "Sent")
    assert parsed(copy)["Message-ID"] == result.provider_id
    assert all("\\Seen" in f for f in imap_server.flags(agent, "Sent").values())
    assert result.raw is not None
    assert result.raw["sent_copy"]["folder"] == "Sent"


def _as_batch(raw: bytes):  # type: ignore[no-untyped-def]
    from tidings import PolledBatch, PolledItem

    return PolledBatch(items=(PolledItem(id="1", data=raw),), source="INBOX")


async def test_message_id_is_stable_across_retries(
    imap_server: DovecotServer, smtp_server: SmtpServer
) -> None:
    agent, customer = imap_server.add_user(), imap_server.add_user()
    acct = account(imap_server, agent, smtp_server, save_sent=False)
    first = await handle().send(acct, reply_to(customer))
    second = await handle().send(acct, reply_to(customer))
    assert first.provider_id == second.provider_id
    given = await handle().send(
        acct, reply_to(customer, id="out-2", thread=ThreadHeaders(message_id="<mine@example.test>"))
    )
    assert given.provider_id == "<mine@example.test>"


@pytest.mark.parametrize(
    "field",
    ["subject", "name", "in_reply_to", "filename"],
)
async def test_header_injection_is_refused(
    imap_server: DovecotServer, smtp_server: SmtpServer, field: str
) -> None:
    agent, customer = imap_server.add_user(), imap_server.add_user()
    acct = account(imap_server, agent, smtp_server)
    evil = "hello\r\nBcc: victim@example.org"
    changes: dict[str, object] = {
        "subject": {"subject": evil},
        "name": {"to": (Address.email(customer.address, name=evil),)},
        "in_reply_to": {"thread": ThreadHeaders(in_reply_to=(evil,))},
        "filename": {},
    }[field]
    message = reply_to(customer, **changes)
    if field == "filename":
        # Attachment names are sanitised by the model already; the channel checks anyway.
        message = reply_to(customer, attachments=(
            Attachment.model_construct(filename=evil, content_type="text/plain", data=b"x",
                                       inline=False, content_id=None, url=None),
        ))  # fmt: skip
    with pytest.raises(PermanentSendError) as info:
        await handle().send(acct, message)
    assert info.value.code == "header_injection"
    assert imap_server.messages(customer) == []


async def test_smtp_refusals_are_classified(
    imap_server: DovecotServer, smtp_server: SmtpServer
) -> None:
    agent, ok, gone, busy = (imap_server.add_user() for _ in range(4))
    smtp_server.reject.add(gone.address)
    smtp_server.tempfail.add(busy.address)
    acct = account(imap_server, agent, smtp_server, save_sent=False)

    with pytest.raises(PermanentSendError) as permanent:
        await handle().send(acct, reply_to(gone))
    assert permanent.value.code == "550"
    assert "5.1.1" in permanent.value.reason

    with pytest.raises(TransientSendError) as transient:
        await handle().send(acct, reply_to(busy))
    assert transient.value.code == "451"

    # Some accepted, one refused: sent (a retry would duplicate), refusal reported beside.
    partial = await handle().send(acct, reply_to(ok, cc=(Address.email(gone.address),)))
    assert partial.status is DeliveryStatus.SENT
    assert partial.raw is not None
    assert list(partial.raw["refused"]) == [gone.address]
    assert partial.raw["refused"][gone.address].startswith("550")
    assert len(imap_server.messages(ok)) == 1

    smtp_server.data_reply = "452 4.3.1 Insufficient system storage"
    try:
        with pytest.raises(TransientSendError) as data_error:
            await handle().send(acct, reply_to(ok, id="out-9"))
        assert data_error.value.code == "452"
    finally:
        smtp_server.data_reply = None


async def test_unreachable_server_is_transient(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    acct = account(imap_server, mail_user, None, smtp_port=1, timeout=3)
    with pytest.raises(TransientSendError):
        await handle().send(acct, reply_to(mail_user))


async def test_starttls_with_auth(imap_server: DovecotServer, smtp_server: SmtpServer) -> None:
    agent, customer = imap_server.add_user(), imap_server.add_user()
    acct = account(
        imap_server, agent, smtp_server, smtp_security="starttls", smtp_auth=True,
        smtp_host="localhost", save_sent=False,
    )  # fmt: skip
    await handle().send(acct, reply_to(customer))
    assert smtp_server.deliveries[-1].login == agent.address
    assert len(imap_server.messages(customer)) == 1
    wrong = account(
        imap_server, agent, smtp_server, smtp_security="starttls", smtp_auth=True,
        smtp_host="localhost", smtp_password="not-it", save_sent=False,
    )  # fmt: skip
    with pytest.raises(PermanentSendError, match="login refused"):
        await handle().send(wrong, reply_to(customer))
