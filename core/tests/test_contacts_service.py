"""The contacts service on SQLite and PostgreSQL: field definitions and who may make them,
contact values, the built name, fixed type and id, phones with a default, emails, related
contacts and the activity history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from conversation_world import World, world  # noqa: F401

from tidings import Attachment, ContactType
from tidings.contacts import add_contact, find_by_address
from tidings.contacts.fields import FieldSpec, FieldType, InvalidValue
from tidings.contacts.models import ActivityKind
from tidings.contacts.service import ContactsService
from tidings.conversations import Actor, Role
from tidings.errors import Forbidden, NotAllowed, NotFound
from tidings.models import Address
from tidings.routing import add_agent

pytestmark = pytest.mark.anyio

PERSON, ORG = ContactType.PERSON, ContactType.ORGANISATION


@dataclass
class Crm:
    svc: ContactsService
    world: World
    admin: Actor


@pytest.fixture
async def crm(world: World) -> Crm:
    admin_id = await add_agent(world.store, "admin", role=Role.ADMINISTRATOR, clock=world.clock)
    return Crm(
        ContactsService(world.store, clock=world.clock), world, await world.svc.actor(admin_id)
    )


async def define_card(crm: Crm) -> None:
    """The fields of the manuals' contact card: name parts, phones, email, and the rest."""
    admin = crm.admin
    for spec in [
        FieldSpec(name="first_name", type=FieldType.TEXT, label="Imię", contact_type=PERSON,
                  name_part=1, position=1),
        FieldSpec(name="last_name", type=FieldType.TEXT, label="Nazwisko", contact_type=PERSON,
                  name_part=2, position=2, required=True),
        FieldSpec(name="company", type=FieldType.TEXT, label="Nazwa firmy", contact_type=ORG,
                  name_part=1, required=True),
        FieldSpec(name="mobile", type=FieldType.PHONE, label="Komórka", default_phone=True),
        FieldSpec(name="office", type=FieldType.PHONE, label="Biuro", region="PL"),
        FieldSpec(name="email", type=FieldType.EMAIL, label="E-mail"),
        FieldSpec(name="post_code", type=FieldType.MASKED, mask="##-###"),
        FieldSpec(name="segment", type=FieldType.DICTIONARY, options=("gold", "silver")),
        FieldSpec(name="employees", type=FieldType.NUMBER, contact_type=ORG),
        FieldSpec(name="next_call", type=FieldType.DATETIME),
        FieldSpec(name="crm_score", type=FieldType.NUMBER, editable=True, visible=True),
        FieldSpec(name="erp_id", type=FieldType.TEXT, editable=False),
        FieldSpec(name="risk", type=FieldType.TEXT, visible=False, editable=False),
    ]:  # fmt: skip
        await crm.svc.define_field(admin, spec)


# --- field definitions -------------------------------------------------------------------


async def test_only_administrators_define_and_change_fields(crm: Crm) -> None:
    w = crm.world
    spec = FieldSpec(name="nip", type=FieldType.MASKED, mask="###-###-##-##")
    for actor in (w.alice, w.boss):
        with pytest.raises(Forbidden, match="only administrators"):
            await crm.svc.define_field(actor, spec)
    defined = await crm.svc.define_field(crm.admin, spec)
    assert (defined.name, defined.type, defined.mask) == ("nip", FieldType.MASKED, "###-###-##-##")
    with pytest.raises(Forbidden):
        await crm.svc.change_field(w.boss, "nip", {"label": "NIP"})
    with pytest.raises(Forbidden):
        await crm.svc.delete_field(w.alice, "nip")
    changed = await crm.svc.change_field(crm.admin, "nip", {"label": "NIP", "position": 3})
    assert (changed.label, changed.position, changed.id) == ("NIP", 3, defined.id)
    assert [f.label for f in await crm.svc.fields(w.alice)] == ["NIP"]


async def test_field_name_and_type_are_immutable(crm: Crm) -> None:
    await crm.svc.define_field(crm.admin, {"name": "vat_id", "type": "text"})
    for change in ({"name": "nip"}, {"type": "number"}, {"contact_type": "person"}):
        with pytest.raises(InvalidValue, match="cannot be changed"):
            await crm.svc.change_field(crm.admin, "vat_id", change)
    with pytest.raises(InvalidValue, match="exists"):
        await crm.svc.define_field(crm.admin, {"name": "vat_id", "type": "number"})
    with pytest.raises(InvalidValue, match="name"):
        await crm.svc.define_field(crm.admin, {"name": "vat id", "type": "text"})
    with pytest.raises(InvalidValue, match="only a masked field has a mask"):
        await crm.svc.change_field(crm.admin, "vat_id", {"mask": "##"})
    with pytest.raises(InvalidValue, match="visible field can be editable"):
        await crm.svc.change_field(crm.admin, "vat_id", {"visible": False})
    with pytest.raises(InvalidValue, match="colour: Extra inputs"):
        await crm.svc.change_field(crm.admin, "vat_id", {"colour": "red"})
    with pytest.raises(NotFound):
        await crm.svc.change_field(crm.admin, "nope", {"label": "x"})


async def test_one_default_phone_field(crm: Crm) -> None:
    await crm.svc.define_field(crm.admin, FieldSpec(name="mobile", type=FieldType.PHONE,
                                                    default_phone=True))  # fmt: skip
    await crm.svc.define_field(crm.admin, FieldSpec(name="office", type=FieldType.PHONE))
    with pytest.raises(InvalidValue, match="'mobile' is already the default phone"):
        await crm.svc.define_field(
            crm.admin, FieldSpec(name="home", type=FieldType.PHONE, default_phone=True)
        )
    with pytest.raises(InvalidValue, match="already the default phone"):
        await crm.svc.change_field(crm.admin, "office", {"default_phone": True})
    await crm.svc.change_field(crm.admin, "mobile", {"default_phone": False})
    assert (await crm.svc.change_field(crm.admin, "office", {"default_phone": True})).default_phone


async def test_agents_see_only_visible_fields(crm: Crm) -> None:
    await define_card(crm)
    for_agents = {f.name for f in await crm.svc.fields(crm.world.alice)}
    assert "risk" not in for_agents
    assert "erp_id" in for_agents
    assert "risk" in {f.name for f in await crm.svc.fields(crm.admin)}
    orgs = [f.name for f in await crm.svc.fields(crm.admin, ORG)]
    assert "company" in orgs
    assert "first_name" not in orgs
    assert "mobile" in orgs


# --- contacts ----------------------------------------------------------------------------


async def test_contact_values_and_the_name_built_from_fields(crm: Crm) -> None:
    await define_card(crm)
    alice = crm.world.alice
    jan = await crm.svc.create_contact(
        alice, PERSON,
        {"first_name": "Jan", "last_name": "Kowalski", "mobile": "+48 600 100 200",
         "office": "22 100 20 30", "email": "Jan@Kowalski.PL", "post_code": "00950",
         "segment": "gold", "next_call": "2026-11-03T10:00:00+01:00", "crm_score": "7"},
    )  # fmt: skip
    assert jan.type is PERSON
    assert jan.display_name == "Jan Kowalski"
    assert jan.values["post_code"] == "00-950"
    assert jan.values["next_call"] == datetime(2026, 11, 3, 9, tzinfo=UTC)
    assert jan.values["crm_score"] == Decimal(7)
    assert [p.value for p in jan.phones] == ["+48600100200", "+48221002030"]
    assert jan.default_phone == Address.phone("+48600100200")
    assert jan.emails == (Address.email("Jan@kowalski.pl"),)
    assert {a.field for a in jan.addresses} == {"mobile", "office", "email"}

    renamed = await crm.svc.update_contact(alice, jan.id, {"first_name": "Janusz"})
    assert renamed.display_name == "Janusz Kowalski"
    assert renamed.id == jan.id
    assert renamed.type is PERSON
    assert renamed.created_at == jan.created_at

    # Phone and email fields are what the contact lookup finds.
    (match,) = await find_by_address(crm.world.store, Address.phone("+48221002030"))
    assert (match.external_id, match.display_name) == (str(jan.id), "Janusz Kowalski")
    assert match.fields["segment"] == "gold"
    assert "risk" not in match.fields

    moved = await crm.svc.update_contact(alice, jan.id, {"office": "+48 22 999 00 00"})
    assert await find_by_address(crm.world.store, Address.phone("+48221002030")) == []
    assert Address.phone("+48229990000") in moved.phones


async def test_type_is_fixed_at_creation(crm: Crm) -> None:
    await define_card(crm)
    acme = await crm.svc.create_contact(
        crm.world.alice, ORG, {"company": "ACME sp. z o.o.", "employees": 120}
    )
    assert (acme.type, acme.display_name) == (ORG, "ACME sp. z o.o.")
    with pytest.raises(InvalidValue, match="'type': no such field on a organisation contact"):
        await crm.svc.update_contact(crm.world.alice, acme.id, {"type": "person"})
    with pytest.raises(InvalidValue, match="'first_name': no such field"):
        await crm.svc.update_contact(crm.world.alice, acme.id, {"first_name": "Jan"})
    assert (await crm.svc.get_contact(crm.world.bob, acme.id)).type is ORG


async def test_required_fields(crm: Crm) -> None:
    await define_card(crm)
    alice = crm.world.alice
    with pytest.raises(InvalidValue, match="'last_name': a value is required"):
        await crm.svc.create_contact(alice, PERSON, {"first_name": "Jan"})
    with pytest.raises(InvalidValue, match="'company': a value is required"):
        await crm.svc.create_contact(alice, ORG, {})
    jan = await crm.svc.create_contact(alice, PERSON, {"last_name": "Kowalski"})
    assert jan.display_name == "Kowalski"
    with pytest.raises(InvalidValue, match="required"):
        await crm.svc.update_contact(alice, jan.id, {"last_name": ""})
    with pytest.raises(InvalidValue, match="'post_code'"):
        await crm.svc.update_contact(alice, jan.id, {"post_code": "0-95"})
    with pytest.raises(InvalidValue, match="not one of"):
        await crm.svc.update_contact(alice, jan.id, {"segment": "platinum"})
    assert (await crm.svc.get_contact(alice, jan.id)).values == {"last_name": "Kowalski"}


async def test_non_editable_and_invisible_fields(crm: Crm) -> None:
    await define_card(crm)
    w = crm.world
    with pytest.raises(Forbidden, match="'erp_id' is not editable"):
        await crm.svc.create_contact(w.alice, PERSON, {"last_name": "Nowak", "erp_id": "K-1"})
    with pytest.raises(Forbidden, match="'risk' is not editable"):
        await crm.svc.create_contact(w.boss, PERSON, {"last_name": "Nowak", "risk": "high"})
    nowak = await crm.svc.create_contact(
        crm.admin, PERSON, {"last_name": "Nowak", "erp_id": "K-1", "risk": "high"}
    )
    seen_by_agent = await crm.svc.get_contact(w.alice, nowak.id)
    assert seen_by_agent.values == {"last_name": "Nowak", "erp_id": "K-1"}
    assert (await crm.svc.get_contact(crm.admin, nowak.id)).values["risk"] == "high"
    # Editing other fields keeps what the agent may not touch.
    await crm.svc.update_contact(w.alice, nowak.id, {"segment": "silver", "erp_id": "K-1"})
    with pytest.raises(Forbidden):
        await crm.svc.update_contact(w.alice, nowak.id, {"erp_id": None})
    kept = await crm.svc.get_contact(crm.admin, nowak.id)
    assert kept.values == {"last_name": "Nowak", "erp_id": "K-1", "risk": "high",
                           "segment": "silver"}  # fmt: skip


async def test_default_phone_rules(crm: Crm) -> None:
    await define_card(crm)
    alice = crm.world.alice
    office_only = await crm.svc.create_contact(
        alice, PERSON, {"last_name": "A", "office": "+48221000001"}
    )
    assert office_only.default_phone == Address.phone("+48221000001")  # the only number
    await crm.svc.update_contact(alice, office_only.id, {"post_code": "01-234"})
    two = await crm.svc.attach_address(alice, office_only.id, Address.phone("+48600000009"))
    assert two.contact.default_phone is None  # two numbers, no default: the agent chooses
    with_mobile = await crm.svc.update_contact(alice, office_only.id, {"mobile": "+48600000009"})
    assert with_mobile.default_phone == Address.phone("+48600000009")  # the default field wins
    assert len(with_mobile.phones) == 2
    (default,) = [a for a in with_mobile.addresses if a.is_default]
    assert default.field == "mobile"
    await crm.svc.change_field(crm.admin, "mobile", {"default_phone": False})
    assert (await crm.svc.get_contact(alice, office_only.id)).default_phone is None


async def test_legacy_contacts_keep_their_name(crm: Crm) -> None:
    await define_card(crm)
    cid = await add_contact(crm.world.store, type=ORG, display_name="Hurtownia",
                            addresses=[Address.phone("+48221000002")])  # fmt: skip
    updated = await crm.svc.update_contact(crm.admin, cid, {"company": "Hurtownia Sp. J."})
    assert updated.display_name == "Hurtownia Sp. J."
    await crm.svc.delete_field(crm.admin, "company")
    assert (await crm.svc.get_contact(crm.admin, cid)).display_name == "Hurtownia Sp. J."
    assert (await crm.svc.update_contact(crm.admin, cid, {})).values == {}


async def test_deleting_contacts_needs_a_privileged_role(crm: Crm) -> None:
    w = crm.world
    c = await crm.svc.create_contact(w.alice, PERSON, addresses=[Address.email("x@y.pl")])
    with pytest.raises(Forbidden):
        await crm.svc.delete_contact(w.alice, c.id)
    await crm.svc.delete_contact(w.boss, c.id)
    with pytest.raises(NotFound):
        await crm.svc.get_contact(w.alice, c.id)
    with pytest.raises(NotFound):
        await crm.svc.delete_contact(crm.admin, c.id)
    assert await find_by_address(w.store, Address.email("x@y.pl")) == []


# --- related contacts --------------------------------------------------------------------


async def test_related_contacts(crm: Crm) -> None:
    await define_card(crm)
    alice = crm.world.alice
    acme = await crm.svc.create_contact(alice, ORG, {"company": "ACME"})
    jan = await crm.svc.create_contact(alice, PERSON, {"last_name": "Kowalski"})
    ewa = await crm.svc.create_contact(alice, PERSON, {"last_name": "Nowak"})
    await crm.svc.relate(alice, acme.id, jan.id, "pracownik")
    await crm.svc.relate(alice, ewa.id, acme.id, "pracownik")
    await crm.svc.relate(alice, jan.id, acme.id, "prezes")  # again: the label changes
    related = await crm.svc.related(alice, acme.id)
    assert [(r.display_name, r.label) for r in related] == [("Kowalski", "prezes"),
                                                           ("Nowak", "pracownik")]  # fmt: skip
    assert [(r.id, r.type) for r in await crm.svc.related(alice, jan.id)] == [(acme.id, ORG)]
    with pytest.raises(InvalidValue, match="itself"):
        await crm.svc.relate(alice, jan.id, jan.id)
    with pytest.raises(NotFound):
        await crm.svc.relate(alice, jan.id, 999_999)
    await crm.svc.unrelate(alice, acme.id, jan.id)
    with pytest.raises(NotFound):
        await crm.svc.unrelate(alice, jan.id, acme.id)
    assert [r.id for r in await crm.svc.related(alice, acme.id)] == [ewa.id]
    await crm.svc.delete_contact(crm.admin, ewa.id)
    assert await crm.svc.related(alice, acme.id) == []


# --- activity history --------------------------------------------------------------------


async def test_activity_history(crm: Crm) -> None:
    w = crm.world
    jan = await crm.svc.create_contact(w.alice, PERSON, addresses=[Address.phone("+48600100200")])
    note = await crm.svc.add_note(w.alice, jan.id, "  Prefers calls after 16:00  ")
    assert (note.kind, note.text, note.actor_id) == (ActivityKind.NOTE, "Prefers calls after 16:00",
                                                     w.alice.id)  # fmt: skip
    w.later(minutes=5)
    sms = await crm.svc.record(None, jan.id, ActivityKind.SMS, "Your parcel is on its way",
                               {"conversation_id": 7, "direction": "out"})  # fmt: skip
    w.later(minutes=5)
    call = await crm.svc.record(w.bob, jan.id, ActivityKind.CALL, "Inbound call",
                                {"duration_seconds": 95})  # fmt: skip
    w.later(minutes=5)
    status = await crm.svc.record(w.bob, jan.id, ActivityKind.STATUS_CHANGE, "lead → customer",
                                  {"from": "lead", "to": "customer"})  # fmt: skip
    w.later(minutes=5)
    await crm.svc.record(w.bob, jan.id, ActivityKind.EMAIL, "Offer 2026/11", {"message_id": 3})
    w.later(minutes=5)
    pdf = Attachment(filename="../umowa.pdf", content_type="application/pdf", data=b"%PDF-1.7 x")
    file = await crm.svc.add_attachment(w.bob, jan.id, pdf)
    assert file.text == "_umowa.pdf"  # a filename is never a path

    history = await crm.svc.history(w.alice, jan.id)
    assert [a.kind for a in history] == [ActivityKind.ATTACHMENT, ActivityKind.EMAIL,
                                         ActivityKind.STATUS_CHANGE, ActivityKind.CALL,
                                         ActivityKind.SMS, ActivityKind.NOTE]  # fmt: skip
    oldest = await crm.svc.history(w.alice, jan.id, newest_first=False,
                                   kinds=[ActivityKind.SMS, ActivityKind.CALL])  # fmt: skip
    assert [a.id for a in oldest] == [sms.id, call.id]
    assert oldest[1].data == {"duration_seconds": 95}

    got = await crm.svc.attachment(w.alice, file.id)
    assert (got.filename, got.content_type, got.data) == ("_umowa.pdf", "application/pdf",
                                                          b"%PDF-1.7 x")  # fmt: skip
    with pytest.raises(NotFound, match="has no file"):
        await crm.svc.attachment(w.alice, call.id)

    # Notes are edited by their author (or an administrator); other entries take a note.
    with pytest.raises(Forbidden):
        await crm.svc.edit_note(w.bob, note.id, "hijacked")
    edited = await crm.svc.edit_note(w.alice, note.id, "Prefers calls after 17:00")
    assert edited.text == "Prefers calls after 17:00"
    assert edited.edited_at == w.clock()
    assert (await crm.svc.edit_note(crm.admin, note.id, "After 17")).text == "After 17"
    with pytest.raises(NotAllowed, match="cannot be edited"):
        await crm.svc.edit_note(w.bob, call.id, "x")
    annotated = await crm.svc.annotate(w.alice, status.id, "confirmed by phone")
    assert (annotated.note, annotated.text) == ("confirmed by phone", "lead → customer")
    with pytest.raises(NotAllowed, match="edited, not annotated"):
        await crm.svc.annotate(w.alice, note.id, "x")
    with pytest.raises(InvalidValue, match="empty"):
        await crm.svc.add_note(w.alice, jan.id, "   ")
    with pytest.raises(InvalidValue, match="own operation"):
        await crm.svc.record(w.alice, jan.id, ActivityKind.NOTE, "sneaky")

    # Deleting is irreversible: the author, a supervisor or an administrator.
    with pytest.raises(Forbidden):
        await crm.svc.delete_activity(w.alice, call.id)
    with pytest.raises(Forbidden):
        await crm.svc.delete_activity(w.alice, sms.id)  # a system entry
    await crm.svc.delete_activity(w.bob, call.id)
    await crm.svc.delete_activity(w.boss, sms.id)
    with pytest.raises(NotFound):
        await crm.svc.delete_activity(w.boss, sms.id)
    assert len(await crm.svc.history(w.alice, jan.id)) == 4
    with pytest.raises(NotFound):
        await crm.svc.history(w.alice, 999_999)
    with pytest.raises(NotFound):
        await crm.svc.add_note(w.alice, 999_999, "x")


async def test_attachments_need_contents(crm: Crm) -> None:
    jan = await crm.svc.create_contact(crm.world.alice, PERSON)
    remote = Attachment(filename="a.pdf", url="https://files.example/a.pdf")
    with pytest.raises(InvalidValue, match="contents"):
        await crm.svc.add_attachment(crm.world.alice, jan.id, remote)
