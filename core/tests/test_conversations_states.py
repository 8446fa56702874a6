"""States and assignment exactly as the manual says, every refusal typed and clear."""

from __future__ import annotations

import pytest
from conversation_world import World, world  # noqa: F401

from tidings.conversations import Decision, Draft, State, View
from tidings.errors import (
    Cancelled,
    DecisionRequired,
    Forbidden,
    InvalidTransition,
    NotFound,
)

pytestmark = pytest.mark.anyio


async def new_sms(w: World, number: str = "+48600100200") -> int:
    (cid,) = (await w.sms(number)).conversations
    return cid


async def state(w: World, cid: int) -> tuple[State, int | None]:
    s = (await w.svc.get(w.boss, cid)).summary
    return s.state, s.assignee_id


async def test_take_only_an_unassigned_conversation(world: World) -> None:
    cid = await new_sms(world)
    await world.svc.take(world.alice, cid)
    assert await state(world, cid) == (State.ASSIGNED, world.alice.id)
    with pytest.raises(InvalidTransition, match="only an unassigned open conversation"):
        await world.svc.take(world.boss, cid)
    await world.svc.close(world.alice, cid)
    with pytest.raises(InvalidTransition, match="is closed"):
        await world.svc.take(world.alice, cid)


async def test_unassign_only_an_assigned_one_and_anyone_may(world: World) -> None:
    cid = await new_sms(world)
    with pytest.raises(InvalidTransition, match="not assigned"):
        await world.svc.unassign(world.alice, cid)
    await world.svc.take(world.alice, cid)
    await world.svc.unassign(world.boss, cid)  # someone else unassigns alice
    assert await state(world, cid) == (State.NEW, None)


async def test_reassign_only_an_assigned_one_to_an_agent_who_may_work_on_it(world: World) -> None:
    cid = await new_sms(world)
    with pytest.raises(InvalidTransition, match="not assigned"):
        await world.svc.reassign(world.alice, cid, world.bob.id)
    await world.svc.take(world.alice, cid)
    await world.svc.reassign(world.alice, cid, world.bob.id)
    assert await state(world, cid) == (State.ASSIGNED, world.bob.id)
    with pytest.raises(Forbidden, match="'dave' has no sms permission"):
        await world.svc.reassign(world.boss, cid, world.dave.id)
    with pytest.raises(InvalidTransition, match="already assigned"):
        await world.svc.reassign(world.boss, cid, world.bob.id)


async def test_close_and_reopen(world: World) -> None:
    cid = await new_sms(world)
    with pytest.raises(InvalidTransition, match="not closed"):
        await world.svc.reopen(world.alice, cid)
    await world.svc.close(world.alice, cid)
    with pytest.raises(InvalidTransition, match="already closed"):
        await world.svc.close(world.alice, cid)
    await world.svc.reopen(world.alice, cid)
    assert await state(world, cid) == (State.NEW, None)


async def test_permanent_delete_removes_everything(world: World) -> None:
    cid = await new_sms(world)
    await world.sms("+48600100200", "zamówienie pilne")
    await world.svc.delete(world.alice, cid)
    with pytest.raises(NotFound):
        await world.svc.get(world.boss, cid)
    assert await world.svc.view(world.boss, View.ALL) == []
    from tidings.conversations import Filters

    assert await world.svc.messages(world.boss, View.ALL, Filters(search="zamów")) == []
    # A new message from the same number starts afresh.
    again = await world.sms("+48600100200")
    assert again.created
    assert again.conversations != {cid}


async def test_every_operation_is_refused_outside_the_agents_projects(world: World) -> None:
    cid = await new_sms(world)
    for op in (
        world.svc.take(world.dave, cid),
        world.svc.close(world.dave, cid),
        world.svc.star(world.dave, cid),
        world.svc.get(world.dave, cid),
        world.svc.events(world.dave, cid),
        world.svc.delete(world.dave, cid),
        world.svc.send(world.dave, Draft(text="x"), conversation_id=cid),
    ):
        with pytest.raises(NotFound, match=f"no conversation {cid}"):
            await op
    # ...and for an id that does not exist, the same answer.
    with pytest.raises(NotFound, match="no conversation 999999"):
        await world.svc.take(world.dave, 999999)


async def test_email_needs_the_email_permission(world: World) -> None:
    (cid,) = (await world.mail("jan@k.pl", "Temat", "<m1@k.pl>")).conversations
    with pytest.raises(NotFound):
        await world.svc.take(world.carol, cid)  # carol works on SMS only
    await world.svc.take(world.alice, cid)


# --- sending --------------------------------------------------------------------------------


async def test_sending_assigns_the_conversation_to_the_sender(world: World) -> None:
    cid = await new_sms(world)
    sent = await world.svc.send(world.alice, Draft(text="Dzień dobry"), conversation_id=cid)
    assert sent.conversation_id == cid
    assert await state(world, cid) == (State.ASSIGNED, world.alice.id)
    out = (await world.svc.get(world.alice, cid)).messages[-1]
    assert (out.direction, out.text, out.status, out.author_id) == (
        "out", "Dzień dobry", "queued", world.alice.id
    )  # fmt: skip


async def test_send_and_close(world: World) -> None:
    cid = await new_sms(world)
    await world.svc.send(world.alice, Draft(text="Załatwione"), conversation_id=cid, close=True)
    assert await state(world, cid) == (State.CLOSED, world.alice.id)
    kinds = [e.kind for e in await world.svc.events(world.alice, cid)]
    assert kinds[-3:] == ["assigned_by_sending", "sent", "closed"]


async def test_sending_into_another_agents_conversation_needs_a_decision(world: World) -> None:
    cid = await new_sms(world)
    await world.svc.take(world.alice, cid)
    before = len((await world.svc.get(world.boss, cid)).messages)
    with pytest.raises(DecisionRequired) as info:
        await world.svc.send(world.bob, Draft(text="x"), conversation_id=cid)
    assert info.value.choices == ("cancel", "assign_and_send", "send_only")
    assert info.value.assignee_id == world.alice.id
    with pytest.raises(Cancelled):
        await world.svc.send(world.bob, Draft(text="x"), conversation_id=cid,
                             decision=Decision.CANCEL)  # fmt: skip
    assert len((await world.svc.get(world.boss, cid)).messages) == before  # nothing written
    await world.svc.send(world.bob, Draft(text="only"), conversation_id=cid,
                         decision=Decision.SEND_ONLY)  # fmt: skip
    assert await state(world, cid) == (State.ASSIGNED, world.alice.id)
    await world.svc.send(world.bob, Draft(text="mine"), conversation_id=cid,
                         decision=Decision.ASSIGN_AND_SEND)  # fmt: skip
    assert await state(world, cid) == (State.ASSIGNED, world.bob.id)


async def test_new_sms_to_a_number_of_another_agent_needs_a_decision(world: World) -> None:
    cid = await new_sms(world)
    await world.svc.take(world.alice, cid)
    draft = Draft(text="Hej", to=("+48 600 100 200",))
    with pytest.raises(DecisionRequired):
        await world.svc.send(world.bob, draft, account_id="sms-pl")
    sent = await world.svc.send(world.bob, draft, account_id="sms-pl",
                                decision=Decision.SEND_ONLY)  # fmt: skip
    assert sent.conversation_id == cid
    assert not sent.created_conversation


async def test_new_sms_to_a_new_number_starts_a_conversation(world: World) -> None:
    sent = await world.svc.send(world.alice, Draft(text="Hej", to=("+48600999888",)),
                                account_id="sms-pl")  # fmt: skip
    assert sent.created_conversation
    summary = (await world.svc.get(world.alice, sent.conversation_id)).summary
    assert (summary.customer, summary.state, summary.assignee_id) == (
        "phone:+48600999888", State.ASSIGNED, world.alice.id
    )  # fmt: skip
    # The customer's answer lands in the same conversation.
    result = await world.sms("+48600999888", "Dzięki")
    assert result.conversations == {sent.conversation_id}


async def test_new_email_starts_a_new_thread_each_time(world: World) -> None:
    draft = Draft(text="Oferta", subject="Oferta", to=("jan@k.pl",))
    a = await world.svc.send(world.alice, draft, account_id="mail")
    b = await world.svc.send(world.alice, draft, account_id="mail")
    assert a.conversation_id != b.conversation_id


async def test_sending_needs_the_channel_permission(world: World) -> None:
    with pytest.raises(Forbidden, match="no email permission"):
        await world.svc.send(world.carol, Draft(text="x", to=("a@b.pl",)), account_id="mail")
    with pytest.raises(Forbidden, match="no sms permission in project 'sales'"):
        await world.svc.send(world.alice, Draft(text="x", to=("+48600100200",)),
                             account_id="sales-sms")  # fmt: skip
