"""Blacklist: a blocked customer's messages are kept but reach no agent's view; only
privileged agents see the blacklist and unblock from it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from routing_world import RWorld, new_sms, rw  # noqa: F401

from tidings.conversations import Filters, View
from tidings.errors import Forbidden, NotFound
from tidings.routing.route import Distribution
from tidings.routing.rules import Action, Rule
from tidings.routing.sla import PriorityLevel

pytestmark = pytest.mark.anyio

SPAMMER = "+48600666000"


async def seen(rw: RWorld, who: str, view: View = View.ACTIVE) -> set[int]:
    actor = rw.admin if who == "admin" else getattr(rw.w, who)
    return {s.id for s in await rw.w.svc.view(actor, view)}


async def test_blocked_messages_are_kept_but_reach_no_view(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw, SPAMMER, "kup teraz")
    other = await new_sms(rw, "+48600100200")
    await w.svc.take(w.alice, cid)
    await rw.r.block(w.alice, cid, "spam")
    await w.sms(SPAMMER, "kup teraz!!!")
    for who in ("alice", "bob", "boss", "admin"):
        assert await seen(rw, who, View.ALL if who in ("boss", "admin") else View.ACTIVE) == {
            other
        }, who
    assert [m.conversation_id for m in await w.svc.messages(w.boss, View.ALL)] == [other]
    with pytest.raises(NotFound):
        await w.svc.get(w.alice, cid)
    (row,) = await rw.r.blacklist(w.boss)
    assert (row.conversation_id, row.customer, row.reason) == (cid, f"phone:{SPAMMER}", "spam")
    assert row.blocked_by == w.alice.id
    # The messages are stored: unblocking shows both.
    await rw.r.unblock(w.boss, cid)
    detail = await w.svc.get(w.alice, cid)
    assert [m.text for m in detail.messages] == ["kup teraz", "kup teraz!!!"]
    kinds = [e.kind for e in await w.svc.events(w.boss, cid)]
    assert "blocked" in kinds
    assert kinds[-1] == "unblocked"
    assert await rw.r.blacklist(w.boss) == []


async def test_the_blacklist_view_and_unblock_need_privilege(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw, SPAMMER)
    with pytest.raises(NotFound):
        await rw.r.block(w.dave, cid)  # outside the project
    await rw.r.block(w.carol, cid)
    with pytest.raises(Forbidden, match="blacklist"):
        await rw.r.blacklist(w.alice)
    with pytest.raises(Forbidden, match="blacklist"):
        await rw.r.unblock(w.alice, cid)
    assert await rw.r.blacklist(rw.admin) != []
    # dave is a plain agent (of another project): no blacklist for him.
    with pytest.raises(Forbidden):
        await rw.r.unblock(w.dave, cid)
    with pytest.raises(NotFound):
        await rw.r.unblock(rw.admin, cid + 1000)
    await rw.r.unblock(rw.admin, cid)
    assert cid in await seen(rw, "alice")


async def test_a_blocked_customer_is_not_routed_ruled_or_timed(rw: RWorld) -> None:
    w, r = rw.w, rw.r
    await r.set_distribution(rw.admin, "support", Distribution.DIRECT)
    await r.set_online(w.alice, w.alice.id, True)
    await r.set_priority(rw.admin, "support", PriorityLevel(name="p", reaction=timedelta(1)),
                         default=True)  # fmt: skip
    await r.set_rules(rw.admin, "support", [
        Rule(name="tag", actions=(Action(kind="add_tags", params={"tags": ["seen"]}),)),
    ])  # fmt: skip
    cid = await new_sms(rw, SPAMMER)
    await w.svc.close(w.alice, cid)
    await r.block(w.boss, cid)
    w.later(days=1)
    await w.sms(SPAMMER, "znowu")
    w.later(days=3)
    assert await r.check_sla() == []
    await r.unblock(w.boss, cid)
    summary = (await w.svc.get(w.boss, cid)).summary
    # Reopened by the message (it is stored) but not routed to alice nor tagged again.
    assert summary.assignee_id == w.alice.id  # the previous assignee, as before the block
    events = [e.kind for e in await w.svc.events(w.boss, cid)]
    assert events.count("rules_applied") == 1
    assert events.count("routed") == 1
    assert await w.svc.view(w.boss, View.ALL, Filters(sla="reaction_missed")) == []


async def test_the_blacklist_is_per_project(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw, SPAMMER)
    await rw.r.block(w.alice, cid)
    (sale,) = (await w.sms(SPAMMER, account="sales-sms")).conversations
    assert sale in await seen(rw, "dave", View.UNASSIGNED)
    assert {b.conversation_id for b in await rw.r.blacklist(rw.admin)} == {cid}
