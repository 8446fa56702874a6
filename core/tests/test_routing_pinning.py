"""Client pinning as the Blinger manual describes it: an agent pins a customer to
themselves; the pinned agent or an administrator unpins; new conversations skip the pool."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from routing_world import RWorld, assignee, new_sms, rw  # noqa: F401

from tidings.conversations import State, View
from tidings.errors import Forbidden, InvalidTransition, NotFound
from tidings.routing.route import Distribution
from tidings.store import tables

pytestmark = pytest.mark.anyio

CUSTOMER = "+48600100200"


async def test_pin_needs_the_conversation_assigned_to_oneself(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw, CUSTOMER)
    with pytest.raises(InvalidTransition, match="take it first"):
        await rw.r.pin(w.alice, cid)
    await w.svc.take(w.alice, cid)
    with pytest.raises(NotFound):  # bob does not see alice's conversation
        await rw.r.pin(w.bob, cid)
    with pytest.raises(InvalidTransition, match="take it first"):
        await rw.r.pin(rw.admin, cid)  # even an administrator pins only to themselves
    with pytest.raises(NotFound):
        await rw.r.pin(w.dave, cid)
    await rw.r.pin(w.alice, cid)
    with pytest.raises(InvalidTransition, match="already pinned to you"):
        await rw.r.pin(w.alice, cid)
    await w.svc.reassign(w.alice, cid, w.bob.id)
    with pytest.raises(InvalidTransition, match="unpin first"):
        await rw.r.pin(w.bob, cid)


async def test_a_pinned_customer_skips_the_pool(rw: RWorld) -> None:
    w = rw.w
    mail = (await w.mail("jan@k.pl", "Zamówienie", "<p1@k.pl>")).conversations.pop()
    await w.svc.take(w.bob, mail)
    await rw.r.pin(w.bob, mail)
    w.later(hours=1)
    new = (await w.mail("jan@k.pl", "Reklamacja", "<p2@k.pl>")).conversations.pop()
    assert new != mail
    summary = (await w.svc.get(w.bob, new)).summary
    assert (summary.state, summary.assignee_id) == (State.ASSIGNED, w.bob.id)
    assert new in {s.id for s in await w.svc.view(w.bob, View.MINE)}
    assert new not in {s.id for s in await w.svc.view(w.alice, View.UNASSIGNED)}
    events = [(e.kind, e.data) for e in await w.svc.events(w.bob, new)]
    assert ("routed", {"assignee": w.bob.id, "previous": None, "by": "pin"}) in events


async def test_pinning_wins_over_distribution_and_after_another_agent_closed(rw: RWorld) -> None:
    w = rw.w
    await rw.r.set_distribution(rw.admin, "support", Distribution.DIRECT)
    await rw.r.set_online(w.carol, w.carol.id, True)
    cid = await new_sms(rw, CUSTOMER)
    assert await assignee(rw, cid) == w.carol.id  # round robin (only carol is online)
    await w.svc.reassign(w.carol, cid, w.alice.id)
    await rw.r.pin(w.alice, cid)
    # alice hands the customer to bob, who closes the conversation.
    await rw.r.transfer_to_agent(w.alice, cid, w.bob.id)
    await w.svc.close(w.bob, cid)
    w.later(days=2)
    await w.sms(CUSTOMER, "to znowu ja")
    summary = (await w.svc.get(w.alice, cid)).summary
    assert (summary.state, summary.assignee_id) == (State.ASSIGNED, w.alice.id)
    assert cid in {s.id for s in await w.svc.view(w.alice, View.MINE)}
    # Pinned to alice in the support project only: sales keeps its own routing.
    (sale,) = (await w.sms(CUSTOMER, account="sales-sms")).conversations
    assert await assignee(rw, sale) is None


async def test_unpin_by_the_pinned_agent_or_an_administrator(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw, CUSTOMER)
    with pytest.raises(InvalidTransition, match="not pinned"):
        await rw.r.unpin(w.boss, cid)
    await w.svc.take(w.alice, cid)
    await rw.r.pin(w.alice, cid)
    with pytest.raises(Forbidden, match="pinned agent or an administrator"):
        await rw.r.unpin(w.boss, cid)  # a supervisor is not enough
    await rw.r.unpin(rw.admin, cid)
    await rw.r.pin(w.alice, cid)
    await rw.r.unpin(w.alice, cid)
    await w.svc.close(w.alice, cid)
    await w.sms(CUSTOMER, "again")
    assert await assignee(rw, cid) == w.alice.id  # reopened as before: no pin involved
    kinds = [e.kind for e in await w.svc.events(w.boss, cid)]
    assert kinds.count("pinned") == 2
    assert kinds.count("unpinned") == 2


async def test_pin_status_labels(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw, CUSTOMER)
    await w.svc.take(w.alice, cid)
    status = await rw.r.pin_status(w.alice, cid)
    assert (status.may_pin, status.label) == (True, "Pin (alice)")
    assert (await rw.r.pin_status(w.boss, cid)).may_pin is False
    await rw.r.pin(w.alice, cid)
    mine = await rw.r.pin_status(w.alice, cid)
    assert (mine.pinned_to, mine.may_unpin, mine.label) == (w.alice.id, True, "Unpin (alice)")
    other = await rw.r.pin_status(w.boss, cid)
    assert (other.may_unpin, other.label) == (False, "Pinned (alice)")
    admin = await rw.r.pin_status(rw.admin, cid)
    assert (admin.may_unpin, admin.label) == (True, "Unpin (pinned to alice)")


async def test_a_pin_to_an_agent_who_left_is_ignored(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw, CUSTOMER)
    await w.svc.take(w.carol, cid)
    await rw.r.pin(w.carol, cid)
    await w.svc.unassign(w.boss, cid)
    await w.svc.close(w.boss, cid)
    async with w.store.write() as conn:  # carol leaves the company
        agents = tables.agents
        await conn.execute(sa.update(agents).where(agents.c.id == w.carol.id).values(active=False))
    await w.sms(CUSTOMER, "halo?")
    summary = (await w.svc.get(w.boss, cid)).summary
    assert (summary.state, summary.assignee_id) == (State.NEW, None)  # the pool, not carol
