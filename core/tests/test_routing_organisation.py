"""Groups, presence and transfers, with every refusal the server makes."""

from __future__ import annotations

import pytest
from routing_world import RWorld, assignee, new_sms, rw  # noqa: F401

from tidings.conversations import State, View
from tidings.errors import Forbidden, InvalidTransition, NotFound
from tidings.routing.route import Distribution

pytestmark = pytest.mark.anyio


async def ids(rw: RWorld, who: str, view: View = View.ACTIVE) -> set[int]:
    actor = rw.admin if who == "admin" else getattr(rw.w, who)
    return {s.id for s in await rw.w.svc.view(actor, view)}


async def test_only_an_administrator_of_the_project_configures_groups(rw: RWorld) -> None:
    w = rw.w
    gid = await rw.r.create_group(rw.admin, "support", "Reklamacje", members=[w.alice.id])
    with pytest.raises(Forbidden, match="only an administrator"):
        await rw.r.create_group(w.boss, "support", "Faktury")
    with pytest.raises(NotFound, match="no project 'sales'"):
        await rw.r.create_group(w.alice, "sales", "X")  # alice is outside the project
    with pytest.raises(NotFound, match="no project 'nowhere'"):
        await rw.r.create_group(rw.admin, "nowhere", "X")
    with pytest.raises(InvalidTransition, match="already has a group"):
        await rw.r.create_group(rw.admin, "support", "Reklamacje")
    with pytest.raises(Forbidden, match="'dave' does not belong"):
        await rw.r.set_group_members(rw.admin, gid, [w.dave.id])
    with pytest.raises(Forbidden, match="only an administrator"):
        await rw.r.set_group_members(w.alice, gid, [w.alice.id, w.bob.id])
    with pytest.raises(NotFound, match="no group"):
        await rw.r.set_group_members(w.dave, gid, [w.dave.id])
    await rw.r.set_group_members(rw.admin, gid, [w.bob.id, w.carol.id])
    (group,) = await rw.r.groups(w.alice, "support")
    assert (group.name, group.members, group.distribution) == (
        "Reklamacje", (w.bob.id, w.carol.id), Distribution.POOL,
    )  # fmt: skip
    with pytest.raises(NotFound):
        await rw.r.groups(w.dave, "support")
    with pytest.raises(Forbidden):
        await rw.r.set_distribution(w.boss, "support", Distribution.DIRECT)


async def test_presence_self_or_privileged_capacity_privileged_only(rw: RWorld) -> None:
    w = rw.w
    assert (await rw.r.presence(w.alice, w.alice.id)).online is False
    await rw.r.set_online(w.alice, w.alice.id, True)
    with pytest.raises(Forbidden, match="supervisor or administrator"):
        await rw.r.set_online(w.alice, w.bob.id, True)
    await rw.r.set_online(w.boss, w.bob.id, True)
    with pytest.raises(Forbidden, match="capacity"):
        await rw.r.set_capacity(w.alice, w.alice.id, 9)
    await rw.r.set_capacity(w.boss, w.alice.id, 2)
    with pytest.raises(ValueError, match="capacity"):
        await rw.r.set_capacity(w.boss, w.alice.id, -1)
    cid = await new_sms(rw)
    await w.svc.take(w.alice, cid)
    p = await rw.r.presence(w.boss, w.alice.id)
    assert (p.online, p.capacity, p.in_progress) == (True, 2, 1)
    assert (await rw.r.presence(w.alice, w.bob.id)).online is True
    with pytest.raises(NotFound):  # no shared project
        await rw.r.presence(w.dave, w.alice.id)


async def test_a_group_pool_is_seen_by_its_members_only(rw: RWorld) -> None:
    w = rw.w
    gid = await rw.r.create_group(rw.admin, "support", "Druga linia", members=[w.bob.id])
    cid = await new_sms(rw)
    assert cid in await ids(rw, "alice", View.UNASSIGNED)
    await rw.r.transfer_to_group(w.alice, cid, gid)
    assert cid not in await ids(rw, "alice", View.UNASSIGNED)
    assert cid in await ids(rw, "bob", View.UNASSIGNED)
    assert cid in await ids(rw, "boss", View.ALL)  # the All permission sees every group
    with pytest.raises(NotFound):
        await w.svc.take(w.alice, cid)
    await w.svc.take(w.bob, cid)
    assert (await rw.r.info(w.bob, cid)).group_id == gid


async def test_transfer_to_group_makes_it_unassigned_there(rw: RWorld) -> None:
    w = rw.w
    gid = await rw.r.create_group(rw.admin, "support", "Faktury", members=[w.bob.id])
    other = await rw.r.create_group(rw.admin, "sales", "Handlowcy", members=[w.dave.id])
    cid = await new_sms(rw)
    await w.svc.take(w.alice, cid)
    await rw.r.transfer_to_group(w.alice, cid, gid)
    summary = (await w.svc.get(w.boss, cid)).summary
    assert (summary.state, summary.assignee_id) == (State.NEW, None)
    assert summary.metrics.since_last_queue_entry is not None
    kinds = [(e.kind, e.data) for e in await w.svc.events(w.boss, cid)]
    assert ("transferred", {"group": gid, "previous": w.alice.id}) in kinds
    with pytest.raises(NotFound, match="no group"):
        await rw.r.transfer_to_group(w.boss, cid, other)  # another project's group
    with pytest.raises(NotFound):
        await rw.r.transfer_to_group(w.dave, cid, gid)  # outside the project
    mail = (await w.mail("jan@k.pl", "Faktura", "<m1@k.pl>")).conversations.pop()
    with pytest.raises(NotFound):
        await rw.r.transfer_to_group(w.carol, mail, gid)  # no email permission
    await w.svc.close(w.boss, mail)
    with pytest.raises(InvalidTransition, match="closed"):
        await rw.r.transfer_to_group(w.boss, mail, gid)


async def test_transfer_to_an_agent_of_the_same_group(rw: RWorld) -> None:
    w = rw.w
    gid = await rw.r.create_group(rw.admin, "support", "Faktury", members=[w.alice.id, w.bob.id])
    cid = await new_sms(rw)
    await rw.r.transfer_to_group(w.boss, cid, gid)
    await w.svc.take(w.alice, cid)
    with pytest.raises(Forbidden, match="'carol' is not in this conversation's group"):
        await rw.r.transfer_to_agent(w.alice, cid, w.carol.id)
    await rw.r.transfer_to_agent(w.alice, cid, w.bob.id)
    assert await assignee(rw, cid) == w.bob.id
    with pytest.raises(InvalidTransition, match="already assigned"):
        await rw.r.transfer_to_agent(w.bob, cid, w.bob.id)
    with pytest.raises(Forbidden, match="'dave' has no sms permission"):
        await rw.r.transfer_to_agent(w.boss, cid, w.dave.id)
    with pytest.raises(NotFound):  # alice no longer sees bob's conversation
        await rw.r.transfer_to_agent(w.alice, cid, w.alice.id)
    with pytest.raises(NotFound):
        await rw.r.transfer_to_agent(w.dave, cid, w.alice.id)
    # Without a group any agent with the channel permission may receive it.
    free = await new_sms(rw, "+48600999000")
    await rw.r.transfer_to_agent(w.alice, free, w.carol.id)
    summary = (await w.svc.get(w.boss, free)).summary
    assert (summary.state, summary.assignee_id) == (State.ASSIGNED, w.carol.id)
    assert summary.metrics.since_last_queue_entry is None
    events = [(e.kind, e.actor_id, e.data) for e in await w.svc.events(w.boss, free)]
    assert events[-1] == (
        "routed", w.alice.id, {"assignee": w.carol.id, "previous": None, "by": "transfer"},
    )  # fmt: skip
