"""receive and delivery_status on a realistic corpus, through the plugin handle."""

from __future__ import annotations

import hashlib
from email import policy
from typing import Any

import email_imap_samples as samples
import pytest
from email_imap_helpers import handle
from pydantic import ValidationError

from tidings import (
    Account,
    DeliveryStatus,
    MalformedPayload,
    PolledBatch,
    PolledItem,
    WebhookRequest,
)
from tidings_email_imap import EmailSettings
from tidings_email_imap.parse import parse_headers, plain_mailboxes, raw_header, sanitize_html


def make_account(**overrides: Any) -> Account[EmailSettings]:
    values: dict[str, Any] = {
        "address": samples.SUPPORT,
        "imap_host": "imap.example.test",
        "imap_password": "pw",
        "smtp_host": "smtp.example.test",
        **overrides,
    }
    return Account[EmailSettings](
        id="support-mail",
        channel="email_imap",
        project="support",
        settings=EmailSettings.model_validate(values),
    )


def batch(*raws: bytes, start_uid: int = 1) -> PolledBatch:
    return PolledBatch(
        items=tuple(
            PolledItem(
                id=str(start_uid + i),
                data=raw,
                meta={
                    "uid": start_uid + i,
                    "folder": "INBOX",
                    "flags": [],
                    "internaldate": "10-Mar-2025 09:00:00 +0100",
                },
            )
            for i, raw in enumerate(raws)
        ),
        cursor={"uidvalidity": 7, "last_uid": start_uid + len(raws) - 1},
        source="INBOX",
    )


async def receive_one(raw: bytes) -> Any:
    (message,) = await handle().receive(make_account(), batch(raw))
    return message


@pytest.mark.anyio
async def test_gmail_reply_threading_names_and_sanitised_html() -> None:
    raw = samples.gmail_reply()
    msg = await receive_one(raw)
    assert msg.provider_id == "<CAF=gmail-reply-1@mail.gmail.com>"
    assert (msg.sender.value, msg.sender.name) == (samples.CUSTOMER, "Jan Kowalski Żółw")
    assert [a.value for a in msg.recipients] == [samples.SUPPORT]
    assert [(a.value, a.name) for a in msg.cc] == [("anna@example.org", "Anna Nowak")]
    assert msg.subject == "Re: [Ticket #1] Zamówienie 1234"
    assert msg.text.startswith("Dziękuję, paczka dotarła.\n")
    assert msg.thread.message_id == msg.provider_id
    assert msg.thread.in_reply_to == ("<ticket-1@example.test>",)
    assert msg.thread.references == ("<first@example.org>", "<ticket-1@example.test>")
    assert msg.html is not None
    assert "<b>dotarła</b>" in msg.html
    for dangerous in ("<script", "onerror", "alert(1)"):
        assert dangerous not in msg.html
    assert msg.sent_at.isoformat() == "2025-03-04T09:01:12+01:00"
    assert msg.source == raw
    assert msg.auto_reply is False
    assert msg.meta["uid"] == 1


@pytest.mark.anyio
async def test_outlook_inline_image_is_kept_as_cid_reference() -> None:
    msg = await receive_one(samples.outlook_reply_inline_image())
    # windows-1252: 0x96 is an en dash
    assert msg.text == "Grüße, anbei das Logo \u2013 bitte prüfen.\n"
    (image,) = msg.attachments
    assert (image.filename, image.content_type, image.inline) == ("image001.png", "image/png", True)
    assert image.content_id == "image001.png@01DB8D2E.12345670"
    assert image.data == samples.PNG_1X1
    assert image.sha256 == hashlib.sha256(samples.PNG_1X1).hexdigest()
    assert msg.html is not None
    assert 'src="cid:image001.png@01DB8D2E.12345670"' in msg.html
    assert "position" not in msg.html  # style filtered to harmless properties
    assert "color:#1F497D" in msg.html
    assert "<style" not in msg.html


@pytest.mark.anyio
async def test_rfc2231_and_rfc2047_attachment_names() -> None:
    msg = await receive_one(samples.thunderbird_attachments())
    assert msg.subject == "Faktura za marzec"
    assert [(a.filename, a.content_type, a.size) for a in msg.attachments] == [
        ("Faktura żółta.pdf", "application/pdf", len(samples.PDF_SMALL)),
        ("zdjęcie.png", "image/png", len(samples.PNG_1X1)),
    ]
    assert msg.attachments[0].data == samples.PDF_SMALL


@pytest.mark.anyio
async def test_wrong_and_unknown_charsets_are_tolerated() -> None:
    msg = await receive_one(samples.wrong_charsets())
    assert msg.text == "Zażółć gęślą jaźń"  # declared us-ascii, really UTF-8
    assert msg.sender.value == samples.CUSTOMER
    assert msg.subject is not None
    assert "ąć" in msg.subject
    names = [(a.filename, a.content_type) for a in msg.attachments]
    assert names == [("notes.txt", "text/plain"), ("attachment-3.bin", "application/octet-stream")]
    assert msg.attachments[1].data == b"\x00\x01\x02\x03"
    # An unparseable Date falls back to the server's INTERNALDATE.
    assert msg.sent_at.isoformat() == "2025-03-10T09:00:00+01:00"


@pytest.mark.anyio
async def test_forward_becomes_an_eml_attachment() -> None:
    msg = await receive_one(samples.forward_with_eml())
    (eml,) = msg.attachments
    assert (eml.filename, eml.content_type) == ("Your delivery.eml", "message/rfc822")
    assert eml.data is not None
    assert b"Message-ID: <courier-99@courier.example>" in eml.data
    assert b"Parcel 99 is delayed." in eml.data
    assert msg.text == "See the courier's mail below."


@pytest.mark.anyio
async def test_calendar_invite_is_an_ics_attachment() -> None:
    msg = await receive_one(samples.calendar_invite())
    (ics,) = msg.attachments
    assert (ics.filename, ics.content_type) == ("invite.ics", "text/calendar")
    assert ics.data is not None
    assert b"METHOD:REQUEST" in ics.data
    assert msg.text == "When: Tuesday 11 March 10:00-10:30"


@pytest.mark.anyio
async def test_html_only_mail_gets_derived_text() -> None:
    msg = await receive_one(samples.html_only())
    assert msg.text.splitlines()[:4] == ["Hello Jan", "", "Line one", "Line two"]
    assert msg.html is not None
    assert "javascript" not in msg.html
    assert "<form" not in msg.html
    assert "<input" not in msg.html
    assert 'href="https://shop.example/x"' in msg.html


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("subject", "auto_submitted", "expected"),
    [
        ("Automatic reply: Your request", "auto-replied", True),
        ("Re: Your request", "auto-replied", True),
        ("Out of Office: Your request", None, True),
        ("Abwesenheitsnotiz: Ihre Anfrage", None, True),
        ("Re: Your request", "no", False),
        ("Re: Your request", None, False),
    ],
)
async def test_auto_replies_are_recognised(
    subject: str, auto_submitted: str | None, expected: bool
) -> None:
    raw = samples.vacation_reply(subject=subject, auto_submitted=auto_submitted)
    assert (await receive_one(raw)).auto_reply is expected


@pytest.mark.anyio
async def test_precedence_bulk_is_auto() -> None:
    raw = samples.simple().replace(b"MIME-Version", b"Precedence: bulk\r\nMIME-Version")
    assert (await receive_one(raw)).auto_reply is True


@pytest.mark.anyio
async def test_missing_message_id_gets_a_stable_synthetic_id() -> None:
    raw = samples.simple(message_id=None)
    first = await receive_one(raw)
    # The same bytes under another UID (a resync after UIDVALIDITY changed): same id.
    (again,) = await handle().receive(make_account(), batch(raw, start_uid=900))
    assert first.provider_id == again.provider_id
    assert first.provider_id.endswith("@no-message-id.invalid>")
    other = await receive_one(samples.simple(message_id=None, text="different"))
    assert other.provider_id != first.provider_id


@pytest.mark.anyio
async def test_garbage_is_kept_not_lost() -> None:
    raw = b"\x00\xff\xfe not mail at all \r\n\r\n\x89PNG"
    msg = await receive_one(raw)
    assert msg.source == raw
    assert msg.provider_id.endswith("@no-message-id.invalid>")
    assert msg.sender.value  # a placeholder sender, never a crash


@pytest.mark.anyio
async def test_bounces_are_status_updates_not_messages() -> None:
    bounce = samples.dsn_bounce(original_message_id="<out-1@example.test>")
    delayed = samples.dsn_bounce(
        original_message_id="<out-2@example.test>", action="delayed", status="4.4.1",
        diagnostic="smtp; 451 4.4.1 try later", headers_only=True,
    )  # fmt: skip
    polled = batch(samples.simple(), bounce, delayed)
    channel = handle()
    messages = await channel.receive(make_account(), polled)
    assert [m.provider_id for m in messages] == ["<simple-1@example.org>"]
    updates = await channel.delivery_status(make_account(), polled)
    assert [(u.provider_id, u.status, u.raw_status, u.error_code) for u in updates] == [
        ("<out-1@example.test>", DeliveryStatus.UNDELIVERED, "failed", "5.1.1"),
        ("<out-2@example.test>", DeliveryStatus.UNKNOWN, "delayed", "4.4.1"),
    ]
    assert updates[0].error_message == (
        "550 5.1.1 <nobody@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert updates[0].raw == {
        "recipient": "nobody@example.org",
        "reporting_mta": "dns; mx.example.test",
    }
    # delayed is "unknown": rank 0, so it can never move a sent message backwards.
    assert updates[1].status.rank < DeliveryStatus.SENT.rank


@pytest.mark.anyio
async def test_webhook_requests_are_refused() -> None:
    request = WebhookRequest(url="https://x/webhooks/a/in", endpoint="in", body=b"{}")
    with pytest.raises(MalformedPayload):
        await handle().receive(make_account(), request)


def test_sanitize_keeps_cid_and_drops_handlers() -> None:
    cleaned = sanitize_html('<img src="cid:a@b" onload="x()"><a href="vbscript:x">y</a>')
    assert cleaned == '<img src="cid:a@b"><a rel="noopener noreferrer">y</a>'


def test_settings_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="imap_port"):
        make_account(imap_port=70000)
    with pytest.raises(ValidationError, match="address"):
        make_account(address="not-an-address")
    with pytest.raises(ValidationError, match="imap_security"):
        make_account(imap_security="tls-please")
    with pytest.raises(ValidationError, match=r"smtp_port: 25 does not work with smtp\.gmail\.com"):
        make_account(smtp_host="smtp.gmail.com", smtp_port=25)
    with pytest.raises(ValidationError, match="smtp_port: 25"):
        make_account(smtp_host="smtp.office365.com", smtp_port=25)
    assert make_account(smtp_host="mail.example.test", smtp_port=25).settings.smtp_port == 25


def test_secrets_never_appear_in_reprs() -> None:
    acct = make_account(imap_password="hunter2-secret", smtp_password="smtp-secret")
    assert "hunter2-secret" not in repr(acct)
    assert "smtp-secret" not in repr(acct.settings)
    assert "hunter2-secret" not in acct.model_dump_json()


@pytest.mark.parametrize(
    "value",
    [
        "jan@kowalski.pl",
        "<jan@kowalski.pl>",
        "Jan Kowalski <jan@kowalski.pl>",
        "Jan Kowalski<jan@kowalski.pl>",
        "O'Brien & Sons <info+shop@obrien.ie>, Support <support@example.test>",
        "a@b, c@d,e@f",
        "Customer 12 <Customer12@Example.org>",
    ],
)
def test_plain_mailboxes_read_as_the_header_registry_does(value: str) -> None:
    parsed = policy.default.header_factory("To", value)
    assert not parsed.defects
    assert plain_mailboxes(value) == [(a.display_name, a.addr_spec) for a in parsed.addresses]


@pytest.mark.parametrize(
    "value",
    [
        "Jan  Kowalski <jan@kowalski.pl>",
        "J. Kowalski <jan@kowalski.pl>",
        '"Kowalski, Jan" <jan@kowalski.pl>',
        "Jan Kowalski <jan@kowalski.pl> (work)",
        "=?UTF-8?Q?Jan_Kowalski_=C5=BB=C3=B3=C5=82w?= <jan@kowalski.pl>",
        "Żaneta <zaneta@example.pl>",
        "undisclosed-recipients:;",
        "Team: a@b, c@d;",
        "bad-address-without-at",
        "a@b,",
        "jan@[192.168.0.1]",
        "jan.@kowalski.pl",
        "Jan <jan@kowalski.pl",
        "",
    ],
)
def test_anything_but_plain_mailboxes_is_left_to_the_registry(value: str) -> None:
    assert plain_mailboxes(value) is None


def test_the_corpus_address_headers_read_as_the_registry_does() -> None:
    raws = [
        samples.simple(), samples.gmail_reply(), samples.outlook_reply_inline_image(),
        samples.thunderbird_attachments(), samples.wrong_charsets(), samples.forward_with_eml(),
        samples.calendar_invite(), samples.html_only(), samples.vacation_reply(),
    ]  # fmt: skip
    answered = 0
    for raw in raws:
        msg = parse_headers(raw)
        for name in ("From", "To", "Cc", "Reply-To", "Sender"):
            value = raw_header(msg, name)
            plain = plain_mailboxes(value) if value is not None else None
            if plain is not None:
                answered += 1
                expected = [(a.display_name, a.addr_spec) for a in msg[name].addresses]
                assert plain == expected, (name, value)
    assert answered >= len(raws)
