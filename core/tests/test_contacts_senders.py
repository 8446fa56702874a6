"""Unknown senders: added as a contact or attached to one, after which the customer's
conversations, existing and future, are linked; and the built-in store answering the
contact-lookup hook beside another CRM."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from conversation_world import ACCOUNTS, Both, World, world  # noqa: F401

from tidings import ContactMatch, ContactType, hookimpl
from tidings.contacts import SOURCE
from tidings.contacts.fields import FieldSpec, FieldType, InvalidValue
from tidings.contacts.service import ContactsService
from tidings.conversations import Conversations, Filters, Role, View
from tidings.errors import NotFound
from tidings.models import Address
from tidings.plugins import load_plugins
from tidings.routing import add_agent
from tidings.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def w(world: World) -> World:
    return world


async def contacts_service(w: World) -> tuple[ContactsService, int]:
    admin_id = await add_agent(w.store, "admin", role=Role.ADMINISTRATOR, clock=w.clock)
    svc = ContactsService(w.store, clock=w.clock)
    admin = await w.svc.actor(admin_id)
    await svc.define_field(admin, FieldSpec(name="first_name", type=FieldType.TEXT, name_part=1))
    await svc.define_field(admin, FieldSpec(name="last_name", type=FieldType.TEXT, name_part=2))
    await svc.define_field(admin, FieldSpec(name="company", type=FieldType.TEXT, name_part=1,
                                            contact_type=ContactType.ORGANISATION))  # fmt: skip
    await svc.define_field(admin, FieldSpec(name="mobile", type=FieldType.PHONE))
    return svc, admin_id


async def linked(w: World, conversation_id: int) -> list[tuple[str, str, str]]:
    detail = await w.svc.get(w.boss, conversation_id)
    return [(c.source, c.external_id, c.display_name) for c in detail.contacts]


async def test_unknown_sender_becomes_a_contact_and_their_conversations_follow(w: World) -> None:
    svc, _ = await contacts_service(w)
    (first,) = (await w.sms("+48600700800", name="Ania")).conversations
    (other_account,) = (await w.sms("+48600700800", account="sms-de")).conversations
    (stranger,) = (await w.sms("+48600999999")).conversations
    assert await linked(w, first) == []

    result = await svc.add_sender(w.alice, Address.phone("+48600700800"), ContactType.PERSON,
                                  {"first_name": "Anna", "last_name": "Wiśniewska"})  # fmt: skip
    cid = str(result.contact.id)
    assert result.contact.display_name == "Anna Wiśniewska"
    assert result.contact.phones == (Address.phone("+48600700800"),)
    assert sorted(result.conversation_ids) == sorted([first, other_account])
    for conversation in (first, other_account):
        assert await linked(w, conversation) == [(SOURCE, cid, "Anna Wiśniewska")]
        assert (await w.svc.get(w.boss, conversation)).summary.customer_name == "Anna Wiśniewska"
        events = await w.svc.events(w.boss, conversation)
        assert (events[-1].kind, events[-1].actor_id, events[-1].data) == (
            "contact_linked",
            w.alice.id,
            {"source": SOURCE, "id": cid},
        )
    assert await linked(w, stranger) == []

    # A later conversation (another account: a new conversation) is linked on arrival.
    w.later(hours=1)
    (later,) = (await w.sms("+48600700800", account="sales-sms")).conversations
    assert later not in (first, other_account)
    assert await linked(w, later) == [(SOURCE, cid, "Anna Wiśniewska")]
    found = await w.svc.view(w.boss, View.ALL, Filters(contact=(SOURCE, cid)))
    assert sorted(r.id for r in found) == sorted([first, other_account, later])

    # Renaming the contact renames its links.
    await svc.update_contact(w.alice, result.contact.id, {"last_name": "Nowak"})
    assert await linked(w, first) == [(SOURCE, cid, "Anna Nowak")]


async def test_sender_attached_to_an_existing_contact(w: World) -> None:
    svc, _ = await contacts_service(w)
    acme = await svc.create_contact(w.alice, ContactType.ORGANISATION, {"company": "ACME"},
                                    addresses=[Address.email("biuro@acme.pl")])  # fmt: skip
    (mail,) = (await w.mail("Zamowienia@ACME.pl", "Zamówienie 7", "<z7@acme.pl>")).conversations
    (sms,) = (await w.sms("+48221002030")).conversations
    assert await linked(w, mail) == []

    by_mail = await svc.attach_address(w.bob, acme.id, Address.email("Zamowienia@acme.pl"))
    assert by_mail.conversation_ids == (mail,)
    by_phone = await svc.attach_address(w.bob, acme.id, Address.phone("+48 22 100 20 30"))
    assert by_phone.conversation_ids == (sms,)
    assert await linked(w, mail) == [(SOURCE, str(acme.id), "ACME")]
    assert await linked(w, sms) == [(SOURCE, str(acme.id), "ACME")]
    again = await svc.attach_address(w.bob, acme.id, Address.phone("+48221002030"))
    assert again.conversation_ids == (sms,)  # idempotent
    assert len(again.contact.phones) == 1

    # The attached number can later be adopted by a phone field without duplicating it.
    adopted = await svc.update_contact(w.bob, acme.id, {"mobile": "+48221002030"})
    assert [(a.address.key, a.field) for a in adopted.addresses] == [
        ("email:biuro@acme.pl", None), ("email:Zamowienia@acme.pl", None),
        ("phone:+48221002030", "mobile"),
    ]  # fmt: skip

    (reply,) = (
        await w.mail("Zamowienia@acme.pl", "Re: Zamówienie 7", "<z8@acme.pl>",
                     in_reply_to=["<z7@acme.pl>"])
    ).conversations  # fmt: skip
    assert reply == mail
    with pytest.raises(NotFound):
        await svc.attach_address(w.bob, 999_999, Address.phone("+48600000001"))


async def test_adding_a_sender_checks_the_values_and_writes_nothing_on_refusal(w: World) -> None:
    svc, _ = await contacts_service(w)
    (conversation,) = (await w.sms("+48600700801")).conversations
    with pytest.raises(InvalidValue, match="'mobile'"):
        await svc.add_sender(w.alice, Address.phone("+48600700801"), ContactType.PERSON,
                             {"mobile": "not a number"})  # fmt: skip
    assert await linked(w, conversation) == []
    assert (await w.svc.lookup([Address.phone("+48600700801")])) == {"phone:+48600700801": []}


class OtherCrm:
    """A CRM plugin answering beside the built-in store."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    @hookimpl
    async def lookup_contacts(
        self, addresses: Sequence[Address], store: Store
    ) -> dict[str, list[ContactMatch]]:
        self.asked.append([a.key for a in addresses])
        return {
            a.key: [ContactMatch(source="erp", external_id="K-17", display_name="Klient ERP")]
            for a in addresses
            if a.kind.value == "phone"
        }


async def test_hook_answers_are_merged_and_both_linked_on_arrival(w: World) -> None:
    svc, _ = await contacts_service(w)
    crm = OtherCrm()
    plugins = load_plugins({}, extra=[("both", Both()), ("erp", crm)], entry_points_enabled=False)
    conversations = Conversations(w.store, plugins, ACCOUNTS, clock=w.clock)
    jan = await svc.create_contact(w.alice, ContactType.PERSON,
                                   {"first_name": "Jan", "mobile": "+48600100200"})  # fmt: skip
    answers = await plugins.lookup_contacts(
        [Address.phone("+48600100200"), Address.email("jan@k.pl")], w.store
    )
    assert [(m.source, m.external_id) for m in answers["phone:+48600100200"]] == [
        (SOURCE, str(jan.id)), ("erp", "K-17")]  # fmt: skip
    assert answers["phone:+48600100200"][0].fields == {"first_name": "Jan",
                                                      "mobile": "+48600100200"}  # fmt: skip
    assert answers["email:jan@k.pl"] == []
    w.svc = conversations
    (cid,) = (await w.sms("+48600100200")).conversations
    assert await linked(w, cid) == [("builtin", str(jan.id), "Jan"), ("erp", "K-17", "Klient ERP")]
    assert crm.asked[-1] == ["phone:+48600100200"]
