"""Reply templates: company-wide ones written by administrators, personal ones by each
agent for themselves, grouped by title for the quick-reply picker.

A personal template is its owner's alone: to anyone else it does not exist (``NotFound``),
as conversations an agent may not see do not. Bodies are checked when saved, so a broken
template is refused by the editor and not discovered while replying to a customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock, system_clock
from tidings.contacts import SOURCE
from tidings.contacts.fields import InvalidValue
from tidings.contacts.models import Contact
from tidings.contacts.service import ContactsService
from tidings.conversations import queries
from tidings.conversations.models import Actor, Role
from tidings.errors import Forbidden, NotFound
from tidings.store import Store, tables
from tidings.store import tables_contacts as tc
from tidings.templates.render import check, render

TITLE_MAX = 200


class TemplateScope(StrEnum):
    COMPANY = "company"
    PERSONAL = "personal"


class Template(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    scope: TemplateScope
    owner_id: int | None
    title: str
    """The group the template is shown under (greetings, closing, …)."""
    name: str
    body: str
    created_at: datetime
    updated_at: datetime


class TemplateGroup(BaseModel):
    model_config = ConfigDict(frozen=True)

    title: str
    templates: tuple[Template, ...]


def _template(row: sa.Row[Any]) -> Template:
    return Template(
        id=row.id,
        scope=TemplateScope.COMPANY if row.owner_id is None else TemplateScope.PERSONAL,
        owner_id=row.owner_id,
        title=row.title,
        name=row.name,
        body=row.body,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _label(value: str, what: str) -> str:
    cleaned = value.strip()
    if not cleaned or len(cleaned) > TITLE_MAX:
        raise InvalidValue(f"a template {what} has 1 to {TITLE_MAX} characters")
    return cleaned


def _address_text(key: str) -> str:
    """The customer's address as a person writes it (``+48600…``), not the internal key."""
    kind, _, rest = key.partition(":")
    return rest.rpartition(":")[2] if kind == "scoped" else rest


def contact_variables(contact: Contact) -> dict[str, Any]:
    default = contact.default_phone
    return {
        "id": contact.id,
        "type": contact.type.value,
        "name": contact.display_name or None,
        "vip": contact.vip,
        "owner": contact.owner,
        "fields": dict(contact.values),
        "phone": default.value if default else None,
        "phones": [p.value for p in contact.phones] or None,
        "email": contact.emails[0].value if contact.emails else None,
        "emails": [e.value for e in contact.emails] or None,
    }


class TemplatesService:
    def __init__(
        self, store: Store, contacts: ContactsService, *, clock: Clock = system_clock
    ) -> None:
        self.store = store
        self.contacts = contacts
        self.clock = clock

    def _may_write(self, actor: Actor, owner_id: int | None) -> None:
        if owner_id is None and actor.role is not Role.ADMINISTRATOR:
            raise Forbidden("only administrators write company-wide templates")

    async def create(
        self, actor: Actor, *, title: str, name: str, body: str, company: bool = False
    ) -> Template:
        """A personal template of ``actor``, or with ``company`` one for everybody."""
        owner_id = None if company else actor.id
        self._may_write(actor, owner_id)
        check(body)
        now = self.clock()
        t = tc.templates
        async with self.store.write() as conn:
            result = await conn.execute(
                sa.insert(t)
                .values(
                    owner_id=owner_id, title=_label(title, "title"), name=_label(name, "name"),
                    body=body, created_by=actor.id, created_at=now, updated_at=now,
                )
                .returning(t)
            )  # fmt: skip
            return _template(result.one())

    async def _row(self, conn: AsyncConnection, actor: Actor, template_id: int) -> sa.Row[Any]:
        t = tc.templates
        row = (
            await conn.execute(
                sa.select(t).where(
                    t.c.id == template_id, sa.or_(t.c.owner_id.is_(None), t.c.owner_id == actor.id)
                )
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no template {template_id}")
        return row

    async def get(self, actor: Actor, template_id: int) -> Template:
        async with self.store.read() as conn:
            return _template(await self._row(conn, actor, template_id))

    async def update(
        self,
        actor: Actor,
        template_id: int,
        *,
        title: str | None = None,
        name: str | None = None,
        body: str | None = None,
    ) -> Template:
        t = tc.templates
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = _label(title, "title")
        if name is not None:
            values["name"] = _label(name, "name")
        if body is not None:
            check(body)
            values["body"] = body
        async with self.store.write() as conn:
            row = await self._row(conn, actor, template_id)
            self._may_write(actor, row.owner_id)
            result = await conn.execute(
                sa.update(t)
                .where(t.c.id == template_id)
                .values(updated_at=self.clock(), **values)
                .returning(t)
            )
            return _template(result.one())

    async def delete(self, actor: Actor, template_id: int) -> None:
        t = tc.templates
        async with self.store.write() as conn:
            row = await self._row(conn, actor, template_id)
            self._may_write(actor, row.owner_id)
            await conn.execute(sa.delete(t).where(t.c.id == template_id))

    async def groups(self, actor: Actor, search: str | None = None) -> list[TemplateGroup]:
        """The company's and the agent's own templates by title; ``search`` keeps those whose
        title, name or text contains it (the ``/`` quick-reply picker)."""
        t = tc.templates
        query = sa.select(t).where(sa.or_(t.c.owner_id.is_(None), t.c.owner_id == actor.id))
        if search and search.strip():
            escaped = search.strip().lower().replace("\\", "\\\\")
            escaped = escaped.replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            query = query.where(
                sa.or_(
                    *(sa.func.lower(col).like(pattern, escape="\\")
                      for col in (t.c.title, t.c.name, t.c.body))
                )
            )  # fmt: skip
        async with self.store.read() as conn:
            rows = await conn.execute(query.order_by(t.c.title, t.c.name, t.c.id))
            grouped: dict[str, list[Template]] = {}
            for row in rows:
                grouped.setdefault(row.title, []).append(_template(row))
        return [TemplateGroup(title=k, templates=tuple(v)) for k, v in grouped.items()]

    async def variables(
        self, actor: Actor, *, contact_id: int | None = None, conversation_id: int | None = None
    ) -> dict[str, Mapping[str, Any] | None]:
        """What a template sees. Without ``contact_id`` the contact is the one built-in
        contact linked to the conversation, if there is exactly one."""
        conversation: dict[str, Any] | None = None
        async with self.store.read() as conn:
            a = tables.agents
            agent = (await conn.execute(sa.select(a).where(a.c.id == actor.id))).one()
            if conversation_id is not None:
                conversation, linked = await self._conversation(conn, actor, conversation_id)
                if contact_id is None and len(linked) == 1:
                    contact_id = linked[0]
        contact = None
        if contact_id is not None:
            contact = contact_variables(await self.contacts.get_contact(actor, contact_id))
        return {
            "contact": contact,
            "conversation": conversation,
            "agent": {
                "id": agent.id,
                "username": agent.username,
                "name": agent.display_name or agent.username,
            },
        }

    async def _conversation(
        self, conn: AsyncConnection, actor: Actor, conversation_id: int
    ) -> tuple[dict[str, Any], list[int]]:
        c, p, cc = tables.conversations, tables.projects, tables.conversation_contacts
        row = (
            await conn.execute(
                sa.select(c, p.c.key.label("project_key"))
                .join(p, p.c.id == c.c.project_id)
                .where(c.c.id == conversation_id, queries.visible(actor))
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no conversation {conversation_id}")
        linked = (
            await conn.execute(
                sa.select(cc.c.external_id).where(
                    cc.c.conversation_id == conversation_id, cc.c.source == SOURCE
                )
            )
        ).scalars()
        values = {
            "id": row.id,
            "subject": row.subject or None,
            "customer": _address_text(row.customer_key),
            "customer_name": row.customer_name or None,
            "channel": row.channel,
            "kind": row.kind,
            "account": row.account_id,
            "project": row.project_key,
            "state": row.state,
        }
        return values, [int(x) for x in linked]

    async def render(
        self,
        actor: Actor,
        template_id: int,
        *,
        contact_id: int | None = None,
        conversation_id: int | None = None,
    ) -> str:
        """The template's text for this contact and conversation; a variable without a value
        raises ``MissingVariable`` naming it."""
        template = await self.get(actor, template_id)
        variables = await self.variables(
            actor, contact_id=contact_id, conversation_id=conversation_id
        )
        return render(template.body, variables)
