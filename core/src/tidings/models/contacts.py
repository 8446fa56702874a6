"""Contacts as a lookup source reports them (the built-in store or a CRM plugin).

Several sources may answer for one address; ``source`` + ``external_id`` identify an answer so
the core can merge them without duplicates.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tidings.models.addresses import Address


class ContactType(StrEnum):
    PERSON = "person"
    ORGANISATION = "organisation"


class ContactMatch(BaseModel):
    """One contact found for an address."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(min_length=1, max_length=100, description="who answered, e.g. 'builtin'")
    external_id: str = Field(min_length=1, max_length=300, description="the id in that source")
    type: ContactType = ContactType.PERSON
    display_name: str = Field(default="", max_length=300)
    addresses: tuple[Address, ...] = ()
    owner: str | None = Field(default=None, max_length=300)
    vip: bool = False
    fields: dict[str, Any] = Field(default_factory=dict)

    @property
    def identity(self) -> tuple[str, str]:
        return (self.source, self.external_id)


def merge_matches(answers: list[list[ContactMatch]]) -> list[ContactMatch]:
    """Flatten several sources' answers, first answer wins per (source, external_id)."""
    seen: set[tuple[str, str]] = set()
    merged: list[ContactMatch] = []
    for answer in answers:
        for match in answer:
            if match.identity not in seen:
                seen.add(match.identity)
                merged.append(match)
    return merged
