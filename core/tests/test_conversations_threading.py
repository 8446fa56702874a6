"""Ingestion: one conversation per customer number, email threads, dedupe, reopening."""

from __future__ import annotations

import pytest
from conversation_world import World, world  # noqa: F401

from tidings.conversations import Draft, Filters, MessageView, State, View
from tidings.conversations.subjects import base_subject

pytestmark = pytest.mark.anyio


async def conv_ids(w: World, **filters: object) -> list[int]:
    rows = await w.svc.view(w.boss, View.ALL, Filters.model_validate(filters))
    return sorted(r.id for r in rows)


async def test_one_conversation_per_number_and_account(world: World) -> None:
    first = await world.sms("+48 600 100 200", "hi")
    again = await world.sms("0048600100200", "me again")
    other_number = await world.sms("+48600100201")
    other_account = await world.sms("+48600100200", account="sms-de")
    assert first.created
    assert not again.created
    assert again.conversations == first.conversations
    assert other_number.conversations != first.conversations
    assert other_account.conversations != first.conversations
    (summary,) = [r for r in await world.svc.view(world.boss, View.ALL)
                  if r.id in first.conversations]  # fmt: skip
    assert summary.metrics.message_count == 2
    assert summary.customer == "phone:+48600100200"
    assert summary.system == "phone:+48221000000"
    assert summary.state is State.NEW


async def test_redelivery_stores_nothing_new(world: World) -> None:
    first = await world.sms("+48600100200", "hi", provider_id="SM1")
    again = await world.sms("+48600100200", "hi", provider_id="SM1")
    assert len(first.stored) == 1
    assert again.stored == []
    assert again.duplicates == 1
    (cid,) = first.conversations
    detail = await world.svc.get(world.boss, cid)
    assert len(detail.messages) == 1
    assert detail.summary.metrics.message_count == 1


async def test_the_same_provider_id_on_another_account_is_another_message(world: World) -> None:
    await world.sms("+48600100200", provider_id="SM1")
    other = await world.sms("+48600100200", provider_id="SM1", account="sms-de")
    assert len(other.stored) == 1


async def test_a_new_message_reopens_a_closed_conversation(world: World) -> None:
    (cid,) = (await world.sms("+48600100200")).conversations
    await world.svc.take(world.alice, cid)
    await world.svc.close(world.alice, cid)
    world.later(hours=2)
    result = await world.sms("+48600100200", "one more thing")
    assert result.reopened == {cid}
    detail = await world.svc.get(world.alice, cid)
    assert detail.summary.state is State.ASSIGNED  # the assignee is kept
    assert detail.summary.metrics.reopened_at == world.clock()
    kinds = [e.kind for e in await world.svc.events(world.alice, cid)]
    assert kinds == ["created", "taken", "closed", "reopened"]


async def test_a_closed_unassigned_conversation_reopens_into_the_pool(world: World) -> None:
    (cid,) = (await world.sms("+48600100200")).conversations
    await world.svc.close(world.alice, cid)
    await world.sms("+48600100200")
    assert (await world.svc.get(world.alice, cid)).summary.state is State.NEW


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Zamówienie 123", "zamówienie 123"),
        ("Re: Zamówienie 123", "zamówienie 123"),
        ("RE: FW: Zamówienie 123", "zamówienie 123"),
        ("Odp: Zamówienie 123", "zamówienie 123"),
        ("ODP: Odp: Zamówienie 123", "zamówienie 123"),
        ("AW: WG: Zamówienie 123", "zamówienie 123"),
        ("SV: VS: Zamówienie 123", "zamówienie 123"),
        ("Re[2]: Zamówienie 123", "zamówienie 123"),
        ("Re(3): Zamówienie 123", "zamówienie 123"),
        ("[support] Re: [Fwd: Zamówienie 123]", "zamówienie 123"),
        ("[Fwd: Re: Zamówienie 123]", "zamówienie 123"),
        ("[ticket #5] Zamówienie 123", "zamówienie 123"),
        ("[support] Re: Fwd: Zamówienie 123", "zamówienie 123"),
        ("RV: ENC: TR: Antw: PD: Zamówienie 123", "zamówienie 123"),
        ("=?UTF-8?B?UmU6IFphbcOzd2llbmllIDEyMw==?=", "zamówienie 123"),
        ("Re:   Zamówienie    123  ", "zamówienie 123"),
        ("回复\uff1aZamówienie 123", "zamówienie 123"),
        ("Reklamacja", "reklamacja"),  # a word starting with "Re" is not a prefix
        ("Re:", ""),
        (None, ""),
    ],
)
def test_base_subject(subject: str | None, base: str) -> None:
    assert base_subject(subject) == base


class TestEmailCorpus:
    """A realistic exchange: the threads a person would see."""

    async def test_replies_thread_by_headers(self, world: World) -> None:
        # Thunderbird: a new message from the customer.
        root = await world.mail("jan@kowalski.pl", "Zamówienie 123", "<a1@kowalski.pl>")
        (cid,) = root.conversations
        # The agent answers: our Message-ID joins the thread.
        sent = await world.svc.send(world.alice, Draft(text="Dzień dobry"), conversation_id=cid)
        our_id = (await world.svc.get(world.alice, cid)).messages[-1]
        assert our_id.id == sent.message_id
        assert our_id.meta["in_reply_to"] == ["<a1@kowalski.pl>"]
        assert our_id.meta["references"] == ["<a1@kowalski.pl>"]
        # Gmail reply to our message: In-Reply-To ours, References root + ours.
        world.later(minutes=30)
        gmail = await world.mail(
            "jan@kowalski.pl",
            "Re: Zamówienie 123",
            "<CAF=gmail@mail.gmail.com>",
            in_reply_to=[message_id_of(our_id)],
            references=["<a1@kowalski.pl>", message_id_of(our_id)],
        )
        assert gmail.conversations == {cid}
        # Outlook reply from a colleague in CC, referencing only the root.
        outlook = await world.mail(
            "anna@kowalski.pl",
            "ODP: Zamówienie 123",
            "<DB9PR@outlook.com>",
            in_reply_to=["<a1@kowalski.pl>"],
        )
        assert outlook.conversations == {cid}

    async def test_subject_fallback_only_for_the_same_recent_customer(self, world: World) -> None:
        (cid,) = (await world.mail("jan@kowalski.pl", "Faktura 7/2026", "<f1@k.pl>")).conversations
        world.later(days=2)
        # A reply whose client dropped the headers still threads by subject...
        same = await world.mail("jan@kowalski.pl", "AW: Faktura 7/2026", "<f2@k.pl>")
        assert same.conversations == {cid}
        # ...but never across customers,
        other = await world.mail("ewa@nowak.pl", "Re: Faktura 7/2026", "<f3@n.pl>")
        assert other.conversations != {cid}
        # and not for a thread gone quiet for longer than the window.
        world.later(days=45)
        late = await world.mail("jan@kowalski.pl", "Re: Faktura 7/2026", "<f4@k.pl>")
        assert late.conversations != {cid}

    async def test_localised_and_encoded_prefixes_thread(self, world: World) -> None:
        (cid,) = (await world.mail("jan@kowalski.pl", "Zwrot towaru", "<z1@k.pl>")).conversations
        for i, subject in enumerate(
            ["Odp: Zwrot towaru", "SV: Zwrot towaru", "Re[2]: Zwrot towaru",
             "=?ISO-8859-2?Q?Odp:_Zwrot_towaru?=", "[Sklep] RE: Zwrot towaru"]
        ):  # fmt: skip
            world.later(minutes=5)
            result = await world.mail("jan@kowalski.pl", subject, f"<z{i + 2}@k.pl>")
            assert result.conversations == {cid}, subject

    async def test_out_of_order_arrival(self, world: World) -> None:
        # The reply arrives first (a slow relay delayed the original).
        reply = await world.mail(
            "jan@kowalski.pl", "Re: Dostawa", "<r1@k.pl>",
            in_reply_to=["<o1@k.pl>"], references=["<o1@k.pl>"],
        )  # fmt: skip
        original = await world.mail(
            "jan@kowalski.pl", "Dostawa", "<o1@k.pl>", at=world.ago(hours=1)
        )
        assert original.conversations == reply.conversations
        (cid,) = reply.conversations
        detail = await world.svc.get(world.boss, cid)
        assert [m.provider_id for m in detail.messages] == ["<o1@k.pl>", "<r1@k.pl>"]
        assert detail.summary.metrics.started_at == world.ago(hours=1)

    async def test_siblings_sharing_an_unseen_root_thread_together(self, world: World) -> None:
        a = await world.mail("jan@kowalski.pl", "Re: Oferta", "<s1@k.pl>",
                             references=["<root@elsewhere>"])  # fmt: skip
        b = await world.mail("ewa@kowalski.pl", "Re: Oferta", "<s2@k.pl>",
                             references=["<root@elsewhere>"])  # fmt: skip
        assert a.conversations == b.conversations

    async def test_duplicates_and_distinct_threads(self, world: World) -> None:
        first = await world.mail("jan@kowalski.pl", "Pytanie", "<q1@k.pl>")
        dup = await world.mail("jan@kowalski.pl", "Pytanie", "<q1@k.pl>")
        assert dup.stored == []
        assert dup.duplicates == 1
        different = await world.mail("jan@kowalski.pl", "Inna sprawa", "<q2@k.pl>")
        assert different.conversations != first.conversations

    async def test_a_new_email_in_a_closed_thread_reopens_it(self, world: World) -> None:
        (cid,) = (await world.mail("jan@kowalski.pl", "Reklamacja", "<c1@k.pl>")).conversations
        await world.svc.close(world.bob, cid)
        again = await world.mail("jan@kowalski.pl", "Re: Reklamacja", "<c2@k.pl>",
                                 in_reply_to=["<c1@k.pl>"])  # fmt: skip
        assert again.reopened == {cid}


def message_id_of(message: MessageView) -> str:
    return str(message.meta["message_id"])
