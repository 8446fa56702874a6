"""Addresses: who a message is from or to, normalised so that one person has one key.

A customer's number must compare equal whether a provider wrote ``+48 600 100 200`` or
``0048600100200``; an email address must compare equal whatever the case of its domain.
Everything downstream (threading, contact lookup, blacklist, pinning) relies on
``Address.key``, so normalisation happens once, here, at the boundary.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Self

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, model_validator


class AddressKind(StrEnum):
    """How an address is written and compared."""

    PHONE = "phone"
    """A telephone number, kept in E.164 (``+48600100200``)."""
    EMAIL = "email"
    """A mailbox; the local part is kept as given, the domain lower-cased."""
    SCOPED = "scoped"
    """An id that only means something inside a scope, e.g. a Messenger page-scoped id."""
    HANDLE = "handle"
    """An opaque identifier a channel gives its users (a chat id, a form session)."""


_EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")


def normalise_phone(value: str, default_region: str | None = None) -> str:
    """Return ``value`` in E.164, or raise ``ValueError`` naming what is wrong.

    WhatsApp and some providers send numbers without ``+`` (``48600100200``); those are
    read as international when no default region is given.
    """
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if "+" not in text and default_region is None:
        text = "+" + text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {value!r} ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"not a possible phone number: {value!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str) -> str:
    """Lower-case the domain (case-insensitive by RFC 5321) and keep the local part."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not _EMAIL_RE.match(text):
        raise ValueError(f"not an email address: {value!r}")
    local, _, domain = text.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"not an email domain: {domain!r}") from None
    return f"{local}@{domain}"


class Address(BaseModel):
    """One endpoint of a message: a kind, a normalised value, and for scoped ids the scope.

    ``name`` is the display name as the channel reported it; it is not part of identity.
    """

    model_config = ConfigDict(frozen=True)

    kind: AddressKind
    value: str = Field(min_length=1, max_length=320)
    scope: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=300)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kind = data.get("kind")
        value = data.get("value")
        if isinstance(value, str):
            if kind == AddressKind.PHONE:
                data = {**data, "value": normalise_phone(value)}
            elif kind == AddressKind.EMAIL:
                data = {**data, "value": normalise_email(value)}
            else:
                data = {**data, "value": value.strip()}
        return data

    @model_validator(mode="after")
    def _scope_rule(self) -> Self:
        if self.kind is AddressKind.SCOPED and not self.scope:
            raise ValueError("a scoped address needs its scope (e.g. the page id)")
        if self.kind is not AddressKind.SCOPED and self.scope is not None:
            raise ValueError(f"a {self.kind.value} address has no scope")
        return self

    @property
    def key(self) -> str:
        """The identity of this address as one string: equal keys mean the same endpoint."""
        if self.scope is not None:
            return f"{self.kind.value}:{self.scope}:{self.value}"
        return f"{self.kind.value}:{self.value}"

    @classmethod
    def phone(cls, value: str, *, name: str | None = None, region: str | None = None) -> Address:
        """A phone address; ``region`` (ISO 3166 code) reads national numbers."""
        return cls(kind=AddressKind.PHONE, value=normalise_phone(value, region), name=name)

    @classmethod
    def email(cls, value: str, *, name: str | None = None) -> Address:
        return cls(kind=AddressKind.EMAIL, value=value, name=name)

    @classmethod
    def scoped(cls, value: str, scope: str, *, name: str | None = None) -> Address:
        return cls(kind=AddressKind.SCOPED, value=value, scope=scope, name=name)

    @classmethod
    def handle(cls, value: str, *, name: str | None = None) -> Address:
        return cls(kind=AddressKind.HANDLE, value=value, name=name)

    @classmethod
    def from_key(cls, key: str, *, name: str | None = None, normalised: bool = False) -> Address:
        """The address whose ``key`` is ``key`` (keys are how the store keeps addresses).

        ``normalised``: the key is one the store wrote (``key`` of a validated address), so
        its value is taken as it is rather than normalised again — parsing a phone number
        costs about 50 µs, a tenth of a whole SMS send. Its kind must still be known and
        its value non-empty.
        """
        kind_word, _, rest = key.partition(":")
        scope: str | None = None
        value = rest
        if kind_word == AddressKind.SCOPED.value:
            scope, _, value = rest.partition(":")
        try:
            kind = AddressKind(kind_word)
        except ValueError:
            raise ValueError(f"not an address key: {key!r}") from None
        if normalised:
            if not value:
                raise ValueError(f"not an address key: {key!r}")
            return cls.model_construct(kind=kind, value=value, scope=scope, name=name)
        if scope is not None:
            return cls(kind=kind, value=value, scope=scope, name=name)
        try:
            return cls(kind=kind, value=value, name=name)
        except ValueError:
            raise ValueError(f"not an address key: {key!r}") from None

    def __str__(self) -> str:
        return self.key
