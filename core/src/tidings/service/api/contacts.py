"""The CRM (contact fields, contacts, related contacts, history) and reply templates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from tidings.contacts.fields import FieldDefinition, FieldSpec
from tidings.contacts.models import Activity, ActivityKind, Contact, LinkResult, RelatedContact
from tidings.models import Address, ContactType
from tidings.service.api.conversations import NO_CONTENT
from tidings.service.api.deps import Me, Svc
from tidings.templates import Template, TemplateGroup

router = APIRouter(tags=["contacts"])
templates_router = APIRouter(tags=["templates"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactBody(Body):
    type: ContactType = ContactType.PERSON
    values: dict[str, Any] = {}
    addresses: list[Address] = Field(default=[], max_length=100)
    vip: bool = False
    owner: str | None = Field(default=None, max_length=300)


class ContactChanges(Body):
    values: dict[str, Any] = {}
    vip: bool | None = None
    owner: str | None = Field(default=None, max_length=300)


class AddressBody(Body):
    address: Address


class SenderBody(Body):
    address: Address
    type: ContactType = ContactType.PERSON
    values: dict[str, Any] = {}


class RelationBody(Body):
    label: str = Field(default="", max_length=200)


class NoteBody(Body):
    text: str = Field(min_length=1, max_length=10_000)


class ActivityChange(Body):
    text: str | None = Field(default=None, max_length=10_000, description="a note's new text")
    note: str | None = Field(default=None, max_length=1000, description="a note on a fact")


# --- field definitions ----------------------------------------------------------------


@router.get("/contact-fields", response_model=list[FieldDefinition])
async def fields(
    svc: Svc, me: Me, contact_type: ContactType | None = None
) -> list[FieldDefinition]:
    return await svc.contacts.fields(me, contact_type)


@router.post("/contact-fields", status_code=201, response_model=FieldDefinition)
async def define_field(svc: Svc, me: Me, body: FieldSpec) -> FieldDefinition:
    """Administrators: a new field; its name and type are fixed from now on."""
    return await svc.contacts.define_field(me, body)


@router.patch("/contact-fields/{name}", response_model=FieldDefinition)
async def change_field(svc: Svc, me: Me, name: str, body: dict[str, Any]) -> FieldDefinition:
    return await svc.contacts.change_field(me, name, body)


@router.delete("/contact-fields/{name}", **NO_CONTENT)
async def delete_field(svc: Svc, me: Me, name: str) -> None:
    await svc.contacts.delete_field(me, name)


# --- contacts -------------------------------------------------------------------------


@router.post("/contacts", status_code=201, response_model=Contact)
async def create_contact(svc: Svc, me: Me, body: ContactBody) -> Contact:
    return await svc.contacts.create_contact(
        me, body.type, body.values, addresses=body.addresses, vip=body.vip, owner=body.owner
    )


@router.get("/contacts/{contact_id}", response_model=Contact)
async def get_contact(svc: Svc, me: Me, contact_id: int) -> Contact:
    return await svc.contacts.get_contact(me, contact_id)


@router.patch("/contacts/{contact_id}", response_model=Contact)
async def update_contact(svc: Svc, me: Me, contact_id: int, body: ContactChanges) -> Contact:
    return await svc.contacts.update_contact(
        me, contact_id, body.values, vip=body.vip, owner=body.owner
    )


@router.delete("/contacts/{contact_id}", **NO_CONTENT)
async def delete_contact(svc: Svc, me: Me, contact_id: int) -> None:
    await svc.contacts.delete_contact(me, contact_id)


@router.post("/contacts/{contact_id}/addresses", response_model=LinkResult)
async def attach_address(svc: Svc, me: Me, contact_id: int, body: AddressBody) -> LinkResult:
    """Attach a sender's address: their conversations are linked to the contact."""
    return await svc.contacts.attach_address(me, contact_id, body.address)


@router.post("/contacts/senders", status_code=201, response_model=LinkResult)
async def add_sender(svc: Svc, me: Me, body: SenderBody) -> LinkResult:
    """Make an unknown sender a new contact."""
    return await svc.contacts.add_sender(me, body.address, body.type, body.values)


@router.get("/contacts/{contact_id}/related", response_model=list[RelatedContact])
async def related(svc: Svc, me: Me, contact_id: int) -> list[RelatedContact]:
    return await svc.contacts.related(me, contact_id)


@router.put("/contacts/{contact_id}/related/{other_id}", **NO_CONTENT)
async def relate(svc: Svc, me: Me, contact_id: int, other_id: int, body: RelationBody) -> None:
    await svc.contacts.relate(me, contact_id, other_id, body.label)


@router.delete("/contacts/{contact_id}/related/{other_id}", **NO_CONTENT)
async def unrelate(svc: Svc, me: Me, contact_id: int, other_id: int) -> None:
    await svc.contacts.unrelate(me, contact_id, other_id)


@router.get("/contacts/{contact_id}/history", response_model=list[Activity])
async def history(
    svc: Svc,
    me: Me,
    contact_id: int,
    kind: Annotated[list[ActivityKind], Query()] = [],  # noqa: B006
    newest_first: bool = True,
) -> list[Activity]:
    return await svc.contacts.history(me, contact_id, kinds=kind, newest_first=newest_first)


@router.post("/contacts/{contact_id}/notes", status_code=201, response_model=Activity)
async def add_note(svc: Svc, me: Me, contact_id: int, body: NoteBody) -> Activity:
    return await svc.contacts.add_note(me, contact_id, body.text)


@router.patch("/activities/{activity_id}", response_model=Activity)
async def change_activity(svc: Svc, me: Me, activity_id: int, body: ActivityChange) -> Activity:
    """Edit a note's text, or add a short note to another activity."""
    if (body.text is None) == (body.note is None):
        raise ValueError("give text (for a note) or note (for another activity)")
    if body.text is not None:
        return await svc.contacts.edit_note(me, activity_id, body.text)
    return await svc.contacts.annotate(me, activity_id, body.note or "")


@router.delete("/activities/{activity_id}", **NO_CONTENT)
async def delete_activity(svc: Svc, me: Me, activity_id: int) -> None:
    await svc.contacts.delete_activity(me, activity_id)


# --- templates ------------------------------------------------------------------------


class TemplateBody(Body):
    title: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    body: str = Field(max_length=20_000)
    company: bool = False


class TemplateChanges(Body):
    title: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    body: str | None = Field(default=None, max_length=20_000)


class RenderBody(Body):
    contact_id: int | None = None
    conversation_id: int | None = None


class Rendered(BaseModel):
    text: str


@templates_router.get("/templates", response_model=list[TemplateGroup])
async def template_groups(svc: Svc, me: Me, search: str | None = None) -> list[TemplateGroup]:
    """The company's and one's own templates, by title (the quick-reply picker)."""
    return await svc.templates.groups(me, search)


@templates_router.post("/templates", status_code=201, response_model=Template)
async def create_template(svc: Svc, me: Me, body: TemplateBody) -> Template:
    return await svc.templates.create(
        me, title=body.title, name=body.name, body=body.body, company=body.company
    )


@templates_router.get("/templates/{template_id}", response_model=Template)
async def get_template(svc: Svc, me: Me, template_id: int) -> Template:
    return await svc.templates.get(me, template_id)


@templates_router.patch("/templates/{template_id}", response_model=Template)
async def update_template(svc: Svc, me: Me, template_id: int, body: TemplateChanges) -> Template:
    return await svc.templates.update(
        me, template_id, title=body.title, name=body.name, body=body.body
    )


@templates_router.delete("/templates/{template_id}", **NO_CONTENT)
async def delete_template(svc: Svc, me: Me, template_id: int) -> None:
    await svc.templates.delete(me, template_id)


@templates_router.post("/templates/{template_id}/render", response_model=Rendered)
async def render_template(svc: Svc, me: Me, template_id: int, body: RenderBody) -> Rendered:
    """The text for this contact and conversation (422 names a variable without value)."""
    text = await svc.templates.render(
        me, template_id, contact_id=body.contact_id, conversation_id=body.conversation_id
    )
    return Rendered(text=text)
