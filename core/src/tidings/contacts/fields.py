"""Configurable contact fields: what an administrator defines and how values are checked.

A value is checked once, here, when it is written, and stored in a canonical JSON form
(numbers as decimal strings, date-times as UTC ISO strings, phones in E.164), so the
lookup, templates and reports never see two spellings of one value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidings.errors import TidingsError
from tidings.models import ContactType
from tidings.models.addresses import normalise_email, normalise_phone

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
TEXT_MAX = 2000
MASK_DIGIT, MASK_LETTER, MASK_CURRENCY = "#", "a", "$"


class InvalidValue(TidingsError):
    """A contact value or field definition breaks a rule; ``field`` names the field so the
    form can show the message next to it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"field {field!r}: {message}" if field else message)


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    DATETIME = "datetime"
    DICTIONARY = "dictionary"
    MASKED = "masked"
    PHONE = "phone"
    EMAIL = "email"


class FieldSettings(BaseModel):
    """The parts of a field definition an administrator may change later."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(default="", max_length=200)
    visible: bool = True
    editable: bool = True
    required: bool = False
    default_phone: bool = False
    name_part: int | None = Field(default=None, ge=1, le=20)
    position: int = Field(default=0, ge=0)
    mask: str | None = Field(default=None, min_length=1, max_length=100)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    region: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    options: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _flags_depend_on_each_other(self) -> Self:
        # The manuals unlock "editable" only for visible fields and "required" only for
        # visible and editable ones: a required value nobody can see or enter is a trap.
        if self.editable and not self.visible:
            raise ValueError("only a visible field can be editable")
        if self.required and not self.editable:
            raise ValueError("only a visible, editable field can be required")
        return self


class FieldSpec(FieldSettings):
    """A new field: the name and type are fixed once saved."""

    name: str = Field(pattern=NAME_RE.pattern)
    type: FieldType
    contact_type: ContactType | None = None
    """The contact type this field belongs to; ``None`` for both."""

    @model_validator(mode="after")
    def _type_rules(self) -> Self:
        check_type_settings(self.type, self)
        return self


def check_type_settings(type_: FieldType, settings: FieldSettings) -> None:
    """Settings that only make sense for one type, checked on creation and on every change."""
    if type_ is FieldType.MASKED:
        if not settings.mask:
            raise ValueError("a masked field needs a mask (# digit, a letter, $ currency)")
        if MASK_CURRENCY in settings.mask and not settings.currency:
            raise ValueError("a mask with $ needs the currency code it stands for")
    elif settings.mask is not None:
        raise ValueError("only a masked field has a mask")
    if type_ is FieldType.DICTIONARY:
        if not settings.options:
            raise ValueError("a dictionary field needs its options")
        if len(set(settings.options)) != len(settings.options):
            raise ValueError("dictionary options must be distinct")
    elif settings.options:
        raise ValueError("only a dictionary field has options")
    if settings.default_phone and type_ is not FieldType.PHONE:
        raise ValueError("only a phone field can be the default phone")
    if settings.region is not None and type_ is not FieldType.PHONE:
        raise ValueError("only a phone field has a region")


class FieldDefinition(FieldSpec):
    """A stored field definition."""

    id: int

    def applies_to(self, contact_type: ContactType) -> bool:
        return self.contact_type is None or self.contact_type is contact_type


def apply_mask(mask: str, raw: str, currency: str | None = None) -> str:
    """Fit ``raw`` to ``mask``: ``#`` takes a digit, ``a`` a letter, ``$`` is the currency
    code, anything else is a literal.

    Literals and the currency are inserted when the input leaves them out, as the masked
    input of the manuals does (``00950`` on ``##-###`` is ``00-950``).
    """
    out: list[str] = []
    i = 0
    for ch in mask:
        if ch == MASK_DIGIT:
            if i >= len(raw) or not (raw[i].isascii() and raw[i].isdigit()):
                raise ValueError(f"{raw!r} does not match the mask {mask!r}: expected a digit")
            out.append(raw[i])
            i += 1
        elif ch == MASK_LETTER:
            if i >= len(raw) or not raw[i].isalpha():
                raise ValueError(f"{raw!r} does not match the mask {mask!r}: expected a letter")
            out.append(raw[i])
            i += 1
        elif ch == MASK_CURRENCY:
            code = currency or ""
            if raw[i : i + len(code)].upper() == code:
                i += len(code)
            out.append(code)
        else:
            if i < len(raw) and raw[i] == ch:
                i += 1
            out.append(ch)
    if i != len(raw):
        raise ValueError(f"{raw!r} is longer than the mask {mask!r}")
    return "".join(out)


def _number(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("a number is expected, not a yes/no value")
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value):
        number = Decimal(value.strip())
    else:
        raise ValueError(f"{value!r} is not a number")
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    try:
        return format(number, "f")
    except InvalidOperation:  # pragma: no cover - finite decimals always format
        raise ValueError(f"{value!r} is not a number") from None


def _datetime(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a date-time")
    if value.tzinfo is None:
        raise ValueError("a date-time needs its time zone (an offset or Z)")
    return value.astimezone(UTC).isoformat()


def canonical(field: FieldDefinition | FieldSpec, value: Any) -> Any | None:
    """The stored form of ``value`` for ``field``; ``None`` for an empty value (which clears
    it). Raises ``InvalidValue`` naming the field."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        match field.type:
            case FieldType.TEXT:
                if not isinstance(value, str):
                    raise ValueError("text is expected")
                text = value.strip()
                if len(text) > TEXT_MAX:
                    raise ValueError(f"at most {TEXT_MAX} characters")
                return text
            case FieldType.NUMBER:
                return _number(value)
            case FieldType.DATETIME:
                return _datetime(value)
            case FieldType.DICTIONARY:
                if value not in field.options:
                    raise ValueError(f"{value!r} is not one of {', '.join(field.options)}")
                return value
            case FieldType.MASKED:
                if not isinstance(value, str):
                    raise ValueError("text is expected")
                assert field.mask is not None
                return apply_mask(field.mask, value.strip(), field.currency)
            case FieldType.PHONE:
                if not isinstance(value, str):
                    raise ValueError("a phone number is expected")
                return normalise_phone(value, field.region)
            case FieldType.EMAIL:
                if not isinstance(value, str):
                    raise ValueError("an email address is expected")
                return normalise_email(value)
    except ValueError as exc:
        raise InvalidValue(str(exc), field=field.name) from None
    raise InvalidValue(f"unknown field type {field.type!r}", field=field.name)  # pragma: no cover


def python_value(field: FieldDefinition, stored: Any) -> Any:
    """A stored value as callers use it: ``Decimal`` numbers and aware ``datetime``s."""
    if field.type is FieldType.NUMBER:
        return Decimal(str(stored))
    if field.type is FieldType.DATETIME:
        return datetime.fromisoformat(str(stored))
    return stored
