"""Realistic raw mail for tests: what Gmail, Outlook, Thunderbird, Postfix and auto-responders
actually put on the wire, written out by hand so every byte is deliberate.

Each builder returns the RFC 5322 bytes (CRLF line ends, as IMAP serves them). Parameters
let a test choose ids and addresses; the defaults are consistent with each other. Reused by
the channel conformance suite, so keep the signatures stable.
"""

from __future__ import annotations

import base64
import textwrap

CUSTOMER = "jan.kowalski@example.org"
SUPPORT = "support@example.test"

# A 1x1 transparent PNG: a real image, small enough to read in a diff.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PDF_SMALL = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def crlf(text: str) -> bytes:
    """Dedent, normalise line ends to CRLF and encode (8-bit bytes kept as given)."""
    body = textwrap.dedent(text).lstrip("\n")
    return body.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def b64(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def simple(
    *,
    message_id: str | None = "<simple-1@example.org>",
    sender: str = CUSTOMER,
    to: str = SUPPORT,
    subject: str = "Order 1234 has not arrived",
    text: str = "Hello,\nmy order 1234 has not arrived yet.\nJan",
    date: str = "Mon, 03 Mar 2025 10:15:00 +0100",
) -> bytes:
    """A plain text/plain message, as a minimal client writes it."""
    mid = f"Message-ID: {message_id}\n" if message_id else ""
    return crlf(
        f"From: Jan Kowalski <{sender}>\n"
        f"To: {to}\n"
        f"Subject: {subject}\n"
        f"Date: {date}\n"
        f"{mid}"
        "MIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="utf-8"\n'
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        f"{text}\n"
    )


def gmail_reply(
    *,
    message_id: str = "<CAF=gmail-reply-1@mail.gmail.com>",
    in_reply_to: str = "<ticket-1@example.test>",
    references: str = "<first@example.org> <ticket-1@example.test>",
) -> bytes:
    """Gmail's reply: multipart/alternative, quoted history in a ``gmail_quote`` div."""
    return crlf(
        f"""\
        MIME-Version: 1.0
        References: {references}
        In-Reply-To: {in_reply_to}
        From: =?UTF-8?Q?Jan_Kowalski_=C5=BB=C3=B3=C5=82w?= <{CUSTOMER}>
        Date: Tue, 4 Mar 2025 09:01:12 +0100
        Message-ID: {message_id}
        Subject: Re: [Ticket #1] =?UTF-8?Q?Zam=C3=B3wienie_1234?=
        To: Support <{SUPPORT}>
        Cc: "Anna Nowak" <anna@example.org>, bad-address-without-at
        Content-Type: multipart/alternative; boundary="000000000000a1b2c3d4e5f6"

        --000000000000a1b2c3d4e5f6
        Content-Type: text/plain; charset="UTF-8"
        Content-Transfer-Encoding: quoted-printable

        Dzi=C4=99kuj=C4=99, paczka dotar=C5=82a.

        On Mon, 3 Mar 2025 at 18:00, Support <{SUPPORT}> wrote:
        > Your parcel is on its way.

        --000000000000a1b2c3d4e5f6
        Content-Type: text/html; charset="UTF-8"
        Content-Transfer-Encoding: quoted-printable

        <div dir=3D"ltr">Dzi=C4=99kuj=C4=99, paczka <b>dotar=C5=82a</b>.<script>al=
        ert(1)</script><img src=3D"x" onerror=3D"steal()"></div><br><div class=3D"=
        gmail_quote"><div dir=3D"ltr" class=3D"gmail_attr">On Mon, 3 Mar 2025 at 1=
        8:00, Support wrote:<br></div><blockquote class=3D"gmail_quote">Your parce=
        l is on its way.</blockquote></div>

        --000000000000a1b2c3d4e5f6--
        """
    )


def outlook_reply_inline_image(
    *, message_id: str = "<AM0PR01MB1234@eurprd01.outlook.com>"
) -> bytes:
    """Outlook: related(alternative(plain, html), image) in windows-1252, a cid: image."""
    raw = """\
        From: Anna Nowak <anna@example.org>
        To: "support@example.test" <{SUPPORT}>
        Subject: AW: Rechnung
        Thread-Topic: Rechnung
        Thread-Index: AQHZ1234abcd
        Date: Wed, 5 Mar 2025 08:30:00 +0000
        Message-ID: {message_id}
        In-Reply-To: <ticket-2@example.test>
        References: <ticket-2@example.test>
        Accept-Language: de-DE, en-US
        Content-Language: de-DE
        X-MS-Has-Attach: yes
        Content-Type: multipart/related;
        \tboundary="_004_AM0PR01MB1234_";
        \ttype="multipart/alternative"
        MIME-Version: 1.0

        --_004_AM0PR01MB1234_
        Content-Type: multipart/alternative;
        \tboundary="_000_AM0PR01MB1234_"

        --_000_AM0PR01MB1234_
        Content-Type: text/plain; charset="windows-1252"
        Content-Transfer-Encoding: quoted-printable

        Gr=FC=DFe, anbei das Logo =96 bitte pr=FCfen.

        --_000_AM0PR01MB1234_
        Content-Type: text/html; charset="windows-1252"
        Content-Transfer-Encoding: quoted-printable

        <html><head><style>p{{color:red}}</style></head><body><p style=3D"color:#1F49=
        7D;position:fixed">Gr=FC=DFe</p><img width=3D"1" height=3D"1" src=3D"cid:imag=
        e001.png@01DB8D2E.12345670"></body></html>

        --_000_AM0PR01MB1234_--

        --_004_AM0PR01MB1234_
        Content-Type: image/png; name="image001.png"
        Content-Description: image001.png
        Content-Disposition: inline; filename="image001.png"; size=68
        Content-ID: <image001.png@01DB8D2E.12345670>
        Content-Transfer-Encoding: base64

        {image}

        --_004_AM0PR01MB1234_--
        """
    return crlf(
        textwrap.dedent(raw).format(SUPPORT=SUPPORT, message_id=message_id, image=b64(PNG_1X1))
    )


def thunderbird_attachments(*, message_id: str = "<a1b2c3d4-tb@example.org>") -> bytes:
    """Thunderbird: mixed(plain format=flowed, PDF with an RFC 2231 name, image with an
    RFC 2047 name — the non-standard form many mailers still send)."""
    raw = """\
        Message-ID: {message_id}
        Date: Thu, 6 Mar 2025 14:00:00 +0100
        MIME-Version: 1.0
        User-Agent: Mozilla Thunderbird
        Content-Language: pl
        To: {SUPPORT}
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

        {pdf}
        --------------tbBoundary01
        Content-Type: image/png; name="=?UTF-8?B?emRqxJljaWUucG5n?="
        Content-Disposition: attachment; filename="=?UTF-8?B?emRqxJljaWUucG5n?="
        Content-Transfer-Encoding: base64

        {png}
        --------------tbBoundary01--
        """
    return crlf(
        textwrap.dedent(raw).format(
            SUPPORT=SUPPORT,
            CUSTOMER=CUSTOMER,
            message_id=message_id,
            pdf=b64(PDF_SMALL),
            png=b64(PNG_1X1),
        )
    )


def wrong_charsets(*, message_id: str = "<charset-mess@example.org>") -> bytes:
    """Declared us-ascii but UTF-8 bytes inside, an unknown charset, a nameless part."""
    return crlf(
        f"""\
        From: =?x-unknown?Q?Broken?= <{CUSTOMER}>
        To: {SUPPORT}
        Subject: =?utf-8?B?invalid base64?= and =?iso-8859-2?Q?=B1=E6?=
        Message-ID: {message_id}
        Date: not a date at all
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="b1"

        --b1
        Content-Type: text/plain; charset="us-ascii"
        Content-Transfer-Encoding: 8bit

        Zażółć gęślą jaźń
        --b1
        Content-Type: text/plain; charset="x-made-up"; name="notes.txt"
        Content-Disposition: attachment

        plain notes
        --b1
        Content-Type: application/octet-stream
        Content-Transfer-Encoding: base64

        AAECAw==
        --b1--
        """
    )


def forward_with_eml(*, message_id: str = "<fwd-1@example.org>") -> bytes:
    """A forward as attachment: the original is a message/rfc822 part (becomes an .eml)."""
    return crlf(
        f"""\
        From: Jan Kowalski <{CUSTOMER}>
        To: {SUPPORT}
        Subject: Fwd: Your delivery
        Message-ID: {message_id}
        Date: Fri, 7 Mar 2025 11:00:00 +0100
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="fwd"

        --fwd
        Content-Type: text/plain; charset=utf-8

        See the courier's mail below.
        --fwd
        Content-Type: message/rfc822
        Content-Disposition: attachment

        From: Courier <noreply@courier.example>
        To: {CUSTOMER}
        Subject: Your delivery
        Message-ID: <courier-99@courier.example>
        Date: Thu, 6 Mar 2025 10:00:00 +0100
        Content-Type: text/plain; charset=utf-8

        Parcel 99 is delayed.
        --fwd--
        """
    )


def calendar_invite(*, message_id: str = "<invite-1@example.org>") -> bytes:
    """Outlook-style meeting request: alternative(plain, html, text/calendar METHOD=REQUEST)."""
    return crlf(
        f"""\
        From: Anna Nowak <anna@example.org>
        To: {SUPPORT}
        Subject: Call about the contract
        Message-ID: {message_id}
        Date: Mon, 10 Mar 2025 09:00:00 +0100
        MIME-Version: 1.0
        Content-Type: multipart/alternative; boundary="cal"

        --cal
        Content-Type: text/plain; charset=utf-8

        When: Tuesday 11 March 10:00-10:30
        --cal
        Content-Type: text/html; charset=utf-8

        <p>When: <b>Tuesday 11 March</b> 10:00-10:30</p>
        --cal
        Content-Type: text/calendar; charset=utf-8; method=REQUEST

        BEGIN:VCALENDAR
        METHOD:REQUEST
        PRODID:Microsoft Exchange Server 2010
        VERSION:2.0
        BEGIN:VEVENT
        UID:040000008200E00074C5B7101A82E008
        DTSTART:20250311T090000Z
        DTEND:20250311T093000Z
        SUMMARY:Call about the contract
        END:VEVENT
        END:VCALENDAR
        --cal--
        """
    )


def html_only(*, message_id: str = "<html-only@example.org>") -> bytes:
    """A newsletter-like HTML-only mail: the text has to be derived from the HTML."""
    return crlf(
        f"""\
        From: Shop <shop@example.org>
        To: {SUPPORT}
        Subject: Your account
        Message-ID: {message_id}
        Date: Mon, 10 Mar 2025 09:00:00 +0100
        MIME-Version: 1.0
        Content-Type: text/html; charset=utf-8

        <html><head><title>T</title><style>.x{{}}</style></head><body>
        <h1>Hello&nbsp;Jan</h1><p>Line one<br>Line two</p>
        <a href="javascript:alert(1)">bad</a> <a href="https://shop.example/x">good</a>
        <form action="https://evil.example"><input name="pw"></form>
        </body></html>
        """
    )


def vacation_reply(
    *,
    message_id: str = "<oof-1@example.org>",
    in_reply_to: str = "<ticket-3@example.test>",
    subject: str = "Automatic reply: Your request",
    auto_submitted: str | None = "auto-replied",
) -> bytes:
    """An out-of-office answer (RFC 3834 Auto-Submitted, Exchange-style subject)."""
    auto = f"Auto-Submitted: {auto_submitted}\n" if auto_submitted else ""
    return crlf(
        "From: Anna Nowak <anna@example.org>\n"
        f"To: {SUPPORT}\n"
        f"Subject: {subject}\n"
        f"Message-ID: {message_id}\n"
        f"In-Reply-To: {in_reply_to}\n"
        "Date: Mon, 10 Mar 2025 09:00:00 +0100\n"
        f"{auto}"
        "X-Auto-Response-Suppress: All\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "I am out of the office until Monday.\n"
    )


def dsn_bounce(
    *,
    original_message_id: str,
    recipient: str = "nobody@example.org",
    status: str = "5.1.1",
    action: str = "failed",
    diagnostic: str = "smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected: "
    "User unknown in virtual mailbox table",
    headers_only: bool = False,
    message_id: str = "<20250310090000.ABCDE12345@mx.example.test>",
) -> bytes:
    """A Postfix bounce (RFC 3464): report(plain, delivery-status, original message or its
    headers)."""
    if headers_only:
        original = (
            "Content-Type: text/rfc822-headers\n"
            "Content-Description: Undelivered Message Headers\n\n"
            f"From: Support <{SUPPORT}>\nTo: {recipient}\nSubject: Your request\n"
            f"Message-ID: {original_message_id}\nDate: Mon, 10 Mar 2025 08:59:00 +0100\n"
        )
    else:
        original = (
            "Content-Type: message/rfc822\n"
            "Content-Description: Undelivered Message\n\n"
            f"From: Support <{SUPPORT}>\nTo: {recipient}\nSubject: Your request\n"
            f"Message-ID: {original_message_id}\nDate: Mon, 10 Mar 2025 08:59:00 +0100\n"
            "Content-Type: text/plain; charset=utf-8\n\nHello, about your request...\n"
        )
    text = (
        f"Date: Mon, 10 Mar 2025 09:00:00 +0100 (CET)\n"
        f"From: MAILER-DAEMON@mx.example.test (Mail Delivery System)\n"
        f"Subject: Undelivered Mail Returned to Sender\n"
        f"To: {SUPPORT}\n"
        f"Auto-Submitted: auto-replied\n"
        f"MIME-Version: 1.0\n"
        f"Message-ID: {message_id}\n"
        f'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="B0UND"\n'
        f"\n"
        f"This is a MIME-encapsulated message.\n"
        f"\n"
        f"--B0UND\n"
        f"Content-Description: Notification\n"
        f"Content-Type: text/plain; charset=us-ascii\n"
        f"\n"
        f"This is the mail system at host mx.example.test.\n"
        f"I'm sorry to have to inform you that your message could not\n"
        f"be delivered to one or more recipients.\n"
        f"\n"
        f"--B0UND\n"
        f"Content-Description: Delivery report\n"
        f"Content-Type: message/delivery-status\n"
        f"\n"
        f"Reporting-MTA: dns; mx.example.test\n"
        f"X-Postfix-Queue-ID: ABCDE12345\n"
        f"Arrival-Date: Mon, 10 Mar 2025 08:59:00 +0100 (CET)\n"
        f"\n"
        f"Final-Recipient: rfc822; {recipient}\n"
        f"Original-Recipient: rfc822;{recipient}\n"
        f"Action: {action}\n"
        f"Status: {status}\n"
        f"Remote-MTA: dns; mail.example.org\n"
        f"Diagnostic-Code: {diagnostic}\n"
        f"\n"
        f"--B0UND\n"
        f"{original}"
        f"\n"
        f"--B0UND--\n"
    )
    return text.replace("\n", "\r\n").encode()


def numbered(index: int, *, prefix: str = "bulk") -> bytes:
    """The ``index``-th of many distinct small messages (for sync and streaming tests)."""
    return simple(
        message_id=f"<{prefix}-{index}@example.org>",
        subject=f"Message {index}",
        text=f"This is message number {index}.",
    )
