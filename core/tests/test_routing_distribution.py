"""Distribution: the shared pool, or round robin over online agents under capacity."""

from __future__ import annotations

import pytest
from routing_world import RWorld, assignee, new_sms, rw  # noqa: F401

from tidings.conversations import State, View
from tidings.routing.route import Distribution
from tidings.routing.rules import Action, Condition, Rule

pytestmark = pytest.mark.anyio


async def online(rw: RWorld, *names: str, capacity: int = 5) -> None:
    for name in names:
        agent = getattr(rw.w, name)
        await rw.r.set_online(agent, agent.id, True)
        await rw.r.set_capacity(rw.w.boss, agent.id, capacity)


async def test_the_pool_is_the_default(rw: RWorld) -> None:
    await online(rw, "alice", "bob")
    cid = await new_sms(rw)
    assert await assignee(rw, cid) is None
    assert cid in {s.id for s in await rw.w.svc.view(rw.w.alice, View.UNASSIGNED)}


async def test_direct_distribution_round_robins_over_online_agents(rw: RWorld) -> None:
    w = rw.w
    await rw.r.set_distribution(rw.admin, "support", Distribution.DIRECT)
    await online(rw, "alice", "bob", "carol", "dave")
    got = [await assignee(rw, await new_sms(rw, f"+4860010000{i}")) for i in range(4)]
    # boss (supervisor) and admin are offline; dave has no permission in support.
    assert got == [w.alice.id, w.bob.id, w.carol.id, w.alice.id]
    cid = await new_sms(rw, "+48600100009")
    summary = (await w.svc.get(w.boss, cid)).summary
    assert (summary.state, summary.assignee_id) == (State.ASSIGNED, w.bob.id)
    assert summary.metrics.total_time_in_queue.total_seconds() == 0
    events = [(e.kind, e.data) for e in await w.svc.events(w.boss, cid)]
    assert events == [
        ("created", {}),
        ("routed", {"assignee": w.bob.id, "previous": None, "by": "round_robin"}),
    ]
    # An email conversation: carol has no email permission, so she is skipped.
    mails = [
        (await w.mail(f"k{i}@k.pl", f"Temat {i}", f"<r{i}@k.pl>")).conversations.pop()
        for i in range(3)
    ]
    assert [await assignee(rw, m) for m in mails] == [w.alice.id, w.bob.id, w.alice.id]


async def test_offline_and_full_agents_are_skipped_then_the_pool(rw: RWorld) -> None:
    w = rw.w
    await rw.r.set_distribution(rw.admin, "support", Distribution.DIRECT)
    await online(rw, "alice", "bob", capacity=1)
    first = await new_sms(rw, "+48600100001")
    second = await new_sms(rw, "+48600100002")
    third = await new_sms(rw, "+48600100003")  # both are at capacity: the pool
    assert [await assignee(rw, x) for x in (first, second, third)] == [w.alice.id, w.bob.id, None]
    await w.svc.close(w.alice, first)  # alice has room again
    fourth = await new_sms(rw, "+48600100004")
    assert await assignee(rw, fourth) == w.alice.id
    await w.svc.close(w.alice, fourth)
    await rw.r.set_online(w.alice, w.alice.id, False)
    fifth = await new_sms(rw, "+48600100005")
    assert await assignee(rw, fifth) is None  # alice offline, bob full


async def test_a_group_distributes_to_its_members_only(rw: RWorld) -> None:
    w = rw.w
    await online(rw, "alice", "bob", "carol")
    gid = await rw.r.create_group(
        rw.admin, "support", "VIP", distribution=Distribution.DIRECT,
        members=[w.bob.id, w.carol.id],
    )  # fmt: skip
    await rw.r.set_rules(rw.admin, "support", [
        Rule(name="vip", conditions=(Condition(kind="body_contains", params={"value": "vip"}),),
             actions=(Action(kind="set_group", params={"group": "VIP"}),)),
    ])  # fmt: skip
    got = [await assignee(rw, await new_sms(rw, f"+4860020000{i}", "vip")) for i in range(3)]
    assert got == [w.bob.id, w.carol.id, w.bob.id]
    plain = await new_sms(rw, "+48600300000", "zwykła sprawa")
    assert await assignee(rw, plain) is None  # the project itself distributes to the pool
    # Switching the group to the pool keeps its conversations unassigned there.
    await rw.r.set_distribution(rw.admin, "support", Distribution.POOL, group_id=gid)
    pooled = await new_sms(rw, "+48600400000", "vip")
    assert await assignee(rw, pooled) is None
    assert (await rw.r.info(w.bob, pooled)).group_id == gid
    assert pooled not in {s.id for s in await w.svc.view(w.alice, View.UNASSIGNED)}


async def test_a_reopened_conversation_is_distributed_again(rw: RWorld) -> None:
    w = rw.w
    cid = await new_sms(rw)
    await rw.r.set_distribution(rw.admin, "support", Distribution.DIRECT)
    await online(rw, "bob")
    await w.svc.close(w.boss, cid)  # closed while unassigned
    await w.sms("+48600100200", "again")
    summary = (await w.svc.get(w.boss, cid)).summary
    assert (summary.state, summary.assignee_id) == (State.ASSIGNED, w.bob.id)
