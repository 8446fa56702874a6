"""The built-in contact store: contacts and their addresses, answering contact lookup.

``ContactsService`` (``tidings.contacts.service``) is the CRM on top: configurable fields,
related contacts, activity history and linking unknown senders.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tidings.models import Address, ContactMatch, ContactType
from tidings.store import Store, tables
from tidings.store import tables_contacts as tc

SOURCE = "builtin"


async def add_contact(
    store: Store,
    *,
    type: ContactType,
    display_name: str,
    addresses: Sequence[Address] = (),
    vip: bool = False,
    owner: str | None = None,
) -> int:
    """Create a contact with its addresses in one transaction; returns its id."""
    now = datetime.now(UTC)
    async with store.write() as conn:
        result = await conn.execute(
            sa.insert(tables.contacts)
            .values(
                type=type.value,
                display_name=display_name,
                vip=vip,
                owner=owner,
                created_at=now,
                updated_at=now,
            )
            .returning(tables.contacts.c.id)
        )
        contact_id = int(result.scalar_one())
        if addresses:
            await conn.execute(
                sa.insert(tables.contact_addresses),
                [
                    {
                        "contact_id": contact_id,
                        "kind": a.kind.value,
                        "scope": a.scope or "",
                        "value": a.value,
                        "is_default": index == 0,
                    }
                    for index, a in enumerate(dict.fromkeys(addresses))
                ],
            )
    return contact_id


async def find_by_address(store: Store, address: Address) -> list[ContactMatch]:
    return (await find_by_addresses(store, [address]))[address.key]


async def find_by_addresses(
    store: Store, addresses: Sequence[Address]
) -> dict[str, list[ContactMatch]]:
    """Contacts per address key, in one query for the whole batch."""
    c, ca = tables.contacts, tables.contact_addresses
    found: dict[str, list[ContactMatch]] = {a.key: [] for a in addresses}
    if not addresses:
        return found
    # Grouped by kind and scope (a batch of mail is one group): a query whose shape does not
    # change with the number of addresses is compiled once, and each group is one walk of
    # the (kind, scope, value) index.
    groups: dict[tuple[str, str], set[str]] = {}
    for a in addresses:
        groups.setdefault((a.kind.value, a.scope or ""), set()).add(a.value)
    wanted = sa.or_(
        *(
            sa.and_(ca.c.kind == kind, ca.c.scope == scope, ca.c.value.in_(sorted(values)))
            for (kind, scope), values in groups.items()
        )
    )
    async with store.read() as conn:
        hits = (await conn.execute(sa.select(ca.c.contact_id, ca.c.kind, ca.c.scope, ca.c.value)
                                   .where(wanted))).all()  # fmt: skip
        if not hits:
            return found
        ids = sorted({row.contact_id for row in hits})
        contacts = {
            row.id: row for row in (await conn.execute(sa.select(c).where(c.c.id.in_(ids)))).all()
        }
        addr_rows = (
            await conn.execute(
                sa.select(ca).where(ca.c.contact_id.in_(ids)).order_by(ca.c.contact_id, ca.c.id)
            )
        ).all()
        # Visible field values ride along, so routing rules and CRM views need no second trip.
        value_rows = (
            await conn.execute(
                sa.select(tc.contact_values.c.contact_id, tc.contact_fields.c.name,
                          tc.contact_values.c.value)
                .join(tc.contact_fields, tc.contact_fields.c.id == tc.contact_values.c.field_id)
                .where(tc.contact_values.c.contact_id.in_(ids),
                       tc.contact_fields.c.visible.is_(True))
            )
        ).all()  # fmt: skip
    fields: dict[int, dict[str, Any]] = {}
    for value_row in value_rows:
        fields.setdefault(value_row.contact_id, {})[value_row.name] = value_row.value
    by_contact: dict[int, list[Address]] = {}
    for row in addr_rows:
        by_contact.setdefault(row.contact_id, []).append(
            Address(kind=row.kind, value=row.value, scope=row.scope or None)
        )
    for hit in sorted(hits, key=lambda h: h.contact_id):
        key = Address(kind=hit.kind, value=hit.value, scope=hit.scope or None).key
        row = contacts[hit.contact_id]
        found.setdefault(key, []).append(
            ContactMatch(
                source=SOURCE,
                external_id=str(row.id),
                type=ContactType(row.type),
                display_name=row.display_name,
                addresses=tuple(by_contact.get(row.id, ())),
                owner=row.owner,
                vip=row.vip,
                fields=fields.get(row.id, {}),
            )
        )
    return found
