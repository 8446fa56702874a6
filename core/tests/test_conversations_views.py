"""Views, visibility, per-conversation features, filters, metrics and search."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import anyio
import pytest
import sqlalchemy as sa
from alembic import command
from conversation_world import START, World, world  # noqa: F401
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import Attachment, ContactMatch, ContactType, InboundMessage
from tidings.contacts import add_contact
from tidings.conversations import Draft, Filters, Page, View
from tidings.conversations.models import DateField, DateRange, Side, State
from tidings.errors import Forbidden, NotFound
from tidings.models import Address
from tidings.store import search, tables
from tidings.store.migrate import alembic_config
from tidings.store.search import SearchQueryError
from tidings.store.tables_indexes import OPEN_STATES

pytestmark = pytest.mark.anyio


async def ids(w: World, actor_name: str, view: View, **filters: object) -> list[int]:
    actor = getattr(w, actor_name)
    rows = await w.svc.view(actor, view, Filters.model_validate(filters))
    return [r.id for r in rows]


async def migrate_again(w: World, revision: str) -> None:
    """Undo ``revision`` (its branch back to 0002), then upgrade: the migration runs on the
    data the store already holds."""

    def downgrade(conn: sa.Connection) -> None:
        command.downgrade(alembic_config(conn), f"{revision}@0002")

    async with w.store.engine.begin() as conn:
        await conn.run_sync(downgrade)
    await w.store.upgrade()


async def one(w: World, number: str, **kw: object) -> int:
    (cid,) = (await w.sms(number, **kw)).conversations  # type: ignore[arg-type]
    return cid


async def test_views_and_visibility(world: World) -> None:
    pool = await one(world, "+48600000001")
    alices = await one(world, "+48600000002")
    bobs = await one(world, "+48600000003")
    closed = await one(world, "+48600000004")
    world.later(minutes=1)
    email = (await world.mail("jan@k.pl", "Temat", "<e1@k.pl>")).conversations.pop()
    sales = await one(world, "+48600000005", account="sales-sms")
    await world.svc.take(world.alice, alices)
    await world.svc.take(world.bob, bobs)
    await world.svc.close(world.alice, closed)

    assert await ids(world, "alice", View.MINE) == [alices]
    assert set(await ids(world, "alice", View.ACTIVE)) == {pool, alices, email}
    assert set(await ids(world, "alice", View.UNASSIGNED)) == {pool, email}
    assert await ids(world, "alice", View.CLOSED) == [closed]
    with pytest.raises(Forbidden, match="All view needs"):
        await ids(world, "alice", View.ALL)
    # carol: SMS only; dave: the sales project only.
    assert set(await ids(world, "carol", View.ACTIVE)) == {pool}
    assert await ids(world, "dave", View.ACTIVE) == [sales]
    # the supervisor with the All permission sees every conversation, bob's included.
    assert set(await ids(world, "boss", View.ALL)) == {pool, alices, bobs, closed, email, sales}
    with pytest.raises(NotFound):
        await world.svc.get(world.alice, bobs)


def test_the_active_views_states_are_the_open_index_states() -> None:
    """The Active views filter on the tuple the partial index is defined with, and it
    names the states of an open conversation."""
    assert set(OPEN_STATES) == {State.NEW.value, State.ASSIGNED.value}


async def test_starred_first_then_by_last_activity(world: World) -> None:
    a = await one(world, "+48600000001")
    world.later(minutes=1)
    b = await one(world, "+48600000002")
    world.later(minutes=1)
    c = await one(world, "+48600000003")
    assert await ids(world, "alice", View.ACTIVE) == [c, b, a]
    await world.svc.star(world.alice, a)
    assert await ids(world, "alice", View.ACTIVE) == [a, c, b]
    world.later(minutes=1)
    await world.sms("+48600000002", "news")
    assert await ids(world, "alice", View.ACTIVE) == [a, b, c]
    page = await world.svc.view(world.alice, View.ACTIVE, page=Page(limit=1, offset=1))
    assert [r.id for r in page] == [b]


async def test_tags_notes_events_and_comments(world: World) -> None:
    cid = await one(world, "+48600000001")
    assert await world.svc.tag(world.alice, cid, add=["VIP", "faktura"]) == ("faktura", "vip")
    assert await world.svc.tag(world.alice, cid, remove=["vip"]) == ("faktura",)
    with pytest.raises(ValueError, match="a tag has 1 to 100 characters"):
        await world.svc.tag(world.alice, cid, add=[" "])
    await world.svc.set_note(world.alice, cid, "Klient dzwonił wczoraj")
    note_id = await world.svc.comment(world.bob, cid, "Sprawdź fakturę, nie wysyłać klientowi")
    detail = await world.svc.get(world.alice, cid)
    assert detail.note == "Klient dzwonił wczoraj"
    comment = next(m for m in detail.messages if m.id == note_id)
    assert comment.direction == "note"
    assert detail.summary.metrics.message_count == 1  # comments are not messages
    events = await world.svc.events(world.alice, cid)
    assert [(e.kind, e.actor_id) for e in events] == [
        ("created", None),
        ("tagged", world.alice.id),
        ("tagged", world.alice.id),
        ("note", world.alice.id),
        ("commented", world.bob.id),
    ]
    assert all(e.at == START for e in events)


async def test_a_flat_page_reads_its_tags_read_marks_and_attachments_with_it(world: World) -> None:
    """A page's tags (sorted), the agent's read marks and the attachments (in the order
    stored): a flat page reads them with its rows, one statement; a conversation page its
    tags by a second."""
    cid = await one(world, "+48600000001")
    files = (Attachment(filename="b.pdf", data=b"%PDF"), Attachment(filename="a.png", data=b"P"))
    msg = InboundMessage(
        provider_id="att-2", sender=Address.phone("+48600000001"), text="skany", attachments=files
    )
    await world.svc.ingest("sms-pl", [msg])
    await one(world, "+48600000002")  # untagged, nothing attached
    await world.svc.tag(world.alice, cid, add=["pilne", "faktura"])
    first, second = (await world.svc.get(world.alice, cid)).messages
    await world.svc.tag_message(world.alice, second.id, add=["zwrot", "skan"])
    await world.svc.mark_read(world.alice, [second.id])

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(world.store.engine.sync_engine, "before_cursor_execute", count)
    try:
        page = await world.svc.view(world.alice, View.ACTIVE)
        assert len(statements) == 2
        flat = await world.svc.messages(world.alice, View.ACTIVE)
        assert len(statements) == 3
    finally:
        sa.event.remove(world.store.engine.sync_engine, "before_cursor_execute", count)
    assert sorted((r.id == cid, r.tags) for r in page) == [
        (False, ()),
        (True, ("faktura", "pilne")),
    ]
    by_id = {v.id: v for v in flat}
    assert by_id[second.id].tags == ("skan", "zwrot")
    assert (by_id[first.id].read, by_id[second.id].read) == (False, True)
    attached = by_id[second.id].attachments
    assert [(a.filename, a.size, a.inline) for a in attached] == [("b.pdf", 4, False),
                                                                   ("a.png", 1, False)]  # fmt: skip
    assert attached[0].id < attached[1].id
    assert attached[0].sha256
    assert by_id[first.id].attachments == ()
    assert by_id[first.id].tags == ()
    bob = await world.svc.get(world.bob, cid)  # the detail reads them the same way
    assert bob.summary.tags == ("faktura", "pilne")
    assert [(m.read, m.tags) for m in bob.messages] == [(False, ()), (False, ("skan", "zwrot"))]
    assert bob.messages[1].attachments == attached


async def test_message_tags_and_read_marks_per_agent(world: World) -> None:
    cid = await one(world, "+48600000001")
    await world.sms("+48600000001", "second")
    detail = await world.svc.get(world.alice, cid)
    first, second = detail.messages
    assert not detail.all_read
    await world.svc.mark_read(world.alice, [first.id, second.id])
    assert (await world.svc.get(world.alice, cid)).all_read
    assert not (await world.svc.get(world.bob, cid)).all_read  # per agent
    await world.svc.mark_read(world.alice, [second.id], read=False)
    assert [m.read for m in (await world.svc.get(world.alice, cid)).messages] == [True, False]
    assert await world.svc.tag_message(world.alice, first.id, add=["reklamacja"]) == ("reklamacja",)
    assert (await world.svc.get(world.bob, cid)).messages[0].tags == ("reklamacja",)
    with pytest.raises(NotFound):
        await world.svc.mark_read(world.dave, [first.id])


async def test_contacts_found_by_lookup_are_linked(world: World) -> None:
    contact_id = await add_contact(
        world.store, type=ContactType.PERSON, display_name="Jan Kowalski",
        addresses=[Address.phone("+48600000001")],
    )  # fmt: skip
    cid = await one(world, "+48600000001")
    detail = await world.svc.get(world.alice, cid)
    assert [(c.source, c.external_id) for c in detail.contacts] == [("builtin", str(contact_id))]
    assert detail.summary.customer_name == "Jan Kowalski"
    other = await one(world, "+48600000002")
    await world.svc.link_contact(
        world.alice, other, ContactMatch(source="crm", external_id="C1", display_name="Firma")
    )
    assert await ids(world, "alice", View.ACTIVE, contact=("crm", "C1")) == [other]
    assert await ids(world, "alice", View.ACTIVE, contact=("builtin", str(contact_id))) == [cid]


async def test_filters(world: World) -> None:
    a = await one(world, "+48600000001", name="Anna")
    world.later(hours=1)
    (b,) = (
        await world.mail("jan@k.pl", "Faktura korygująca", "<b1@k.pl>", cc=["ksiegowa@k.pl"])
    ).conversations
    world.later(hours=1)
    c = await one(world, "+48600000003", account="sms-de")
    await world.svc.take(world.alice, a)
    await world.svc.close(world.alice, a)
    await world.svc.star(world.boss, c)
    await world.svc.tag(world.boss, b, add=["pilne", "faktura"])
    await world.svc.tag(world.boss, c, add=["pilne"])
    msg = InboundMessage(
        provider_id="att-1", sender=Address.phone("+48600000003"),
        attachments=(Attachment(filename="Skan_umowy.pdf", data=b"%PDF"),),
    )  # fmt: skip
    await world.svc.ingest("sms-de", [msg])

    async def f(**kw: object) -> set[int]:
        return set(await ids(world, "boss", View.ALL, **kw))

    assert await f(starred=True) == {c}
    assert await f(tags=("pilne",)) == {b, c}
    assert await f(tags=("pilne", "faktura")) == {b}
    assert await f(project="support") == {a, b, c}
    assert await f(project="sales") == set()
    assert await f(assignee=world.alice.id) == {a}
    assert await f(participant="ksiegowa@") == {b}
    assert await f(participant="+48221000000", participant_side=Side.SYSTEM) == {a}
    assert await f(participant="+48221000000", participant_side=Side.CUSTOMER) == set()
    assert await f(subject="KORYGUJ") == {b}
    assert await f(conversation_id=b) == {b}
    assert await f(attachment_name="umowy") == {c}
    assert await f(kind="email") == {b}
    assert await f(channel="t_sms") == {a, c}
    assert await f(state="closed") == {a}
    window = DateRange(field=DateField.STARTED, start=START + timedelta(minutes=30),
                       end=START + timedelta(minutes=90))  # fmt: skip
    assert await f(dates=(window,)) == {b}
    closed = DateRange(field=DateField.CLOSED, start=START)
    assert await f(dates=(closed,)) == {a}
    assert await f(dates=(closed,), kind="email") == set()  # filters combine
    with pytest.raises(ValueError, match="participant_side needs participant"):
        await f(participant_side=Side.SYSTEM)


async def test_participant_filter_matches_any_part_of_an_address(world: World) -> None:
    """The same matches on both stores, whichever way the store looks them up (on SQLite
    a trigram index from three characters, ``LIKE`` below that)."""
    a = await one(world, "+48600123456")
    (b,) = (await world.mail("Jan.Nowak_1@k.pl", "Temat", "<p1@k.pl>")).conversations

    async def f(**kw: object) -> set[int]:
        return set(await ids(world, "boss", View.ALL, **kw))

    assert await f(participant="0012345") == {a}  # the middle of the number
    assert await f(participant="n.NOWAK_1@K") == {b}  # case ignored
    assert await f(participant="k_pl") == set()  # '_' and '%' are literal, not wildcards
    assert await f(participant="nowak%") == set()
    assert await f(participant="45") == {a}  # shorter than a trigram
    assert await f(participant="@shop.example") == {b}  # the system side
    assert await f(participant="nowak", participant_side=Side.CUSTOMER) == {b}
    assert await f(participant="nowak", participant_side=Side.SYSTEM) == set()
    assert await f(participant='"nowak') == set()  # a quote is text, not query syntax

    # Participants written after the index was built are found, removed ones are not.
    c = await one(world, "+48600999888")
    assert await f(participant="999888") == {c}
    async with world.store.engine.begin() as conn:
        await conn.execute(
            sa.delete(tables.participants).where(tables.participants.c.conversation_id == c)
        )
        if world.store.dialect == "sqlite":
            await conn.exec_driver_sql(
                "INSERT INTO participant_search (participant_search) VALUES ('integrity-check')"
            )
    assert await f(participant="999888") == set()


async def test_metrics_from_the_history(world: World) -> None:
    cid = await one(world, "+48600000001")  # 09:00 customer writes
    world.later(minutes=3)
    await world.svc.take(world.alice, cid)  # 3 minutes in the pool
    world.later(minutes=7)
    await world.svc.send(world.alice, Draft(text="a"), conversation_id=cid)  # 09:10 reply
    world.later(minutes=50)
    await world.sms("+48600000001", "b")  # 10:00 customer again
    world.later(minutes=5)
    await world.svc.send(world.alice, Draft(text="c"), conversation_id=cid)  # 10:05
    world.later(minutes=15)
    await world.sms("+48600000001", "d")  # 10:20 waiting since
    world.later(minutes=10)  # now 10:30
    m = (await world.svc.get(world.alice, cid)).summary.metrics
    assert m.message_count == 5
    assert m.time_to_first_reply == timedelta(minutes=10)
    assert m.customer_waiting_now == timedelta(minutes=10)
    assert m.total_wait_for_agent == timedelta(minutes=10 + 5 + 10)
    assert m.total_wait_for_customer == timedelta(minutes=50 + 15)
    assert m.total_time_in_queue == timedelta(minutes=3)
    assert m.since_last_queue_entry is None
    assert m.processing_time == timedelta(minutes=90)
    assert m.last_inbound_at == START + timedelta(minutes=80)
    assert m.last_outbound_at == START + timedelta(minutes=65)
    await world.svc.unassign(world.boss, cid)
    world.later(minutes=4)
    m = (await world.svc.get(world.alice, cid)).summary.metrics
    assert m.since_last_queue_entry == timedelta(minutes=4)
    assert m.total_time_in_queue == timedelta(minutes=7)


async def test_a_late_message_recomputes_metrics_as_if_in_order(world: World) -> None:
    cid = await one(world, "+48600000001")  # 09:00
    world.later(minutes=10)
    await world.svc.send(world.alice, Draft(text="a"), conversation_id=cid)  # 09:10
    world.later(minutes=20)
    await world.sms("+48600000001", "c")  # 09:30
    # A message the customer sent at 09:05 arrives only now.
    await world.sms("+48600000001", "b", at=START + timedelta(minutes=5))
    m = (await world.svc.get(world.alice, cid)).summary.metrics
    assert m.message_count == 4
    assert m.time_to_first_reply == timedelta(minutes=10)
    assert m.total_wait_for_customer == timedelta(minutes=20)
    assert m.customer_waiting_now == timedelta(0)
    assert m.last_message_at == START + timedelta(minutes=30)


@pytest.fixture(params=["lookup", "index", "walk"])
def search_plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each search test runs with every plan ``search.plan`` can choose: matches collected
    from the full-text index and their conversations looked up (nothing sampled) or the
    view walked through them (enough sampled), and the view walked with each row tested
    (common). All must find the same rows."""
    chosen = search.plan

    async def forced(conn: AsyncConnection, query: str) -> search.Plan:
        found = await chosen(conn, query)
        if request.param == "walk":
            return dataclasses.replace(found, common=True)
        walks_from = search.WALK_COLLECTED_HITS.get(conn.dialect.name, 1)
        sampled = 0 if request.param == "lookup" else max(found.sampled, walks_from)
        words = found.words
        if found.common and conn.dialect.name == "postgresql":
            words = await search.prefixed_words(conn, found.tokens)
        return dataclasses.replace(found, common=False, sampled=sampled, words=words)

    monkeypatch.setattr(search, "plan", forced)
    return str(request.param)


async def test_search_customer_names_and_text_by_word_prefix(
    world: World, search_plan: str
) -> None:
    a = await one(
        world, "+48600000001", text="Zamówienie 4711 nie dotarło", name="Żaneta Wiśniewska"
    )
    sent = await world.mail(
        "jan.kowalski@firma.pl", "Faktura", "<s1@f.pl>", text="Proszę o fakturę VAT",
        name="Jan Kowalski",
    )  # fmt: skip
    (b,) = sent.conversations

    async def hits(query: str) -> set[int]:
        return set(await ids(world, "boss", View.ALL, search=query))

    assert await hits("zamów") == {a}
    assert await hits("ZAMÓWIENIE") == {a}
    assert await hits("471") == {a}
    assert await hits("wiśn") == {a}  # customer name
    assert await hits("kowal") == {b}
    assert await hits("fakt") == {b}  # subject and text
    assert await hits("firma") == set()  # addresses are not text
    assert await hits("zamów dota") == {a}  # every word, as prefixes
    assert await hits("zamów faktur") == set()
    assert await hits("mówienie") == set()  # prefixes, not infixes
    for short in ("za", "  a ", ""):
        with pytest.raises(SearchQueryError, match="at least 3 characters"):
            await hits(short)
    flat = await world.svc.messages(world.boss, View.ALL, Filters(search="vat"))
    assert [m.conversation_id for m in flat] == [b]
    assert await world.svc.messages(world.boss, View.ALL, Filters(search="kowal")) == []


async def test_search_follows_messages_added_and_cancelled_later(
    world: World, search_plan: str
) -> None:
    """The walk tests a conversation's words before its messages (``conversation_words``,
    grown by every indexed message): words of later messages, inbound and outbound, are
    found; words in different messages are not one match; a cancelled message's words,
    which the conversation's words keep, find nothing."""
    a = await one(world, "+48600000001", text="Dzień dobry")
    b = await one(world, "+48600000002", text="Faktura korekta")

    async def hits(query: str) -> set[int]:
        return set(await ids(world, "boss", View.ALL, search=query))

    assert await hits("faktur") == {b}
    world.later(minutes=1)
    await world.sms("+48600000001", "Gdzie jest faktura?")
    await world.svc.send(world.alice, Draft(text="Korekta wysłana"), conversation_id=a)
    assert await hits("faktur") == {a, b}
    assert await hits("korekta") == {a, b}
    assert await hits("faktura korekta") == {b}  # every word in one message
    sent = await world.svc.send(
        world.alice, Draft(text="Hulajnoga faktura"), conversation_id=a,
        delay=timedelta(minutes=5),
    )  # fmt: skip
    assert await hits("hulaj") == {a}
    await world.svc.cancel(world.alice, sent.message_id)
    assert await hits("hulaj") == set()
    assert await hits("hulajnoga faktura") == set()


async def test_conversation_words_are_filled_from_the_search_index(world: World) -> None:
    """Migration 0011 fills the words of conversations indexed before it; the walk finds
    them afterwards as before."""
    a = await one(world, "+48600000001", text="Zamówienie hulajnoga")
    await world.svc.send(world.alice, Draft(text="Faktura w drodze"), conversation_id=a)

    await migrate_again(world, "0011")
    async with world.store.read() as conn:
        walk = search.Plan(("hulaj",), common=True)
        cond = search.conversations_matching(world.store.dialect, walk)
        found = await conn.execute(sa.select(tables.conversations.c.id).where(cond))
        assert found.scalars().all() == [a]
        walk = search.Plan(("faktura", "drodze"), common=True)
        cond = search.conversations_matching(world.store.dialect, walk)
        found = await conn.execute(sa.select(tables.conversations.c.id).where(cond))
        assert found.scalars().all() == [a]


async def test_search_walk_reads_fts5_content_tables(world: World) -> None:
    """The walk reads SQLite's documents from FTS5's content tables (``search._walked``):
    they hold each row's id and its tokens, as FTS5's documentation lays them out."""
    if world.store.dialect != "sqlite":
        return  # PostgreSQL's walk reads its own search tables
    cid = await one(world, "+48600000001", text="Zamówienie 4711", name="Żaneta Wiśniewska")
    async with world.store.read() as conn:
        (mid,) = (
            await conn.execute(
                sa.select(tables.messages.c.id).where(tables.messages.c.conversation_id == cid)
            )
        ).scalars()
        message = await conn.execute(
            sa.text("SELECT c0 FROM message_search_content WHERE id = :id"), {"id": mid}
        )
        name = await conn.execute(
            sa.text("SELECT c0 FROM conversation_search_content WHERE id = :id"), {"id": cid}
        )
        assert message.scalar_one() == search.document("Zamówienie 4711")
        assert name.scalar_one() == search.document("Żaneta Wiśniewska")


async def test_search_finds_names_learned_later_and_names_indexed_before_0019(
    world: World, search_plan: str
) -> None:
    """A conversation's words hold its customer's name as well as its messages' words: the
    walk tests the name only where they hold every token (``conversations_matching``).
    A name the customer gives with a later message is found; so are names indexed before
    migration 0019, which adds them to the words."""
    a = await one(world, "+48600000001", text="Dzień dobry")
    b = await one(world, "+48600000002", text="Dzień dobry", name="Żaneta Wiśniewska")

    async def hits(query: str) -> set[int]:
        return set(await ids(world, "boss", View.ALL, search=query))

    assert await hits("wiśn") == {b}
    assert await hits("dzień żaneta") == set()  # a message and the name: no one document
    world.later(minutes=1)
    await world.sms("+48600000001", "Jeszcze raz", name="Bartłomiej Żółtowski")
    assert await hits("żółt") == {a}
    assert await hits("bartł żółt") == {a}

    await migrate_again(world, "0019")
    assert await hits("wiśn") == {b}
    assert await hits("żółt") == {a}


@pytest.mark.parametrize("listed", [64, 1])
async def test_postgresql_searches_a_prefix_as_the_words_it_begins(
    world: World, monkeypatch: pytest.MonkeyPatch, listed: int
) -> None:
    """Collecting matches on PostgreSQL, a token is looked up as the indexed words it
    begins (``search_vocabulary``, migration 0015), or as a prefix when they are more than
    ``PREFIX_WORDS``; the answers are the same. The vocabulary holds every word of the
    search tables: messages in and out, customer names, a name learnt later."""
    if world.store.dialect != "postgresql":
        return  # SQLite's FTS5 answers prefixes from its own prefix indexes (0008).
    monkeypatch.setattr(search, "PREFIX_WORDS", listed)
    a = await one(world, "+48600000001", text="Kurier zostawił paczkę")
    b = await one(world, "+48600000002", text="Paczkomat 12 pełny, kurierem jutro")
    await world.svc.send(world.alice, Draft(text="Paczkomat zmieniony"), conversation_id=b)
    world.later(minutes=1)
    await world.sms("+48600000001", "Paczkomat?", name="Ola Kurierowa")  # named only now
    c = await one(world, "+48600000003", text="Kurierka", name="Kurt Paczkowski")

    async with world.store.read() as conn:
        listed_words = await conn.execute(sa.text("SELECT DISTINCT word FROM search_vocabulary"))
        indexed = await conn.execute(
            sa.text(
                "SELECT word FROM ts_stat('SELECT vector FROM message_search "
                "UNION ALL SELECT vector FROM conversation_search')"
            )
        )
        assert set(listed_words.scalars()) >= set(indexed.scalars())
        plan = await search.plan(conn, "kurier paczk xyzzy")
    expected = ("kurier", "kurierem", "kurierka", "kurierowa")
    paczk = ("paczkomat", "paczkowski", "paczkę")  # in bytewise order
    assert plan.words == ((expected, paczk, ()) if listed == 64 else (None, None, ()))

    async def hits(query: str) -> set[int]:
        return set(await ids(world, "boss", View.ALL, search=query))

    assert await hits("kurier") == {a, b, c}
    assert await hits("kurierk") == {c}
    assert await hits("kurier paczk") == {a, b}  # c: one word in the name, one in the text
    assert await hits("kurierem paczkomat") == {b}
    assert await hits("paczkomat zmien") == {b}
    assert await hits("kurierz") == set()
    flat = await world.svc.messages(world.boss, View.ALL, Filters(search="kurie"))
    assert {m.text for m in flat} == {
        "Kurier zostawił paczkę", "Paczkomat 12 pełny, kurierem jutro", "Kurierka"
    }  # fmt: skip

    await migrate_again(world, "0015")  # it lists the words indexed before it
    async with world.store.read() as conn:
        assert await search.prefixed_words(conn, ["kurier"]) == plan.words[:1]


async def test_postgresql_knows_open_conversations_are_mostly_unassigned(world: World) -> None:
    """The planner estimates a view's scope from the joint frequencies of its columns
    (``st_conversations_scope``, migration 0016), not as if state and assignee were
    independent: here 200 of 2,400 conversations are open and unassigned, and multiplying
    the columns' own frequencies (8 % open, 17 % unassigned) would say 33."""
    if world.store.dialect != "postgresql":
        return  # SQLite's planner keeps no such statistics; tidings.store.hints plans it.
    template = await one(world, "+48600000001")
    c = tables.conversations
    async with world.store.write() as conn:
        row = dict((await conn.execute(sa.select(c).where(c.c.id == template))).one()._mapping)
        del row["id"]
        row["thread_key"] = None  # copies: unique per (account, thread key) otherwise
        shapes = [("closed", world.alice.id)] * 2000 + [("closed", None)] * 200
        shapes += [("new", None)] * 199
        await conn.execute(
            sa.insert(c),
            [{**row, "state": state, "assignee_id": assignee} for state, assignee in shapes],
        )
    unassigned_open = (
        "SELECT * FROM conversations WHERE state IN ('new', 'assigned') AND assignee_id IS NULL"
    )

    async def estimate(conn: AsyncConnection) -> int:
        await conn.execute(sa.text("ANALYZE conversations"))
        plan = (await conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {unassigned_open}"))).scalar()
        return int(plan[0]["Plan"]["Plan Rows"])

    async with world.store.engine.connect() as conn:
        assert 160 <= await estimate(conn) <= 240
        await conn.execute(sa.text("DROP STATISTICS st_conversations_scope"))
        assert await estimate(conn) < 80  # what the columns alone say
        await conn.rollback()

    await migrate_again(world, "0016")  # ANALYZE fills the statistics on the data there
    async with world.store.engine.connect() as conn:
        plan = (await conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {unassigned_open}"))).scalar()
        assert 160 <= plan[0]["Plan"]["Plan Rows"] <= 240


async def test_postgresql_chooses_a_flat_page_from_the_index_alone(world: World) -> None:
    """The flat view's page (50 ids among the messages of the conversations in view) is
    chosen by an index-only scan of messages by conversation (migration 0021): the id is in
    the index, so no candidate's row is read for it."""
    if world.store.dialect != "postgresql":
        return  # SQLite's index holds the rowid, which is the id.
    for i in range(3):
        await one(world, f"+4860000000{i}")
        await world.sms(f"+4860000000{i}", "druga")
    captured: list[tuple[str, object]] = []

    def capture(*args: object) -> None:
        captured.append((str(args[2]), args[3]))

    sa.event.listen(world.store.engine.sync_engine, "before_cursor_execute", capture)
    try:
        assert len(await world.svc.messages(world.boss, View.ALL)) == 6
    finally:
        sa.event.remove(world.store.engine.sync_engine, "before_cursor_execute", capture)
    ((statement, params),) = captured
    async with world.store.engine.connect() as conn:
        await conn.execute(sa.text("SET enable_seqscan = off"))  # a few rows: make it choose
        await conn.execute(sa.text("SET enable_bitmapscan = off"))
        cursor = (await conn.get_raw_connection()).driver_connection.cursor()
        await cursor.execute(f"EXPLAIN {statement}", params)
        plan = "\n".join(row[0] for row in await cursor.fetchall())
        await conn.rollback()
    assert "Index Only Scan using ix_messages_conversation" in plan

    await migrate_again(world, "0021")
    async with world.store.read() as conn:
        definition = await conn.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_conversation'")
        )
        assert definition.scalar_one().endswith("(conversation_id, sent_at) INCLUDE (id)")


async def test_postgresql_vocabulary_never_waits_on_another_transactions_words(
    world: World,
) -> None:
    """Two ingestions listing the same new words in crossed order both go through at once
    (no unique key to wait on, so no deadlock); the word listed twice is found once."""
    if world.store.dialect != "postgresql":
        return  # SQLite has one writer and no vocabulary.
    async with world.store.engine.connect() as one_tx, world.store.engine.connect() as other:
        await one_tx.begin()
        await other.begin()
        with anyio.fail_after(10):
            await search._add_vocabulary(one_tx, ["zebra yeti"])
            await search._add_vocabulary(other, ["yeti zebra"])
        await one_tx.commit()
        await other.commit()
    async with world.store.read() as conn:
        assert await search.prefixed_words(conn, ["zeb", "yet"]) == (("zebra",), ("yeti",))


def test_postgresql_walks_through_collected_matches_only_when_they_are_many() -> None:
    """A rare search with few sampled hits looks its matches up by key; with enough, the
    view is walked through a hash of them (``IS TRUE`` keeps PostgreSQL from making the
    ``IN`` a join) — see ``search.WALK_COLLECTED_HITS``."""

    def sql(sampled: int) -> str:
        cond = search.conversations_matching(
            "postgresql", search.Plan(("kurier",), common=False, sampled=sampled)
        )
        return str(cond.compile(dialect=postgresql.dialect()))

    walks_from = search.WALK_COLLECTED_HITS["postgresql"]
    assert "= ANY (" in sql(walks_from - 1)
    assert "IS true" in sql(walks_from)
    assert "= ANY (" not in sql(walks_from)


async def test_search_plan_walks_the_view_only_for_common_queries(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "SAMPLE_MESSAGES", 4)  # the newest 4 messages count
    monkeypatch.setattr(search, "SAMPLE_STRIPES", 1)
    monkeypatch.setattr(search, "COMMON_HITS", 2)
    texts = ["Zamówienie 0 hulajnoga", "Zamówienie 1 hulajnoga", "Zamówienie 2 faktura",
             "Zamówienie 3 faktura"]  # fmt: skip
    cids = [await one(world, f"+4860000000{i}", text=text) for i, text in enumerate(texts)]
    world.later(minutes=1)
    urgent = await one(world, "+48600000009", text="Pilne zamówienie")
    async with world.store.read() as conn:
        assert (await search.plan(conn, "zamów")).common  # 4 of the newest 4
        assert (await search.plan(conn, "faktur")).common  # 2 of them
        assert not (await search.plan(conn, "pilne")).common  # 1
        assert not (await search.plan(conn, "zamów pilne")).common  # 1: every word counts
        assert not (await search.plan(conn, "zamów faktur")).common  # 2: two words need 4
        rare = await search.plan(conn, "hulajnoga")  # 2, but 1 of the newest
        assert (rare.common, rare.sampled) == (False, 1)
        assert (await search.plan(conn, "rower")).sampled == 0
    # The walk stops after a page, in the view's order.
    page = await world.svc.view(world.boss, View.ALL, Filters(search="zamów"), Page(limit=2))
    assert [r.id for r in page] == [urgent, cids[3]]
    newest = await world.svc.messages(world.boss, View.ALL, Filters(search="zamów"), Page(limit=2))
    assert [m.text for m in newest] == ["Pilne zamówienie", "Zamówienie 3 faktura"]


async def test_flat_message_view(world: World) -> None:
    a = await one(world, "+48600000001", text="pierwsza")
    world.later(minutes=1)
    await world.svc.send(world.alice, Draft(text="odpowiedź"), conversation_id=a)
    world.later(minutes=1)
    await one(world, "+48600000002", text="druga")
    flat = await world.svc.messages(world.alice, View.ACTIVE)
    assert [m.text for m in flat] == ["druga", "odpowiedź", "pierwsza"]
    mine = await world.svc.messages(world.alice, View.MINE)
    assert [m.text for m in mine] == ["odpowiedź", "pierwsza"]
