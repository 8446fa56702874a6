"""Built-in plugin: the contact store answers the ``lookup_contacts`` hook like any CRM."""

from __future__ import annotations

from tidings.contacts import find_by_address
from tidings.hookspecs import hookimpl
from tidings.models import Address, ContactMatch
from tidings.store import Store


@hookimpl
async def lookup_contacts(address: Address, store: Store) -> list[ContactMatch]:
    return await find_by_address(store, address)
