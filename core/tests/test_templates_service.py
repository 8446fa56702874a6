"""Reply templates on SQLite and PostgreSQL: company-wide (administrators) and personal
(their owner only), grouped by title, rendered for a contact and a conversation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from conversation_world import World, world  # noqa: F401

from tidings import ContactType
from tidings.contacts.fields import FieldSpec, FieldType, InvalidValue
from tidings.contacts.service import ContactsService
from tidings.conversations import Actor, Role
from tidings.errors import Forbidden, NotFound
from tidings.models import Address
from tidings.routing import add_agent
from tidings.templates import MissingVariable, TemplateInvalid, TemplateScope, TemplatesService

pytestmark = pytest.mark.anyio


@dataclass
class Desk:
    world: World
    contacts: ContactsService
    templates: TemplatesService
    admin: Actor


@pytest.fixture
async def desk(world: World) -> Desk:
    admin_id = await add_agent(world.store, "admin", display_name="Ada Admin",
                               role=Role.ADMINISTRATOR, clock=world.clock)  # fmt: skip
    contacts = ContactsService(world.store, clock=world.clock)
    templates = TemplatesService(world.store, contacts, clock=world.clock)
    return Desk(world, contacts, templates, await world.svc.actor(admin_id))


async def test_only_administrators_write_company_templates(desk: Desk) -> None:
    w, t = desk.world, desk.templates
    for actor in (w.alice, w.boss):
        with pytest.raises(Forbidden, match="only administrators"):
            await t.create(actor, title="Powitanie", name="Dzień dobry", body="Dzień dobry!",
                           company=True)  # fmt: skip
    company = await t.create(desk.admin, title="Powitanie", name="Dzień dobry",
                             body="Dzień dobry, w czym mogę pomóc?", company=True)  # fmt: skip
    assert (company.scope, company.owner_id) == (TemplateScope.COMPANY, None)
    assert (await t.get(w.alice, company.id)).body == "Dzień dobry, w czym mogę pomóc?"
    with pytest.raises(Forbidden):
        await t.update(w.alice, company.id, body="Siema")
    with pytest.raises(Forbidden):
        await t.delete(w.boss, company.id)
    updated = await t.update(desk.admin, company.id, body="Dzień dobry!")
    assert updated.body == "Dzień dobry!"
    assert updated.title == "Powitanie"
    await t.delete(desk.admin, company.id)
    with pytest.raises(NotFound):
        await t.get(w.alice, company.id)


async def test_personal_templates_are_their_owners_alone(desk: Desk) -> None:
    w, t = desk.world, desk.templates
    mine = await t.create(
        w.alice, title="Pożegnanie", name="Pa", body="Miłego dnia, {{ agent.name }}"
    )
    assert (mine.scope, mine.owner_id) == (TemplateScope.PERSONAL, w.alice.id)
    for other in (w.bob, w.boss, desk.admin):
        with pytest.raises(NotFound):
            await t.get(other, mine.id)
        with pytest.raises(NotFound):
            await t.update(other, mine.id, body="x")
        with pytest.raises(NotFound):
            await t.delete(other, mine.id)
        with pytest.raises(NotFound):
            await t.render(other, mine.id)
    assert (await t.update(w.alice, mine.id, name="Do widzenia")).name == "Do widzenia"
    assert await t.render(w.alice, mine.id) == "Miłego dnia, alice"
    await t.delete(w.alice, mine.id)
    assert await t.groups(w.alice) == []


async def test_templates_are_grouped_by_title(desk: Desk) -> None:
    w, t = desk.world, desk.templates
    await t.create(desk.admin, title="Powitanie", name="Formalne", body="Szanowni Państwo,",
                   company=True)  # fmt: skip
    await t.create(desk.admin, title="Reklamacje", name="Przyjęta", body="Reklamacja przyjęta.",
                   company=True)  # fmt: skip
    await t.create(w.alice, title="Powitanie", name="Luźne", body="Cześć!")
    await t.create(w.bob, title="Powitanie", name="Bob's", body="Hej")
    groups = await t.groups(w.alice)
    assert [(g.title, [x.name for x in g.templates]) for g in groups] == [
        ("Powitanie", ["Formalne", "Luźne"]),
        ("Reklamacje", ["Przyjęta"]),
    ]
    assert [x.name for g in await t.groups(w.bob) for x in g.templates] == [
        "Bob's", "Formalne", "Przyjęta"]  # fmt: skip
    found = await t.groups(w.alice, search="rekl")
    assert [(g.title, len(g.templates)) for g in found] == [("Reklamacje", 1)]
    assert await t.groups(w.alice, search="100%_") == []


async def test_bad_templates_are_refused_when_saved(desk: Desk) -> None:
    w, t = desk.world, desk.templates
    with pytest.raises(TemplateInvalid, match="unknown variable klient"):
        await t.create(w.alice, title="T", name="N", body="{{ klient.imie }}")
    with pytest.raises(TemplateInvalid, match="line 1"):
        await t.create(w.alice, title="T", name="N", body="{% if %}")
    with pytest.raises(InvalidValue, match="title"):
        await t.create(w.alice, title="  ", name="N", body="x")
    with pytest.raises(InvalidValue, match="name"):
        await t.create(w.alice, title="T", name="n" * 201, body="x")
    ok = await t.create(w.alice, title="T", name="N", body="x")
    with pytest.raises(TemplateInvalid):
        await t.update(w.alice, ok.id, body="{{ contact.__class__ }}{% include 'x' %}")
    assert (await t.get(w.alice, ok.id)).body == "x"


async def test_rendering_for_a_contact_and_a_conversation(desk: Desk) -> None:
    w, c, t = desk.world, desk.contacts, desk.templates
    for spec in [
        FieldSpec(name="first_name", type=FieldType.TEXT, name_part=1),
        FieldSpec(name="last_name", type=FieldType.TEXT, name_part=2),
        FieldSpec(name="mobile", type=FieldType.PHONE, default_phone=True),
        FieldSpec(name="tier", type=FieldType.DICTIONARY, options=("gold", "silver")),
        FieldSpec(name="internal", type=FieldType.TEXT, visible=False, editable=False),
    ]:
        await c.define_field(desk.admin, spec)
    result = await c.add_sender(w.alice, Address.phone("+48600100200"), ContactType.PERSON,
                                {"first_name": "Jan", "last_name": "Kowalski",
                                 "mobile": "+48600100200", "tier": "gold"})  # fmt: skip
    jan = result.contact
    (cid,) = (await w.sms("+48600100200", text="Gdzie paczka?")).conversations
    body = (
        "Dzień dobry {{ contact.fields.first_name }}! Sprawa #{{ conversation.id }} "
        "({{ conversation.kind }}, {{ conversation.customer }}, {{ conversation.project }}). "
        "Poziom {{ contact.fields.tier }}, tel. {{ contact.phone }}. Pozdrawiam, {{ agent.name }}"
    )
    reply = await t.create(desk.admin, title="Paczki", name="Status", body=body, company=True)
    text = await t.render(w.alice, reply.id, conversation_id=cid)  # the linked contact
    assert text == (
        f"Dzień dobry Jan! Sprawa #{cid} (sms, +48600100200, support). "
        "Poziom gold, tel. +48600100200. Pozdrawiam, alice"
    )
    assert await t.render(w.alice, reply.id, contact_id=jan.id, conversation_id=cid) == text

    # A variable without a value is an error naming it, never an empty string.
    email = await t.create(w.alice, title="Paczki", name="Mail", body="Na {{ contact.email }}")
    with pytest.raises(MissingVariable, match=r"contact\.email") as info:
        await t.render(w.alice, email.id, conversation_id=cid)
    assert info.value.variable == "contact.email"
    hidden = await t.create(w.alice, title="X", name="Y", body="{{ contact.fields.internal }}")
    await c.update_contact(desk.admin, jan.id, {"internal": "do not tell"})
    with pytest.raises(MissingVariable, match=r"contact\.fields\.internal"):
        await t.render(w.alice, hidden.id, contact_id=jan.id)  # agents don't see hidden fields
    with pytest.raises(MissingVariable, match="contact"):
        await t.render(w.alice, reply.id)  # no contact, no conversation
    subject = await t.create(w.alice, title="X", name="S", body="{{ conversation.subject }}")
    with pytest.raises(MissingVariable, match=r"conversation\.subject"):
        await t.render(w.alice, subject.id, conversation_id=cid)  # SMS have no subject

    # Only conversations the agent may see can be used.
    with pytest.raises(NotFound):
        await t.render(w.dave, reply.id, conversation_id=cid)
    with pytest.raises(NotFound):
        await t.render(w.alice, reply.id, contact_id=999_999)


async def test_no_contact_without_a_single_linked_one(desk: Desk) -> None:
    w, c, t = desk.world, desk.contacts, desk.templates
    (cid,) = (await w.sms("+48600100201", name="Ania")).conversations
    body = "{{ conversation.customer_name }} / {{ contact.name }}"
    greet = await t.create(w.alice, title="X", name="G", body=body)
    with pytest.raises(MissingVariable, match="contact"):
        await t.render(w.alice, greet.id, conversation_id=cid)
    one = await c.create_contact(w.alice, ContactType.PERSON)
    two = await c.create_contact(w.alice, ContactType.PERSON)
    await c.attach_address(w.alice, one.id, Address.phone("+48600100201"))
    await c.attach_address(w.alice, two.id, Address.phone("+48600100201"))
    with pytest.raises(MissingVariable, match="contact"):
        await t.render(w.alice, greet.id, conversation_id=cid)  # two: the agent must choose
    with pytest.raises(MissingVariable, match=r"contact\.name"):
        await t.render(w.alice, greet.id, conversation_id=cid, contact_id=one.id)  # unnamed
