"""Email end to end through the real core, against real Dovecot and SMTP servers (issue 8).

receive → thread → reply → the reply arrives in the customer's mailbox and in our Sent
folder → the customer's answer threads back. Nothing is simulated: the customer's mail
goes through the test SMTP server into our Dovecot INBOX, ``sync_account`` stores it,
an agent replies with ``Conversations.send``, the outbox worker (``Outbox.run_once``)
sends it over SMTP (STARTTLS and AUTH), and the customer's answer is threaded by its
headers alone (its subject is unrelated on purpose).
"""

from __future__ import annotations

import smtplib
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "email_imap" / "tests"))
import email_imap_samples as samples

from tidings.config import parse_config
from tidings.conversations import Draft, View
from tidings.conversations.models import Role
from tidings.intake import sync_account
from tidings.plugins import load_plugins
from tidings.routing import add_agent
from tidings.runtime import Runtime
from tidings.store import tables
from tidings.testing.mailservers import DovecotServer, MailUser, SmtpServer

pytestmark = pytest.mark.anyio

ACCOUNT = "support-mail"
FIRST_ID = "<order-77-question@customer.example>"
ANSWER_ID = "<order-77-answer@customer.example>"


@pytest.fixture
async def runtime(
    database_url: str,
    tmp_path: Path,
    imap_server: DovecotServer,
    smtp_server: SmtpServer,
    mail_user: MailUser,
) -> AsyncIterator[Runtime]:
    config = parse_config(
        {
            "database_url": database_url,
            "accounts": [
                {
                    "id": ACCOUNT, "channel": "email_imap", "project": "support",
                    "address": mail_user.address, "display_name": "Example Support",
                    "imap_host": imap_server.host, "imap_port": imap_server.imap_port,
                    "imap_security": "starttls", "imap_password": mail_user.password,
                    "smtp_host": smtp_server.host, "smtp_port": smtp_server.port,
                    "smtp_security": "starttls", "ca_file": str(imap_server.ca_file),
                    "idle": False, "timeout": 15,
                }
            ],
        },
        {},
        tmp_path / "tidings.toml",
    )  # fmt: skip
    smtp_server.reset()
    rt = Runtime.start(config, plugins=load_plugins({"TIDINGS_PLUGINS": "email_imap"}))
    await rt.store.upgrade()
    try:
        yield rt
    finally:
        await rt.close()


def customer_mail(customer: MailUser, support: MailUser) -> bytes:
    return samples.simple(
        message_id=FIRST_ID,
        sender=customer.address,
        to=support.address,
        subject="Order 77: wrong size delivered",
        text="Hello,\nI ordered size M and got XL. Can I exchange it?\nJan",
    )


def customer_answer(customer: MailUser, support: MailUser, ours: EmailMessage) -> bytes:
    """What the customer's mail program writes when they answer our reply."""
    references = f"{ours['References']} {ours['Message-ID']}"
    return samples.crlf(
        f"From: Jan Kowalski <{customer.address}>\n"
        f"To: Example Support <{support.address}>\n"
        "Subject: new address for the exchange parcel\n"
        f"Date: {format_datetime(datetime.now(UTC) + timedelta(minutes=5))}\n"
        f"Message-ID: {ANSWER_ID}\n"
        f"In-Reply-To: {ours['Message-ID']}\n"
        f"References: {references}\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "Thanks! Please send the M to my office instead.\n"
    )


def parsed(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_receive_thread_reply_and_the_answer_threads_back(
    runtime: Runtime,
    imap_server: DovecotServer,
    smtp_server: SmtpServer,
    mail_user: MailUser,
) -> None:
    support, customer = mail_user, imap_server.add_user()
    account = runtime.accounts[ACCOUNT]

    # 1. The customer writes; the mail travels SMTP → LMTP → our INBOX.
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=30) as smtp:
        smtp.sendmail(customer.address, [support.address], customer_mail(customer, support))
    first = await sync_account(runtime, account)
    assert len(first.messages.stored) == 1
    (conversation_id,) = first.messages.conversations
    assert all("\\Seen" in f for f in imap_server.flags(support).values())

    # 2. An agent replies; the outbox worker sends it through the real SMTP server.
    agent = await add_agent(runtime.store, "alice", role=Role.AGENT,
                            permissions=[("support", "email")])  # fmt: skip
    actor = await runtime.conversations.actor(agent)
    sent = await runtime.conversations.send(
        actor,
        Draft(text="Of course: we send size M today.", subject="Re: Order 77: wrong size"),
        conversation_id=conversation_id,
        delay=timedelta(0),
    )
    assert sent.conversation_id == conversation_id
    outcome = await runtime.outbox.run_once()
    assert (outcome.sent, outcome.failed, outcome.requeued, outcome.unknown) == (1, 0, 0, 0)
    assert len(smtp_server.deliveries) == 2  # the customer's mail, then our reply
    delivery = smtp_server.deliveries[-1]
    assert delivery.login == support.address  # authenticated submission over STARTTLS
    assert delivery.rcpt_tos == [customer.address]

    # 3. It arrived in the customer's mailbox, and a copy is in our Sent folder.
    (inbox_raw,) = imap_server.messages(customer)
    (sent_raw,) = imap_server.messages(support, "Sent")
    for raw in (inbox_raw, sent_raw):
        ours = parsed(raw)
        assert ours["In-Reply-To"] == FIRST_ID
        assert FIRST_ID in ours["References"].split()
        assert ours["From"].addresses[0].addr_spec == support.address
        assert ours["To"].addresses[0].addr_spec == customer.address
        assert ours["Subject"] == "Re: Order 77: wrong size"
        assert ours.get_content().strip() == "Of course: we send size M today."
    assert parsed(inbox_raw)["Message-ID"] == parsed(sent_raw)["Message-ID"]
    assert all("\\Seen" in f for f in imap_server.flags(support, "Sent").values())
    async with runtime.store.read() as conn:
        row = (
            await conn.execute(
                sa.select(tables.messages).where(tables.messages.c.id == sent.message_id)
            )
        ).one()
    assert row.status == "sent"
    assert row.provider_id == parsed(inbox_raw)["Message-ID"]
    assert row.provider_id.endswith("@example.test>")  # our domain, not a placeholder

    # 4. The customer answers our reply; it lands in our INBOX and threads back by headers.
    imap_server.append(support, customer_answer(customer, support, parsed(inbox_raw)))
    second = await sync_account(runtime, account)
    assert len(second.messages.stored) == 1
    assert second.messages.conversations == {conversation_id}
    assert not second.messages.created

    boss = await add_agent(runtime.store, "boss", role=Role.SUPERVISOR, can_view_all=True,
                           permissions=[("support", "email")])  # fmt: skip
    supervisor = await runtime.conversations.actor(boss)
    (summary,) = await runtime.conversations.view(supervisor, View.ALL)
    assert summary.id == conversation_id
    detail = await runtime.conversations.get(supervisor, conversation_id)
    assert [(m.direction, m.provider_id) for m in detail.messages] == [
        ("in", FIRST_ID),
        ("out", row.provider_id),
        ("in", ANSWER_ID),
    ]
    assert detail.messages[2].text.startswith("Thanks! Please send the M")
    assert all("\\Seen" in f for f in imap_server.flags(support).values())
    # Syncing again finds nothing new: every message is stored once.
    again = await sync_account(runtime, account)
    assert again.messages.stored == []
    assert again.messages.duplicates == 0
