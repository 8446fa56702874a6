"""Built-in plugin: the contact store answers the ``lookup_contacts`` hook like any CRM."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.contacts import find_by_addresses
from tidings.hookspecs import hookimpl
from tidings.models import Address, ContactMatch
from tidings.store import Store


@hookimpl
async def lookup_contacts(
    addresses: Sequence[Address], store: Store
) -> dict[str, list[ContactMatch]]:
    return await find_by_addresses(store, addresses)
