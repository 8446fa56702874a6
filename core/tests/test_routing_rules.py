"""Inbound rules: every condition, every action, all/any, order and stop, validation,
permissions, and kinds added by plugins."""

from __future__ import annotations

from typing import Any

import pytest
from conversation_world import ACCOUNTS, Both
from routing_world import KNOWN, VIP, RWorld, assignee, make_world, new_sms, rw  # noqa: F401

from tidings import Address, InboundMessage, ThreadHeaders, hookimpl
from tidings.errors import Forbidden, NotFound, PluginError
from tidings.plugins import load_plugins
from tidings.routing.rules import (
    Action,
    ConditionKind,
    InvalidRule,
    Match,
    NoParams,
    Rule,
    RuleKinds,
)
from tidings.routing.rules import Condition as Cond
from tidings.routing.service import Routing
from tidings.routing.sla import PriorityLevel
from tidings.store import Store

pytestmark = pytest.mark.anyio

TAG = (Action(kind="add_tags", params={"tags": ["hit"]}),)


def rule(*conditions: Cond, match: Match = Match.ALL, actions: tuple[Action, ...] = TAG) -> Rule:
    return Rule(name="r", match=match, conditions=conditions, actions=actions)


def cond(kind: str, **params: Any) -> Cond:
    return Cond(kind=kind, params=params)


async def tags(rw: RWorld, cid: int) -> tuple[str, ...]:
    return (await rw.w.svc.get(rw.w.boss, cid)).summary.tags


async def mail(
    rw: RWorld,
    sender: str = "jan@k.pl",
    subject: str = "Zamówienie 15",
    text: str = "Proszę o fakturę",
    to: tuple[str, ...] = ("help@shop.example",),
    cc: tuple[str, ...] = (),
) -> int:
    msg = InboundMessage(
        provider_id=f"<{rw.w.next_id()}@k.pl>", sender=Address.email(sender),
        recipients=tuple(Address.email(x) for x in to), cc=tuple(Address.email(x) for x in cc),
        subject=subject, text=text, sent_at=rw.w.clock(),
        thread=ThreadHeaders(message_id=f"<{rw.w.next_id()}@k.pl>"),
    )  # fmt: skip
    (cid,) = (await rw.w.svc.ingest("mail", [msg])).conversations
    return cid


CASES = [
    # (condition, a matching mail's fields, a mail's fields that do not match)
    (cond("subject_contains", value="ZAMÓWIENIE"), {}, {"subject": "Faktura"}),
    (cond("body_contains", value="fakturę"), {}, {"text": "Dzień dobry"}),
    (cond("sender_is", value="Jan@K.PL"), {}, {"sender": "janek@k.pl"}),
    (cond("sender_contains", value="@k.pl"), {}, {"sender": "jan@x.pl"}),
    (cond("recipient_is", value="help@shop.example"), {},
     {"to": ("sales@shop.example", "help@shop.example")}),
    (cond("one_of_recipients_is", value="boss@shop.example"),
     {"cc": ("boss@shop.example",)}, {}),
]  # fmt: skip


@pytest.mark.parametrize(("condition", "hit", "miss"), CASES, ids=[c[0].kind for c in CASES])
async def test_message_conditions(
    rw: RWorld, condition: Cond, hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    await rw.r.set_rules(rw.admin, "support", [rule(condition)])
    assert await tags(rw, await mail(rw, **hit)) == ("hit",)
    rw.w.later(minutes=1)
    assert await tags(rw, await mail(rw, **{"subject": "Inny temat", **miss})) == ()


async def test_phone_addresses_compare_normalised(rw: RWorld) -> None:
    await rw.r.set_rules(rw.admin, "support", [
        rule(cond("sender_is", value="0048 600 100 200"),
             cond("recipient_is", value="+48 22 100 00 00")),
    ])  # fmt: skip
    assert await tags(rw, await new_sms(rw, "+48600100200")) == ("hit",)
    assert await tags(rw, await new_sms(rw, "+48600100201")) == ()


async def test_fetched_from_account(rw: RWorld) -> None:
    await rw.r.set_rules(rw.admin, "support", [rule(cond("from_account", account="sms-de"))])
    (de,) = (await rw.w.sms("+48600100200", account="sms-de")).conversations
    assert await tags(rw, de) == ("hit",)
    assert await tags(rw, await new_sms(rw, "+48600100200")) == ()  # came through sms-pl


@pytest.mark.parametrize(
    ("condition", "matching"),
    [
        (cond("contact_found"), {VIP, KNOWN}),
        (cond("contact_type", type="organisation"), {VIP}),
        (cond("contact_type", type="person"), {KNOWN}),
        (cond("contact_owner", owner="JAN"), {KNOWN}),
        (cond("contact_vip"), {VIP}),
    ],
    ids=["found", "type-org", "type-person", "owner", "vip"],
)
async def test_crm_conditions(rw: RWorld, condition: Cond, matching: set[str]) -> None:
    await rw.r.set_rules(rw.admin, "support", [rule(condition)])
    for number in (VIP, KNOWN, "+48600100200"):
        cid = await new_sms(rw, number)
        assert (await tags(rw, cid) == ("hit",)) is (number in matching), number


async def test_all_and_any(rw: RWorld) -> None:
    both = (cond("body_contains", value="pilne"), cond("contact_vip"))
    await rw.r.set_rules(rw.admin, "support", [
        rule(*both, actions=(Action(kind="add_tags", params={"tags": ["all"]}),)),
        rule(*both, match=Match.ANY, actions=(Action(kind="add_tags", params={"tags": ["any"]}),)),
    ])  # fmt: skip
    assert await tags(rw, await new_sms(rw, VIP, "pilne!")) == ("all", "any")
    assert await tags(rw, await new_sms(rw, KNOWN, "pilne!")) == ("any",)
    assert await tags(rw, await new_sms(rw, "+48600100200", "nic")) == ()


async def test_actions_in_order_and_stop(rw: RWorld) -> None:
    w = rw.w
    await rw.r.create_group(rw.admin, "support", "Faktury", members=[w.bob.id])
    await rw.r.set_priority(rw.admin, "support", PriorityLevel(name="high"))
    await rw.r.set_priority(rw.admin, "support", PriorityLevel(name="low"))
    await rw.r.set_rules(rw.admin, "support", [
        Rule(name="invoices", conditions=(cond("body_contains", value="faktur"),), actions=(
            Action(kind="set_group", params={"group": "Faktury"}),
            Action(kind="add_tags", params={"tags": ["Faktura", "księgowość"]}),
            Action(kind="set_priority", params={"priority": "high"}),
            Action(kind="set_category", params={"category": "billing"}),
            Action(kind="set_status", params={"status": "to verify"}),
            Action(kind="stop"),
        )),
        Rule(name="never reached after stop", actions=(
            Action(kind="set_priority", params={"priority": "low"}),
        )),
    ])  # fmt: skip
    cid = await new_sms(rw, text="Proszę o fakturę")
    info = await rw.r.info(w.boss, cid)
    assert (info.priority, info.category, info.status) == ("high", "billing", "to verify")
    assert await tags(rw, cid) == ("faktura", "księgowość")
    assert await assignee(rw, cid) is None
    assert cid in {s.id for s in await w.svc.view(w.bob)}
    assert cid not in {s.id for s in await w.svc.view(w.alice)}  # queued in bob's group
    other = await new_sms(rw, "+48600100201", text="Dzień dobry")
    assert (await rw.r.info(w.boss, other)).priority == "low"
    events = [(e.kind, e.data.get("rules")) for e in await w.svc.events(w.boss, cid)]
    assert ("rules_applied", ["invoices"]) in events


async def test_assign_action_and_later_rules_win(rw: RWorld) -> None:
    w = rw.w
    await rw.r.set_rules(rw.admin, "support", [
        Rule(name="a", actions=(Action(kind="assign", params={"agent": "alice"}),)),
        Rule(name="b", conditions=(cond("body_contains", value="bob"),),
             actions=(Action(kind="assign", params={"agent": "bob"}),)),
    ])  # fmt: skip
    assert await assignee(rw, await new_sms(rw, "+48600100201")) == w.alice.id
    assert await assignee(rw, await new_sms(rw, "+48600100202", "dla bob")) == w.bob.id
    # A rule never takes a conversation away from its assignee.
    cid = await new_sms(rw, "+48600100203")
    await w.svc.reassign(w.boss, cid, w.carol.id)
    await w.sms("+48600100203", "dla bob")
    assert await assignee(rw, cid) == w.carol.id
    # An email conversation: carol was assigned by the rule? No: carol has no email right.
    await rw.r.set_rules(rw.admin, "support", [
        Rule(name="c", actions=(Action(kind="assign", params={"agent": "carol"}),)),
    ])  # fmt: skip
    assert await assignee(rw, await mail(rw)) is None  # refused, stays in the pool
    assert await assignee(rw, await new_sms(rw, "+48600100204")) == w.carol.id


async def test_rules_are_validated_when_saved(rw: RWorld) -> None:
    r, admin = rw.r, rw.admin

    async def refused(bad: Any, match: str) -> None:
        with pytest.raises(InvalidRule, match=match):
            await r.set_rules(admin, "support", [bad])

    await refused(rule(cond("subject_is", value="x")), "unknown condition 'subject_is'")
    await refused(rule(actions=(Action(kind="explode"),)), "unknown action 'explode'")
    await refused(rule(cond("subject_contains")), r"condition 0 \(subject_contains\): value")
    await refused(rule(cond("contact_type", type="robot")), "contact_type")
    await refused(rule(cond("contact_vip", extra=1)), "extra")
    await refused(rule(actions=(Action(kind="add_tags", params={"tags": [" "]}),)), "tag")
    await refused(rule(actions=(Action(kind="set_group", params={"group": "Nope"}),)),
                  "no group 'Nope'")  # fmt: skip
    await refused(rule(actions=(Action(kind="set_priority", params={"priority": "p0"}),)),
                  "no priority 'p0'")  # fmt: skip
    await refused(rule(actions=(Action(kind="assign", params={"agent": "dave"}),)),
                  "no agent 'dave'")  # fmt: skip
    with pytest.raises(InvalidRule, match="actions"):
        await r.set_rules(admin, "support", [{"name": "empty", "actions": []}])  # type: ignore[list-item]
    with pytest.raises(InvalidRule, match="actions"):
        RuleKinds().compile({"name": "empty", "actions": []})
    assert await r.rules(admin, "support") == []


async def test_rules_are_stored_data_and_need_an_administrator(rw: RWorld) -> None:
    w, r = rw.w, rw.r
    rules = [
        rule(cond("subject_contains", value="x"), match=Match.ANY),
        Rule(name="off", enabled=False, actions=TAG),
    ]
    await r.set_rules(rw.admin, "support", rules)
    assert await r.rules(rw.admin, "support") == rules
    assert await r.rules(w.boss, "support") == rules
    with pytest.raises(Forbidden):
        await r.rules(w.alice, "support")
    with pytest.raises(Forbidden):
        await r.set_rules(w.boss, "support", rules)
    with pytest.raises(NotFound):
        await r.set_rules(w.dave, "support", rules)
    # A disabled rule does nothing.
    assert await tags(rw, await new_sms(rw)) == ()


async def test_rules_apply_per_project(rw: RWorld) -> None:
    await rw.r.set_rules(rw.admin, "sales", [rule()])
    (sale,) = (await rw.w.sms("+48600100200", account="sales-sms")).conversations
    assert await tags(rw, sale) == ("hit",)
    assert await tags(rw, await new_sms(rw)) == ()


async def test_hook_register_rule_kinds(rw: RWorld) -> None:
    w = rw.w
    await rw.r.set_priority(rw.admin, "support", PriorityLevel(name="high"))
    await rw.r.set_rules(rw.admin, "support", [
        Rule(name="long", conditions=(cond("long_text", words=4),),
             actions=(Action(kind="escalate", params={"label": "L2"}),)),
    ])  # fmt: skip
    with pytest.raises(InvalidRule, match="words"):
        await rw.r.set_rules(rw.admin, "support", [rule(cond("long_text", words="many"))])
    cid = await new_sms(rw, text="to jest bardzo długa wiadomość")
    assert await tags(rw, cid) == ("escalated-l2",)
    assert (await rw.r.info(w.boss, cid)).priority == "high"
    assert await tags(rw, await new_sms(rw, "+48600100201", "krótko")) == ()


class Duplicate:
    @hookimpl
    def register_rule_kinds(self) -> list[Any]:
        return [ConditionKind("subject_contains", NoParams, lambda p, f: True)]


class NotAKind:
    @hookimpl
    def register_rule_kinds(self) -> list[Any]:
        return ["subject_contains"]


class Failing:
    @hookimpl
    def register_rule_kinds(self) -> list[Any]:
        return [
            ConditionKind("boom", NoParams, lambda p, f: 1 / 0 > 0),
        ]


async def test_plugin_rule_kinds_are_checked(store: Store) -> None:
    with pytest.raises(PluginError, match="'subject_contains' is already registered"):
        await make_world(store, ("dup", Duplicate()))


async def test_plugin_rule_kind_that_is_not_a_kind(store: Store) -> None:
    with pytest.raises(PluginError, match="not a ConditionKind or ActionKind"):
        await make_world(store, ("bad", NotAKind()))


async def test_a_failing_plugin_condition_does_not_stop_ingestion(store: Store) -> None:
    rw = await make_world(store, ("failing", Failing()))
    rules = [rule(cond("boom"), match=Match.ANY), rule(cond("body_contains", value="ok"))]
    await rw.r.set_rules(rw.admin, "support", rules)
    cid = await new_sms(rw, text="ok")
    assert await tags(rw, cid) == ("hit",)


async def test_a_rule_whose_kind_disappeared_is_skipped(store: Store) -> None:
    rw = await make_world(store)
    await rw.r.set_rules(rw.admin, "support", [
        rule(cond("long_text", words=1)), rule(cond("body_contains", value="a"))
    ])  # fmt: skip
    # A deployment restarted without the plugin: its rule is skipped, the others run.
    Routing(store, load_plugins({}, extra=[("both", Both())], entry_points_enabled=False))
    own = Address.phone(ACCOUNTS["sms-pl"].settings.number)
    msg = InboundMessage(
        provider_id="x1", sender=Address.phone("+48600100200"), text="a b", recipients=(own,)
    )
    (cid,) = (await rw.w.svc.ingest("sms-pl", [msg])).conversations
    assert await tags(rw, cid) == ("hit",)
