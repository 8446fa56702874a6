"""The contacts service: the CRM's one async API for the HTTP service, the CLI and workers.

Every operation takes the acting agent. Field definitions are administrators' business;
any agent works on contacts, within what the field definitions allow (a non-editable field
is set by administrators only). Refusals are typed: ``Forbidden`` for a missing role,
``InvalidValue`` for a value that breaks a field's rules, ``NotFound`` for unknown ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock, system_clock
from tidings.contacts import SOURCE
from tidings.contacts.fields import (
    FieldDefinition,
    FieldSettings,
    FieldSpec,
    FieldType,
    InvalidValue,
    canonical,
    check_type_settings,
    python_value,
)
from tidings.contacts.models import (
    Activity,
    ActivityKind,
    AttachmentContent,
    Contact,
    ContactAddress,
    LinkResult,
    RelatedContact,
)
from tidings.conversations.models import Actor, Role
from tidings.errors import Forbidden, NotAllowed, NotFound
from tidings.models import Address, AddressKind, Attachment, ContactType
from tidings.store import Store, dialect_insert, tables
from tidings.store import tables_contacts as tc

NOTE_MAX = 10_000
ATTACHMENT_MAX = 25 * 1024 * 1024
_ADDRESS_FIELDS = {FieldType.PHONE: AddressKind.PHONE, FieldType.EMAIL: AddressKind.EMAIL}
_RECORDED = {ActivityKind.STATUS_CHANGE, ActivityKind.EMAIL, ActivityKind.SMS, ActivityKind.CALL}


def _require_admin(actor: Actor, what: str) -> None:
    if actor.role is not Role.ADMINISTRATOR:
        raise Forbidden(f"only administrators may {what}")


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )


def _field(row: sa.Row[Any]) -> FieldDefinition:
    return FieldDefinition(
        id=row.id,
        name=row.name,
        type=FieldType(row.type),
        contact_type=ContactType(row.contact_type) if row.contact_type else None,
        label=row.label,
        visible=row.visible,
        editable=row.editable,
        required=row.required,
        default_phone=row.default_phone,
        name_part=row.name_part,
        position=row.position,
        mask=row.mask,
        currency=row.currency,
        region=row.region,
        options=tuple(row.options or ()),
    )


def _field_columns(settings: FieldSettings) -> dict[str, Any]:
    return {
        "label": settings.label,
        "visible": settings.visible,
        "editable": settings.editable,
        "required": settings.required,
        "default_phone": settings.default_phone,
        "name_part": settings.name_part,
        "position": settings.position,
        "mask": settings.mask,
        "currency": settings.currency,
        "region": settings.region,
        "options": list(settings.options),
    }


def _activity(row: sa.Row[Any]) -> Activity:
    return Activity(
        id=row.id,
        contact_id=row.contact_id,
        kind=ActivityKind(row.kind),
        at=row.at,
        actor_id=row.actor_id,
        text=row.text,
        note=row.note,
        data=dict(row.data or {}),
        edited_at=row.edited_at,
    )


def _text(text: str, what: str, limit: int = NOTE_MAX) -> str:
    cleaned = text.strip()
    if not cleaned:
        raise InvalidValue(f"{what} is empty")
    if len(cleaned) > limit:
        raise InvalidValue(f"{what} has more than {limit} characters")
    return cleaned


class ContactsService:
    def __init__(self, store: Store, *, clock: Clock = system_clock) -> None:
        self.store = store
        self.clock = clock

    # --- field definitions ----------------------------------------------------------------

    async def define_field(
        self, actor: Actor, spec: FieldSpec | Mapping[str, Any]
    ) -> FieldDefinition:
        """Add a contact field; its name and type are fixed from now on."""
        _require_admin(actor, "define contact fields")
        if not isinstance(spec, FieldSpec):
            try:
                spec = FieldSpec.model_validate(spec)
            except ValidationError as exc:
                raise InvalidValue(_validation_message(exc)) from None
        f = tc.contact_fields
        now = self.clock()
        async with self.store.write() as conn:
            taken = await conn.execute(sa.select(f.c.id).where(f.c.name == spec.name))
            if taken.first() is not None:
                raise InvalidValue("a field with this name exists", field=spec.name)
            if spec.default_phone:
                await self._one_default_phone(conn, spec.contact_type, exclude=None)
            result = await conn.execute(
                sa.insert(f)
                .values(
                    name=spec.name,
                    type=spec.type.value,
                    contact_type=spec.contact_type.value if spec.contact_type else None,
                    created_at=now,
                    updated_at=now,
                    **_field_columns(spec),
                )
                .returning(f.c.id)
            )
            return FieldDefinition(id=int(result.scalar_one()), **spec.model_dump())

    async def change_field(
        self, actor: Actor, name: str, changes: Mapping[str, Any]
    ) -> FieldDefinition:
        """Change a field's label, flags, mask or options. Its name, type and contact type
        are refused: stored values and reports depend on them."""
        _require_admin(actor, "change contact fields")
        fixed = {"name", "type", "contact_type", "id"} & set(changes)
        if fixed:
            raise InvalidValue(f"{', '.join(sorted(fixed))} cannot be changed", field=name)
        f = tc.contact_fields
        async with self.store.write() as conn:
            current = await self._field_by_name(conn, name)
            try:
                settings = FieldSettings.model_validate(
                    {**current.model_dump(include=set(FieldSettings.model_fields)), **changes}
                )
                check_type_settings(current.type, settings)
            except (ValidationError, ValueError) as exc:
                message = _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
                raise InvalidValue(message, field=name) from None
            if settings.default_phone and not current.default_phone:
                await self._one_default_phone(conn, current.contact_type, exclude=current.id)
            await conn.execute(
                sa.update(f)
                .where(f.c.id == current.id)
                .values(updated_at=self.clock(), **_field_columns(settings))
            )
            if settings.default_phone != current.default_phone:
                ca = tables.contact_addresses
                await conn.execute(
                    sa.update(ca)
                    .where(ca.c.label == name)
                    .values(is_default=settings.default_phone)
                )
            return FieldDefinition(
                **{**current.model_dump(), **settings.model_dump()},
            )

    async def delete_field(self, actor: Actor, name: str) -> None:
        """Remove a field with every contact's value in it (and the addresses it held)."""
        _require_admin(actor, "delete contact fields")
        f, ca = tc.contact_fields, tables.contact_addresses
        async with self.store.write() as conn:
            current = await self._field_by_name(conn, name)
            await conn.execute(sa.delete(ca).where(ca.c.label == name))
            await conn.execute(sa.delete(f).where(f.c.id == current.id))

    async def fields(
        self, actor: Actor, contact_type: ContactType | None = None
    ) -> list[FieldDefinition]:
        """The field definitions in display order; agents see the visible ones."""
        async with self.store.read() as conn:
            defs = await self._fields(conn)
        return [
            d
            for d in defs
            if (contact_type is None or d.applies_to(contact_type))
            and (d.visible or actor.role is Role.ADMINISTRATOR)
        ]

    async def _fields(self, conn: AsyncConnection) -> list[FieldDefinition]:
        f = tc.contact_fields
        rows = await conn.execute(sa.select(f).order_by(f.c.position, f.c.id))
        return [_field(r) for r in rows]

    async def _field_by_name(self, conn: AsyncConnection, name: str) -> FieldDefinition:
        f = tc.contact_fields
        row = (await conn.execute(sa.select(f).where(f.c.name == name))).one_or_none()
        if row is None:
            raise NotFound(f"no contact field {name!r}")
        return _field(row)

    async def _one_default_phone(
        self, conn: AsyncConnection, contact_type: ContactType | None, exclude: int | None
    ) -> None:
        for d in await self._fields(conn):
            overlaps = (
                d.contact_type is None or contact_type is None or d.contact_type is contact_type
            )
            if d.default_phone and overlaps and d.id != exclude:
                raise InvalidValue(f"{d.name!r} is already the default phone field", field=d.name)

    # --- contacts -------------------------------------------------------------------------

    async def create_contact(
        self,
        actor: Actor,
        type: ContactType,
        values: Mapping[str, Any] | None = None,
        *,
        addresses: Sequence[Address] = (),
        vip: bool = False,
        owner: str | None = None,
    ) -> Contact:
        """A new contact; its type is fixed from now on and its name is built from fields."""
        async with self.store.write() as conn:
            contact_id = await self._create(conn, actor, type, values or {}, addresses, vip, owner)
            return await self._contact(conn, actor, contact_id)

    async def _create(
        self,
        conn: AsyncConnection,
        actor: Actor,
        type: ContactType,
        values: Mapping[str, Any],
        addresses: Sequence[Address],
        vip: bool,
        owner: str | None,
    ) -> int:
        defs = await self._fields(conn)
        stored = self._checked(actor, defs, type, {}, values)
        now = self.clock()
        result = await conn.execute(
            sa.insert(tables.contacts)
            .values(
                type=type.value, display_name="", vip=vip, owner=owner, created_at=now,
                updated_at=now,
            )
            .returning(tables.contacts.c.id)
        )  # fmt: skip
        contact_id = int(result.scalar_one())
        for address in addresses:
            await self._add_address(conn, contact_id, address)
        await self._write_values(conn, contact_id, type, defs, stored)
        return contact_id

    async def update_contact(
        self,
        actor: Actor,
        contact_id: int,
        values: Mapping[str, Any],
        *,
        vip: bool | None = None,
        owner: str | None = None,
    ) -> Contact:
        """Change field values (``None`` or ``""`` clears one). The type and id cannot be
        changed: there is no way to pass them."""
        c = tables.contacts
        async with self.store.write() as conn:
            row = await self._contact_row(conn, contact_id)
            type = ContactType(row.type)
            defs = await self._fields(conn)
            current = await self._stored_values(conn, contact_id, defs)
            stored = self._checked(actor, defs, type, current, values)
            extra: dict[str, Any] = {}
            if vip is not None:
                extra["vip"] = vip
            if owner is not None:
                extra["owner"] = owner or None
            await conn.execute(
                sa.update(c).where(c.c.id == contact_id).values(updated_at=self.clock(), **extra)
            )
            await self._write_values(conn, contact_id, type, defs, stored)
            return await self._contact(conn, actor, contact_id)

    async def get_contact(self, actor: Actor, contact_id: int) -> Contact:
        async with self.store.read() as conn:
            return await self._contact(conn, actor, contact_id)

    async def delete_contact(self, actor: Actor, contact_id: int) -> None:
        """Delete a contact with its addresses, values, relations and history (supervisors
        and administrators: it cannot be undone)."""
        if not actor.privileged:
            raise Forbidden("only supervisors and administrators may delete contacts")
        c, cc = tables.contacts, tables.conversation_contacts
        async with self.store.write() as conn:
            await self._contact_row(conn, contact_id)
            await conn.execute(
                sa.delete(cc).where(cc.c.source == SOURCE, cc.c.external_id == str(contact_id))
            )
            await conn.execute(sa.delete(c).where(c.c.id == contact_id))

    def _checked(
        self,
        actor: Actor,
        defs: Sequence[FieldDefinition],
        type: ContactType,
        current: Mapping[str, Any],
        changes: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The stored values after ``changes``; refuses unknown, non-editable, invalid and
        missing required values."""
        by_name = {d.name: d for d in defs if d.applies_to(type)}
        merged = dict(current)
        for name, value in changes.items():
            field = by_name.get(name)
            if field is None:
                raise InvalidValue(f"no such field on a {type.value} contact", field=name)
            new = canonical(field, value)
            if new == merged.get(name):
                continue
            if not field.editable and actor.role is not Role.ADMINISTRATOR:
                raise Forbidden(f"field {name!r} is not editable")
            if new is None:
                merged.pop(name, None)
            else:
                merged[name] = new
        for field in by_name.values():
            if field.required and name_missing(merged, field.name):
                raise InvalidValue("a value is required", field=field.name)
        return merged

    async def _stored_values(
        self, conn: AsyncConnection, contact_id: int, defs: Sequence[FieldDefinition]
    ) -> dict[str, Any]:
        v = tc.contact_values
        names = {d.id: d.name for d in defs}
        rows = await conn.execute(sa.select(v).where(v.c.contact_id == contact_id))
        return {names[r.field_id]: r.value for r in rows if r.field_id in names}

    async def _write_values(
        self,
        conn: AsyncConnection,
        contact_id: int,
        type: ContactType,
        defs: Sequence[FieldDefinition],
        stored: Mapping[str, Any],
    ) -> None:
        """Replace the contact's values, re-derive its phone/email addresses and its name."""
        v, ca, c = tc.contact_values, tables.contact_addresses, tables.contacts
        by_name = {d.name: d for d in defs}
        await conn.execute(sa.delete(v).where(v.c.contact_id == contact_id))
        if stored:
            await conn.execute(
                sa.insert(v),
                [
                    {"contact_id": contact_id, "field_id": by_name[n].id, "value": value}
                    for n, value in stored.items()
                ],
            )
        await conn.execute(
            sa.delete(ca).where(ca.c.contact_id == contact_id, ca.c.label.is_not(None))
        )
        derived: dict[tuple[str, str], dict[str, Any]] = {}
        for name, value in stored.items():
            kind = _ADDRESS_FIELDS.get(by_name[name].type)
            if kind is not None and (kind.value, value) not in derived:
                derived[(kind.value, value)] = {
                    "contact_id": contact_id, "kind": kind.value, "scope": "", "value": value,
                    "label": name, "is_default": by_name[name].default_phone,
                }  # fmt: skip
        if derived:
            # An address attached before (an unknown sender's number) that a field now
            # holds becomes that field's.
            stmt = dialect_insert(conn.dialect.name, ca)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[ca.c.contact_id, ca.c.kind, ca.c.scope, ca.c.value],
                    set_={"label": stmt.excluded.label, "is_default": stmt.excluded.is_default},
                ),
                list(derived.values()),
            )
        display = self._display_name(type, defs, stored)
        old = (
            await conn.execute(sa.select(c.c.display_name).where(c.c.id == contact_id))
        ).scalar_one()
        if display is not None and display != old:
            cc = tables.conversation_contacts
            await conn.execute(
                sa.update(c).where(c.c.id == contact_id).values(display_name=display)
            )
            await conn.execute(
                sa.update(cc)
                .where(cc.c.source == SOURCE, cc.c.external_id == str(contact_id))
                .values(display_name=display)
            )

    @staticmethod
    def _display_name(
        type: ContactType, defs: Sequence[FieldDefinition], stored: Mapping[str, Any]
    ) -> str | None:
        """The name parts in order (first and last name; a company name); ``None`` when no
        field makes up names of this type (the name given at creation stays)."""
        parts = sorted(
            (d.name_part, d.id, d.name)
            for d in defs
            if d.name_part is not None and d.applies_to(type)
        )
        if not parts:
            return None
        return " ".join(str(stored[n]) for _, _, n in parts if n in stored)[:300]

    async def _contact_row(self, conn: AsyncConnection, contact_id: int) -> sa.Row[Any]:
        c = tables.contacts
        row = (await conn.execute(sa.select(c).where(c.c.id == contact_id))).one_or_none()
        if row is None:
            raise NotFound(f"no contact {contact_id}")
        return row

    async def _contact(self, conn: AsyncConnection, actor: Actor, contact_id: int) -> Contact:
        row = await self._contact_row(conn, contact_id)
        defs = await self._fields(conn)
        stored = await self._stored_values(conn, contact_id, defs)
        by_name = {d.name: d for d in defs}
        ca = tables.contact_addresses
        addr_rows = await conn.execute(
            sa.select(ca).where(ca.c.contact_id == contact_id).order_by(ca.c.id)
        )
        admin = actor.role is Role.ADMINISTRATOR
        return Contact(
            id=row.id,
            type=ContactType(row.type),
            display_name=row.display_name,
            vip=row.vip,
            owner=row.owner,
            values={
                n: python_value(by_name[n], value)
                for n, value in stored.items()
                if admin or by_name[n].visible
            },
            addresses=tuple(
                ContactAddress(
                    address=Address(kind=a.kind, value=a.value, scope=a.scope or None),
                    field=a.label,
                    is_default=a.is_default,
                )
                for a in addr_rows
            ),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def _add_address(self, conn: AsyncConnection, contact_id: int, address: Address) -> None:
        ca = tables.contact_addresses
        stmt = dialect_insert(conn.dialect.name, ca).values(
            contact_id=contact_id,
            kind=address.kind.value,
            scope=address.scope or "",
            value=address.value,
            is_default=False,
        )
        await conn.execute(stmt.on_conflict_do_nothing())

    # --- unknown senders ------------------------------------------------------------------

    async def add_sender(
        self,
        actor: Actor,
        address: Address,
        type: ContactType,
        values: Mapping[str, Any] | None = None,
    ) -> LinkResult:
        """Make an unknown sender a new contact; the sender's conversations follow."""
        async with self.store.write() as conn:
            contact_id = await self._create(conn, actor, type, values or {}, [address], False, None)
            return await self._link(conn, actor, contact_id, address)

    async def attach_address(self, actor: Actor, contact_id: int, address: Address) -> LinkResult:
        """Attach a sender's address to an existing contact; the sender's existing
        conversations are linked now and future ones by the contact lookup."""
        async with self.store.write() as conn:
            await self._contact_row(conn, contact_id)
            await self._add_address(conn, contact_id, address)
            return await self._link(conn, actor, contact_id, address)

    async def _link(
        self, conn: AsyncConnection, actor: Actor, contact_id: int, address: Address
    ) -> LinkResult:
        conv, cc = tables.conversations, tables.conversation_contacts
        contact = await self._contact(conn, actor, contact_id)
        ids = [
            int(i)
            for i in (
                await conn.execute(
                    sa.select(conv.c.id)
                    .where(conv.c.customer_key == address.key)
                    .order_by(conv.c.id)
                )
            ).scalars()
        ]
        if ids:
            name = contact.display_name
            stmt = dialect_insert(conn.dialect.name, cc).on_conflict_do_nothing()
            await conn.execute(
                stmt,
                [{"conversation_id": i, "source": SOURCE, "external_id": str(contact_id),
                  "display_name": name} for i in ids],
            )  # fmt: skip
            if name:
                await conn.execute(
                    sa.update(conv).where(conv.c.id.in_(ids)).values(customer_name=name)
                )
            now = self.clock()
            await conn.execute(
                sa.insert(tables.events),
                [{"conversation_id": i, "at": now, "actor_id": actor.id, "kind": "contact_linked",
                  "data": {"source": SOURCE, "id": str(contact_id)}} for i in ids],
            )  # fmt: skip
        return LinkResult(contact=contact, conversation_ids=tuple(ids))

    # --- related contacts -----------------------------------------------------------------

    async def relate(self, actor: Actor, contact_id: int, other_id: int, label: str = "") -> None:
        """Relate two contacts (e.g. people of one company); relating again changes the label."""
        if contact_id == other_id:
            raise InvalidValue("a contact cannot be related to itself")
        if len(label) > 200:
            raise InvalidValue("a relation label has at most 200 characters")
        r = tc.contact_relations
        low, high = sorted((contact_id, other_id))
        async with self.store.write() as conn:
            await self._contact_row(conn, low)
            await self._contact_row(conn, high)
            stmt = dialect_insert(conn.dialect.name, r).values(
                low_id=low, high_id=high, label=label.strip(), created_at=self.clock(),
                created_by=actor.id,
            )  # fmt: skip
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[r.c.low_id, r.c.high_id], set_={"label": stmt.excluded.label}
                )
            )

    async def unrelate(self, actor: Actor, contact_id: int, other_id: int) -> None:
        r = tc.contact_relations
        low, high = sorted((contact_id, other_id))
        async with self.store.write() as conn:
            result = await conn.execute(sa.delete(r).where(r.c.low_id == low, r.c.high_id == high))
            if result.rowcount == 0:
                raise NotFound(f"contacts {contact_id} and {other_id} are not related")

    async def related(self, actor: Actor, contact_id: int) -> list[RelatedContact]:
        r, c = tc.contact_relations, tables.contacts
        other = sa.case((r.c.low_id == contact_id, r.c.high_id), else_=r.c.low_id)
        async with self.store.read() as conn:
            await self._contact_row(conn, contact_id)
            rows = await conn.execute(
                sa.select(c.c.id, c.c.type, c.c.display_name, r.c.label)
                .join(r, c.c.id == other)
                .where(sa.or_(r.c.low_id == contact_id, r.c.high_id == contact_id))
                .order_by(c.c.display_name, c.c.id)
            )
            return [
                RelatedContact(
                    id=x.id, type=ContactType(x.type), display_name=x.display_name, label=x.label
                )
                for x in rows
            ]

    # --- activity history -----------------------------------------------------------------

    async def add_note(self, actor: Actor, contact_id: int, text: str) -> Activity:
        return await self._add_activity(
            actor, contact_id, ActivityKind.NOTE, _text(text, "a note"), {}, None
        )

    async def record(
        self,
        actor: Actor | None,
        contact_id: int,
        kind: ActivityKind,
        text: str,
        data: Mapping[str, Any] | None = None,
    ) -> Activity:
        """Record a status change, email, SMS or call in the history (``actor`` ``None`` for
        the system, e.g. a delivery worker)."""
        if kind not in _RECORDED:
            raise InvalidValue(f"{kind.value} activities have their own operation")
        return await self._add_activity(
            actor, contact_id, kind, _text(text, "an activity summary"), dict(data or {}), None
        )

    async def add_attachment(
        self, actor: Actor, contact_id: int, attachment: Attachment
    ) -> Activity:
        if attachment.data is None or attachment.sha256 is None:
            raise InvalidValue("an attached file needs its contents")
        if len(attachment.data) > ATTACHMENT_MAX:
            raise InvalidValue(f"an attached file has at most {ATTACHMENT_MAX} bytes")
        data = {
            "filename": attachment.filename,
            "content_type": attachment.content_type,
            "size": attachment.size,
        }
        return await self._add_activity(
            actor, contact_id, ActivityKind.ATTACHMENT, attachment.filename, data, attachment
        )

    async def _add_activity(
        self,
        actor: Actor | None,
        contact_id: int,
        kind: ActivityKind,
        text: str,
        data: dict[str, Any],
        attachment: Attachment | None,
    ) -> Activity:
        a = tc.contact_activities
        async with self.store.write() as conn:
            await self._contact_row(conn, contact_id)
            if attachment is not None:
                blob = dialect_insert(conn.dialect.name, tables.blobs).values(
                    sha256=attachment.sha256, size=attachment.size, data=attachment.data
                )
                await conn.execute(blob.on_conflict_do_nothing(index_elements=["sha256"]))
            result = await conn.execute(
                sa.insert(a)
                .values(
                    contact_id=contact_id, kind=kind.value, at=self.clock(),
                    actor_id=actor.id if actor else None, text=text, note="", data=data,
                    sha256=attachment.sha256 if attachment else None,
                )
                .returning(a)
            )  # fmt: skip
            return _activity(result.one())

    async def _activity_row(self, conn: AsyncConnection, activity_id: int) -> sa.Row[Any]:
        a = tc.contact_activities
        row = (await conn.execute(sa.select(a).where(a.c.id == activity_id))).one_or_none()
        if row is None:
            raise NotFound(f"no activity {activity_id}")
        return row

    async def edit_note(self, actor: Actor, activity_id: int, text: str) -> Activity:
        """Notes can be edited, by their author or an administrator; other activities are
        facts and only take an added note (``annotate``)."""
        a = tc.contact_activities
        async with self.store.write() as conn:
            row = await self._activity_row(conn, activity_id)
            if row.kind != ActivityKind.NOTE.value:
                raise NotAllowed(f"a {row.kind} activity cannot be edited; add a note to it")
            if row.actor_id != actor.id and actor.role is not Role.ADMINISTRATOR:
                raise Forbidden("only the author or an administrator may edit a note")
            result = await conn.execute(
                sa.update(a)
                .where(a.c.id == activity_id)
                .values(text=_text(text, "a note"), edited_at=self.clock())
                .returning(a)
            )
            return _activity(result.one())

    async def annotate(self, actor: Actor, activity_id: int, note: str) -> Activity:
        """Add a short note to a status change, attachment, email, SMS or call."""
        a = tc.contact_activities
        async with self.store.write() as conn:
            row = await self._activity_row(conn, activity_id)
            if row.kind == ActivityKind.NOTE.value:
                raise NotAllowed("a note is edited, not annotated")
            result = await conn.execute(
                sa.update(a)
                .where(a.c.id == activity_id)
                .values(note=_text(note, "a note", 1000), edited_at=self.clock())
                .returning(a)
            )
            return _activity(result.one())

    async def delete_activity(self, actor: Actor, activity_id: int) -> None:
        """Irreversible: by the author, a supervisor or an administrator."""
        a = tc.contact_activities
        async with self.store.write() as conn:
            row = await self._activity_row(conn, activity_id)
            if row.actor_id != actor.id and not actor.privileged:
                raise Forbidden("only the author, a supervisor or an administrator may delete it")
            await conn.execute(sa.delete(a).where(a.c.id == activity_id))

    async def history(
        self,
        actor: Actor,
        contact_id: int,
        *,
        kinds: Iterable[ActivityKind] = (),
        newest_first: bool = True,
    ) -> list[Activity]:
        a = tc.contact_activities
        wanted = [k.value for k in kinds]
        query = sa.select(a).where(a.c.contact_id == contact_id)
        if wanted:
            query = query.where(a.c.kind.in_(wanted))
        order = (a.c.at.desc(), a.c.id.desc()) if newest_first else (a.c.at, a.c.id)
        async with self.store.read() as conn:
            await self._contact_row(conn, contact_id)
            return [_activity(r) for r in await conn.execute(query.order_by(*order))]

    async def attachment(self, actor: Actor, activity_id: int) -> AttachmentContent:
        """Download an attached file again."""
        async with self.store.read() as conn:
            row = await self._activity_row(conn, activity_id)
            if row.sha256 is None:
                raise NotFound(f"activity {activity_id} has no file")
            data = (
                await conn.execute(
                    sa.select(tables.blobs.c.data).where(tables.blobs.c.sha256 == row.sha256)
                )
            ).scalar_one()
        return AttachmentContent(
            filename=row.data["filename"], content_type=row.data["content_type"], data=data
        )


def name_missing(values: Mapping[str, Any], name: str) -> bool:
    return values.get(name) is None
