"""The conversation test world plus routing: an administrator, a CRM, SLA listeners and a
plugin that adds rule kinds. Runs on both stores with a manual clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from conversation_world import ACCOUNTS, START, Both, World
from pydantic import BaseModel

from tidings import Address, ContactMatch, ContactType, hookimpl
from tidings.clock import ManualClock
from tidings.conversations import Actor, Conversations, Role
from tidings.plugins import load_plugins
from tidings.routing import add_agent
from tidings.routing.rules import ActionKind, ConditionKind, Facts, Outcome
from tidings.routing.service import Routing
from tidings.store import Store

VIP = "+48600000777"
"""A VIP organisation in the CRM, owned by 'ewa'."""
KNOWN = "+48600000555"
"""A person in the CRM, owned by 'jan'."""


class Crm:
    """A CRM plugin answering ``lookup_contacts`` for two numbers."""

    @hookimpl
    async def lookup_contacts(self, addresses: list[Address]) -> dict[str, list[ContactMatch]]:
        known = {
            Address.phone(VIP).key: ContactMatch(
                source="crm", external_id="ORG-1", type=ContactType.ORGANISATION,
                display_name="Hurtownia", owner="ewa", vip=True,
            ),
            Address.phone(KNOWN).key: ContactMatch(
                source="crm", external_id="P-2", display_name="Jan", owner="jan",
            ),
        }  # fmt: skip
        return {a.key: [known[a.key]] for a in addresses if a.key in known}


@dataclass
class Listener:
    """Records ``sla_signal`` calls; one async listener and one that always fails."""

    calls: list[tuple[int, str, datetime]] = field(default_factory=list)

    @hookimpl
    async def sla_signal(self, conversation_id: int, signal: str, at: datetime) -> None:
        self.calls.append((conversation_id, signal, at))


class Broken:
    @hookimpl
    def sla_signal(self, signal: str) -> None:
        raise RuntimeError("listener bug")


class Words(BaseModel):
    words: int


class Label(BaseModel):
    label: str


def _long_text(params: Words, facts: Facts) -> bool:
    return len(facts.message.text.split()) >= params.words


def _escalate(params: Label, facts: Facts, outcome: Outcome) -> None:
    outcome.tags.append(f"escalated-{params.label}")
    outcome.priority = "high"


class RuleKindsPlugin:
    @hookimpl
    def register_rule_kinds(self) -> list[Any]:
        return [
            ConditionKind("long_text", Words, _long_text, "at least this many words"),
            ActionKind("escalate", Label, _escalate, "tag and raise the priority"),
        ]


@dataclass
class RWorld:
    w: World
    r: Routing
    admin: Actor
    listener: Listener


async def make_world(store: Store, *extra: tuple[str, object]) -> RWorld:
    clock = ManualClock(START)
    listener = Listener()
    plugins = load_plugins(
        {},
        extra=[("both", Both()), ("crm", Crm()), ("listener", listener), ("broken", Broken()),
               ("kinds", RuleKindsPlugin()), *extra],
        entry_points_enabled=False,
    )  # fmt: skip
    svc = Conversations(store, plugins, ACCOUNTS, clock=clock)
    both = [("support", "sms"), ("support", "email")]
    ids = {
        "alice": await add_agent(store, "alice", permissions=both, clock=clock),
        "bob": await add_agent(store, "bob", permissions=both, clock=clock),
        "carol": await add_agent(store, "carol", permissions=[("support", "sms")], clock=clock),
        "dave": await add_agent(store, "dave", permissions=[("sales", "sms")], clock=clock),
        "boss": await add_agent(
            store, "boss", role=Role.SUPERVISOR, can_view_all=True,
            permissions=[*both, ("sales", "sms")], clock=clock,
        ),
        "admin": await add_agent(
            store, "admin", role=Role.ADMINISTRATOR, can_view_all=True,
            permissions=[*both, ("sales", "sms")], clock=clock,
        ),
    }  # fmt: skip
    actors = {name: await svc.actor(agent_id) for name, agent_id in ids.items()}
    admin = actors.pop("admin")
    w = World(svc=svc, store=store, clock=clock, **actors)
    return RWorld(w=w, r=Routing(store, plugins, clock=clock), admin=admin, listener=listener)


@pytest.fixture
async def rw(store: Store) -> RWorld:
    return await make_world(store)


async def new_sms(rw: RWorld, number: str = "+48600100200", text: str = "hello") -> int:
    (cid,) = (await rw.w.sms(number, text)).conversations
    return cid


async def assignee(rw: RWorld, cid: int) -> int | None:
    return (await rw.w.svc.get(rw.w.boss, cid)).summary.assignee_id
