"""Template rendering in the sandbox: variables, missing values, and what is refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tidings.templates import MissingVariable, TemplateInvalid, render
from tidings.templates.render import OUTPUT_MAX, check

CONTACT = {
    "name": "Jan Kowalski",
    "fields": {"post_code": "00-950", "balance": Decimal("12.50"), "nickname": None},
    "phone": None,
}
AGENT = {"name": "Alicja", "username": "alice"}


def run(body: str, **groups: object) -> str:
    return render(body, {"contact": CONTACT, "agent": AGENT, **groups})  # type: ignore[dict-item]


def test_variables_from_contact_conversation_and_agent() -> None:
    text = run(
        "Dzień dobry {{ contact.name }}, saldo {{ contact.fields.balance }} PLN "
        "({{ contact.fields['post_code'] }}). Sprawa #{{ conversation.id }}. {{ agent.name }}\n",
        conversation={"id": 42},
    )
    assert text == "Dzień dobry Jan Kowalski, saldo 12.50 PLN (00-950). Sprawa #42. Alicja\n"
    assert run("{{ contact.name | upper }}{% if contact.fields.balance > 10 %}!{% endif %}") == (
        "JAN KOWALSKI!"
    )
    assert run("{% for k in contact.fields | sort %}{{ k }};{% endfor %}") == "balance;post_code;"


@pytest.mark.parametrize(
    ("body", "variable"),
    [
        ("Hi {{ contact.fields.city }}", "contact.fields.city"),
        ("Hi {{ contact.fields.nickname }}", "contact.fields.nickname"),  # no value = missing
        ("Call {{ contact.phone }}", "contact.phone"),
        ("Re: {{ conversation.subject }}", "conversation"),  # no conversation given
        ("{% if contact.vip %}VIP{% endif %}", "contact.vip"),
        ("{{ contact.fields.city.name }}", "contact.fields.city"),
    ],
)
def test_a_missing_variable_is_an_error_naming_it(body: str, variable: str) -> None:
    with pytest.raises(MissingVariable) as info:
        run(body)
    assert info.value.variable == variable
    assert variable in str(info.value)


def test_authors_may_opt_into_a_fallback() -> None:
    assert run("Hi {{ contact.fields.nickname | default(contact.name) }}") == "Hi Jan Kowalski"
    assert run("{{ contact.fields.city is defined }}") == "False"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{{ contact.__class__ }}", "unsafe"),
        ("{{ contact.fields.__class__.__mro__ }}", "unsafe"),
        ("{{ contact.name.__class__.__subclasses__() }}", "unsafe"),
        ("{% set _ = contact.fields.update({'x': 1}) %}", "unsafe"),
        ("{{ contact.name.format.__globals__ }}", "unsafe"),
        ("{{ 'x' * 100000 }}", "longer than"),
        ("{{ 2 ** 1000000 }}", "exponents"),
        ("{% for i in range(100000) %}{% endfor %}", "at most 1000 items"),
        ("{% for i in range(999) %}{{ 'x' * 999 }}{% endfor %}", "longer than"),
        ("{% for a in range(9) %}{% for b in range(9) %}{% endfor %}{% endfor %}", "inside loops"),
        ("{% for a in range(9) recursive %}{% endfor %}", "recursive"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "macro"),
        ("{% include 'other' %}", "include"),
        ("{% extends 'base' %}", "extends"),
        ("{% import 'x' as y %}", "import"),
        ("{{ customer.name }}", "unknown variable customer"),
        ("{{ contact.name", "line 1"),
        ("{{ 1 / 0 }}", "division by zero"),
        ("x" * 20_001, "at most 20000 characters"),
    ],
)
def test_the_sandbox_refuses(body: str, message: str) -> None:
    with pytest.raises(TemplateInvalid, match=message):
        run(body)


def test_output_limit_is_exact() -> None:
    exact = "{{ 'x' * " + str(OUTPUT_MAX) + " }}"
    assert len(run(exact)) == OUTPUT_MAX
    with pytest.raises(TemplateInvalid):
        run(exact + "y")


def test_check_is_what_saving_uses() -> None:
    check("Hi {{ contact.name }}")
    with pytest.raises(TemplateInvalid):
        check("{% if %}")
