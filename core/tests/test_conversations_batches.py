"""Ingesting many messages in one call, as a mailbox sync or a burst of webhooks does.

A batch is stored with a fixed number of statements, so the conversations it starts get
their ids before they are written and the attachments of all its messages are written
together: what each message ends up linked to must be exactly what one-by-one ingestion
gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from conversation_world import World, world  # noqa: F401
from driver_watch import watch_driver

from tidings import Address, Attachment, InboundMessage, ThreadHeaders
from tidings.conversations import Filters, View
from tidings.store import tables

pytestmark = pytest.mark.anyio


def mail(
    world: World,
    sender: str,
    subject: str,
    message_id: str,
    *,
    in_reply_to: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
    name: str | None = None,
    minutes: int = 0,
) -> InboundMessage:
    return InboundMessage(
        provider_id=message_id,
        sender=Address.email(sender, name=name),
        recipients=(Address.email("help@shop.example"),),
        subject=subject,
        text=subject,
        sent_at=world.ago(minutes=60 - minutes),
        thread=ThreadHeaders(message_id=message_id, in_reply_to=tuple(in_reply_to)),
        attachments=tuple(attachments),
    )


async def conversation_of(world: World, provider_id: str) -> int:
    async with world.store.read() as conn:
        m = tables.messages
        query = sa.select(m.c.conversation_id).where(m.c.provider_id == provider_id)
        return int((await conn.execute(query)).scalar_one())


async def test_threads_started_in_a_batch_collect_their_replies_in_the_same_batch(
    world: World,
) -> None:
    stored = await world.mail("jan@kowalski.pl", "Faktura", "<old@k.pl>", name="Jan Kowalski")
    (old,) = stored.conversations
    world.later(hours=2)
    batch = [
        mail(world, "ewa@nowak.pl", "Zwrot", "<a1@n.pl>", name="Ewa Nowak"),
        mail(world, "ola@lis.pl", "Dostawa", "<b1@l.pl>", name="Ola Lis", minutes=1),
        mail(world, "ewa@nowak.pl", "Re: Zwrot", "<a2@n.pl>", in_reply_to=["<a1@n.pl>"],
             name="Ewa Nowak", minutes=2),
        mail(world, "jan@kowalski.pl", "Re: Faktura", "<old2@k.pl>", in_reply_to=["<old@k.pl>"],
             minutes=3),
        # No In-Reply-To: threads by subject.
        mail(world, "ola@lis.pl", "Re: Dostawa", "<b2@l.pl>", name="Ola Lis", minutes=4),
        mail(world, "piotr@maj.pl", "Pytanie", "<c1@m.pl>", name="Piotr Maj", minutes=5),
    ]  # fmt: skip
    result = await world.svc.ingest("mail", batch)

    ewa, ola, piotr = [await conversation_of(world, p) for p in ("<a1@n.pl>", "<b1@l.pl>",
                                                                 "<c1@m.pl>")]  # fmt: skip
    assert len({ewa, ola, piotr, old}) == 4
    assert result.created == {ewa, ola, piotr}
    assert result.conversations == {ewa, ola, piotr, old}
    assert await conversation_of(world, "<a2@n.pl>") == ewa
    assert await conversation_of(world, "<b2@l.pl>") == ola
    assert await conversation_of(world, "<old2@k.pl>") == old
    counts = {s.id: s.metrics.message_count for s in await world.svc.view(world.boss, View.ALL)}
    assert counts == {old: 2, ewa: 2, ola: 2, piotr: 1}
    for cid in (ewa, ola, piotr):
        assert [e.kind for e in await world.svc.events(world.boss, cid)] == ["created"]
    # Each new conversation is indexed under its own customer's name.
    for name, cid in (("Nowak", ewa), ("Lis", ola), ("Maj", piotr)):
        found = await world.svc.view(world.boss, View.ALL, Filters(search=name))
        assert [s.id for s in found] == [cid]


async def test_attachments_of_a_batch_stay_with_their_messages(world: World) -> None:
    logo = Attachment(filename="logo.png", content_type="image/png", data=b"PNG" * 50,
                      inline=True, content_id="logo@k.pl")  # fmt: skip
    batch = [
        mail(world, "jan@kowalski.pl", "Umowa", "<u1@k.pl>",
             attachments=[Attachment(filename="umowa.pdf", data=b"%PDF-1"), logo]),
        mail(world, "ewa@nowak.pl", "Skan", "<s1@n.pl>", minutes=1),
        mail(world, "ewa@nowak.pl", "Re: Skan", "<s2@n.pl>", in_reply_to=["<s1@n.pl>"],
             minutes=2, attachments=[Attachment(filename="skan.pdf", data=b"%PDF-2"), logo]),
    ]  # fmt: skip
    await world.svc.ingest("mail", batch)

    found: dict[str, list[tuple[str, bool]]] = {}
    for provider_id in ("<u1@k.pl>", "<s1@n.pl>", "<s2@n.pl>"):
        detail = await world.svc.get(world.boss, await conversation_of(world, provider_id))
        (view,) = [v for v in detail.messages if v.provider_id == provider_id]
        found[provider_id] = sorted((a.filename, a.inline) for a in view.attachments)
    assert found == {
        "<u1@k.pl>": [("logo.png", True), ("umowa.pdf", False)],
        "<s1@n.pl>": [],
        "<s2@n.pl>": [("logo.png", True), ("skan.pdf", False)],
    }
    async with world.store.read() as conn:
        blobs = (await conn.execute(sa.select(tables.blobs.c.data))).scalars().all()
    assert sorted(blobs) == sorted([b"%PDF-1", b"%PDF-2", b"PNG" * 50])  # the logo once


async def test_ids_of_deleted_conversations_and_messages_are_never_handed_out_again(
    world: World,
) -> None:
    first = await world.svc.ingest(
        "mail", [mail(world, "jan@kowalski.pl", "Raz", "<r1@k.pl>"),
                 mail(world, "ewa@nowak.pl", "Dwa", "<r2@n.pl>", minutes=1)],
    )  # fmt: skip
    newest = max(first.conversations)
    await world.svc.delete(world.boss, newest)
    again = await world.svc.ingest(
        "mail", [mail(world, "ola@lis.pl", "Trzy", "<r3@l.pl>", minutes=2),
                 mail(world, "piotr@maj.pl", "Cztery", "<r4@m.pl>", minutes=3)],
    )  # fmt: skip
    assert min(again.created) > newest
    assert min(again.stored) > max(first.stored)
    # A conversation started by one message at a time continues after the batch's ids.
    single = await world.mail("anna@b.pl", "Pięć", "<r5@b.pl>")
    assert min(single.created) > max(again.created)
    assert min(single.stored) > max(again.stored)


async def test_a_later_message_without_a_name_keeps_the_senders_name_from_the_batch(
    world: World,
) -> None:
    batch = [
        mail(world, "ewa@nowak.pl", "Zwrot", "<n1@n.pl>", name="Ewa Nowak"),
        mail(world, "ewa@nowak.pl", "Re: Zwrot", "<n2@n.pl>", in_reply_to=["<n1@n.pl>"],
             minutes=1),
    ]  # fmt: skip
    result = await world.svc.ingest("mail", batch)
    (cid,) = result.created
    async with world.store.read() as conn:
        c = tables.conversations
        query = sa.select(c.c.customer_name).where(c.c.id == cid)
        assert (await conn.execute(query)).scalar_one() == "Ewa Nowak"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_a_batch_runs_on_the_loops_thread_holding_the_write_lock(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.mail("jan@kowalski.pl", "Faktura", "<b0@k.pl>")
    crossings, ran = watch_driver(monkeypatch)
    logo = Attachment(filename="logo.png", content_type="image/png", data=b"png")
    batch = [
        mail(world, "jan@kowalski.pl", "Re: Faktura", "<b1@k.pl>", in_reply_to=["<b0@k.pl>"],
             attachments=[logo]),
        mail(world, "ewa@nowak.pl", "Zwrot", "<b2@n.pl>", attachments=[logo], minutes=1),
        mail(world, "ola@lis.pl", "Dostawa", "<b3@l.pl>", minutes=2),
    ]  # fmt: skip
    result = await world.svc.ingest("mail", batch)
    assert len(result.stored) == 3
    assert len(result.created) == 2
    ingested = list(ran)
    # The contact lookup's read crosses (its end, which changed nothing, stays on the
    # loop's thread). The batch's transaction takes the free write lock on the loop's
    # thread with its first read, and everything after it runs there, commit included:
    # multi-row writes with the next read.
    assert crossings == ["_after"]
    crossed = [sql for here, sql in ingested if not here]
    assert len(crossed) == 1
    assert crossed[0].startswith("SELECT contact_addresses")
    on_loop = [sql for here, sql in ingested if here]
    assert on_loop[0].startswith("SELECT messages.provider_id")
    assert any(sql.startswith("INSERT INTO messages") for sql in on_loop)
    # The ids of the new conversations and messages come from one read.
    assert sum("sqlite_sequence" in sql for _, sql in ingested) == 1
    jan = await conversation_of(world, "<b0@k.pl>")
    assert await conversation_of(world, "<b1@k.pl>") == jan
    async with world.store.read() as conn:
        a = tables.attachments
        query = sa.select(sa.func.count()).select_from(a).where(a.c.message_id.in_(result.stored))
        assert (await conn.execute(query)).scalar_one() == 2
