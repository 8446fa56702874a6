"""Contact field rules that need no store: names, flags, types, masks and canonical values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from tidings.contacts.fields import (
    FieldDefinition,
    FieldSpec,
    FieldType,
    InvalidValue,
    apply_mask,
    canonical,
    python_value,
)
from tidings.errors import TidingsError


def field(type_: FieldType, **kw: object) -> FieldDefinition:
    return FieldDefinition.model_validate({"id": 1, "name": "f", "type": type_, **kw})


@pytest.mark.parametrize("name", ["first_name", "post-code", "A1", "x" * 63])
def test_field_names_allow_letters_digits_underscore_dash(name: str) -> None:
    assert FieldSpec(name=name, type=FieldType.TEXT).name == name


@pytest.mark.parametrize("name", ["", "imię", "first name", "a.b", "x" * 64, "kod/pocztowy"])
def test_field_names_refuse_other_characters(name: str) -> None:
    with pytest.raises(ValidationError):
        FieldSpec(name=name, type=FieldType.TEXT)


def test_flags_unlock_in_order_visible_editable_required() -> None:
    FieldSpec(name="a", type=FieldType.TEXT, visible=False, editable=False)
    FieldSpec(name="a", type=FieldType.TEXT, visible=True, editable=False)
    FieldSpec(name="a", type=FieldType.TEXT, required=True)
    with pytest.raises(ValidationError, match="only a visible field can be editable"):
        FieldSpec(name="a", type=FieldType.TEXT, visible=False, editable=True)
    with pytest.raises(ValidationError, match="visible, editable field can be required"):
        FieldSpec(name="a", type=FieldType.TEXT, editable=False, required=True)


def test_type_specific_settings() -> None:
    with pytest.raises(ValidationError, match="needs a mask"):
        FieldSpec(name="a", type=FieldType.MASKED)
    with pytest.raises(ValidationError, match="needs the currency"):
        FieldSpec(name="a", type=FieldType.MASKED, mask="$ ###")
    with pytest.raises(ValidationError, match="only a masked field has a mask"):
        FieldSpec(name="a", type=FieldType.TEXT, mask="##")
    with pytest.raises(ValidationError, match="needs its options"):
        FieldSpec(name="a", type=FieldType.DICTIONARY)
    with pytest.raises(ValidationError, match="distinct"):
        FieldSpec(name="a", type=FieldType.DICTIONARY, options=("x", "x"))
    with pytest.raises(ValidationError, match="only a dictionary field has options"):
        FieldSpec(name="a", type=FieldType.TEXT, options=("x",))
    with pytest.raises(ValidationError, match="only a phone field can be the default"):
        FieldSpec(name="a", type=FieldType.EMAIL, default_phone=True)
    with pytest.raises(ValidationError, match="only a phone field has a region"):
        FieldSpec(name="a", type=FieldType.TEXT, region="PL")
    with pytest.raises(ValidationError):
        FieldSpec(name="a", type=FieldType.MASKED, mask="$#", currency="zł")


@pytest.mark.parametrize(
    ("mask", "raw", "expected"),
    [
        ("##-###", "00-950", "00-950"),  # Polish post code, as typed
        ("##-###", "00950", "00-950"),  # the literal is filled in
        ("aaa ######", "ABC 123456", "ABC 123456"),  # identity card
        ("aaa ######", "ABC123456", "ABC 123456"),
        ("aaa ######", "żółą12345", None),  # 'ą' is a letter, but a digit is missing
        ("$ ###", "100", "PLN 100"),  # $ inserts the currency code
        ("$ ###", "PLN 100", "PLN 100"),
        ("$ ###", "pln 100", "PLN 100"),
    ],
)
def test_masks(mask: str, raw: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="does not match the mask"):
            apply_mask(mask, raw, "PLN")
    else:
        assert apply_mask(mask, raw, "PLN") == expected


@pytest.mark.parametrize(
    ("mask", "raw", "message"),
    [
        ("##-###", "0A-950", "expected a digit"),
        ("##-###", "00-95", "expected a digit"),
        ("##-###", "00-9500", "longer than the mask"),
        ("aaa ######", "AB1 123456", "expected a letter"),
        ("##-###", "00x950", "expected a digit"),
        ("##", "٣٤", "expected a digit"),  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_mask_refusals(mask: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_mask(mask, raw)


def test_masked_field_value_is_an_invalid_value_naming_the_field() -> None:
    post_code = FieldDefinition(id=1, name="post_code", type=FieldType.MASKED, mask="##-###")
    assert canonical(post_code, " 00950 ") == "00-950"
    with pytest.raises(InvalidValue, match="field 'post_code'") as info:
        canonical(post_code, "0095")
    assert info.value.field == "post_code"
    assert isinstance(info.value, TidingsError)


def test_numbers_are_digits_only_and_stored_exactly() -> None:
    f = field(FieldType.NUMBER)
    assert canonical(f, 42) == "42"
    assert canonical(f, "0042") == "42"
    assert canonical(f, "12.50") == "12.50"
    assert canonical(f, Decimal("0.1")) == "0.1"
    assert canonical(f, 0.1) == "0.1"
    assert python_value(f, "12.50") == Decimal("12.50")
    for bad in ["12a", "1e5", "", "  ", True, "NaN", float("inf"), [], "1,5"]:
        if bad in ("", "  "):
            assert canonical(f, bad) is None  # empty clears
            continue
        with pytest.raises(InvalidValue):
            canonical(f, bad)


def test_datetimes_need_a_time_zone_and_are_stored_in_utc() -> None:
    f = field(FieldType.DATETIME)
    warsaw = timezone(timedelta(hours=1))
    assert canonical(f, datetime(2026, 11, 2, 10, 0, tzinfo=warsaw)) == "2026-11-02T09:00:00+00:00"
    assert canonical(f, "2026-11-02T10:00:00+01:00") == "2026-11-02T09:00:00+00:00"
    assert python_value(f, "2026-11-02T09:00:00+00:00") == datetime(2026, 11, 2, 9, tzinfo=UTC)
    with pytest.raises(InvalidValue, match="time zone"):
        canonical(f, datetime(2026, 11, 2, 10, 0))
    with pytest.raises(InvalidValue, match="ISO 8601"):
        canonical(f, "2 listopada")
    with pytest.raises(InvalidValue, match="not a date-time"):
        canonical(f, 1700000000)


def test_dictionary_values_come_from_the_options() -> None:
    f = field(FieldType.DICTIONARY, options=("gold", "silver"))
    assert canonical(f, "gold") == "gold"
    with pytest.raises(InvalidValue, match="not one of gold, silver"):
        canonical(f, "bronze")


def test_phones_and_emails_are_normalised() -> None:
    phone = field(FieldType.PHONE)
    assert canonical(phone, "+48 600 100 200") == "+48600100200"
    assert canonical(phone, "0048600100200") == "+48600100200"
    national = field(FieldType.PHONE, region="PL")
    assert canonical(national, "600 100 200") == "+48600100200"
    with pytest.raises(InvalidValue, match="phone"):
        canonical(phone, "call me maybe")
    email = field(FieldType.EMAIL)
    assert canonical(email, "Jan@Example.COM") == "Jan@example.com"
    with pytest.raises(InvalidValue, match="not an email address"):
        canonical(email, "jan@")
    with pytest.raises(InvalidValue, match="email"):
        canonical(email, 7)


def test_text_is_stripped_and_bounded() -> None:
    f = field(FieldType.TEXT)
    assert canonical(f, "  Jan  ") == "Jan"
    assert canonical(f, None) is None
    with pytest.raises(InvalidValue, match="at most"):
        canonical(f, "x" * 2001)
    with pytest.raises(InvalidValue, match="text is expected"):
        canonical(f, 5)
