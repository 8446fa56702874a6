"""Priorities, business hours and the three SLA signals, with a clock the test moves."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from routing_world import RWorld, new_sms, rw  # noqa: F401

from tidings.conversations import Draft, Filters, View
from tidings.errors import Forbidden, NotFound
from tidings.routing.service import RaisedSignal
from tidings.routing.sla import (
    BusinessHours,
    Deadlines,
    OpeningSpan,
    PriorityLevel,
    SlaSignal,
    deadlines,
    due_signals,
)

pytestmark = pytest.mark.anyio

R, A, E = SlaSignal.REACTION_MISSED, SlaSignal.ALARM_REACHED, SlaSignal.EXECUTION_MISSED
WEEK = BusinessHours(
    timezone="Europe/Warsaw",
    spans=tuple(OpeningSpan(weekday=d, opens=time(9), closes=time(17)) for d in range(5)),
    days_off=frozenset({date(2026, 11, 11)}),  # Independence Day, a Wednesday
)
NORMAL = PriorityLevel(
    name="normal",
    reaction=timedelta(minutes=30),
    alarm=timedelta(hours=2),
    execution=timedelta(hours=4),
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- pure time arithmetic -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "span", "expected"),
    [
        # Monday 10:00 Warsaw (09:00 UTC) + 2 h = Monday 12:00 Warsaw.
        (utc(2026, 11, 2, 9), timedelta(hours=2), utc(2026, 11, 2, 11)),
        # Friday 16:00 Warsaw + 2 h: one hour on Friday, one on Monday morning.
        (utc(2026, 11, 6, 15), timedelta(hours=2), utc(2026, 11, 9, 9)),
        # Saturday: the clock starts on Monday at 09:00 Warsaw.
        (utc(2026, 11, 7, 12), timedelta(minutes=30), utc(2026, 11, 9, 8, 30)),
        # Tuesday 16:30 + 1 h skips Wednesday 11 November (a day off).
        (utc(2026, 11, 10, 15, 30), timedelta(hours=1), utc(2026, 11, 12, 8, 30)),
        # Exactly 8 h from opening ends at closing the same day.
        (utc(2026, 11, 2, 8), timedelta(hours=8), utc(2026, 11, 2, 16)),
        # Summer time: 09:00 Warsaw is 07:00 UTC on Friday 23 October, and after the
        # change on Sunday 25 October Monday opens at 08:00 UTC.
        (utc(2026, 10, 23, 14), timedelta(hours=2), utc(2026, 10, 26, 9)),
    ],
)
def test_business_hours_add(start: datetime, span: timedelta, expected: datetime) -> None:
    assert WEEK.add(start, span) == expected


def test_business_hours_validation() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        BusinessHours(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="close after it opens"):
        OpeningSpan(weekday=0, opens=time(17), closes=time(9))
    with pytest.raises(ValueError, match="overlap"):
        BusinessHours(spans=(OpeningSpan(weekday=1, opens=time(8), closes=time(12)),
                             OpeningSpan(weekday=1, opens=time(11), closes=time(15))))  # fmt: skip
    with pytest.raises(ValueError, match="before the execution"):
        PriorityLevel(name="x", alarm=timedelta(hours=5), execution=timedelta(hours=4))
    with pytest.raises(ValueError, match="positive"):
        PriorityLevel(name="x", reaction=timedelta(0))
    with pytest.raises(ValueError, match="no opening time"):
        BusinessHours().add(utc(2026, 1, 1), timedelta(hours=1))
    # Until midnight: closes 00:00 is the end of the day.
    late = BusinessHours(spans=(OpeningSpan(weekday=0, opens=time(20), closes=time(0)),))
    assert late.add(utc(2026, 11, 2, 23), timedelta(hours=2)) == utc(2026, 11, 9, 21)


def test_signals_from_deadlines() -> None:
    due = deadlines(NORMAL, utc(2026, 11, 2, 9), None)
    assert due == Deadlines(utc(2026, 11, 2, 9, 30), utc(2026, 11, 2, 11), utc(2026, 11, 2, 13))
    at = utc(2026, 11, 2, 9, 29)
    assert due_signals(due, reacted_at=None, closed_at=None, now=at) == {}
    at = utc(2026, 11, 2, 12)
    assert due_signals(due, reacted_at=utc(2026, 11, 2, 9, 10), closed_at=None, now=at) == {
        A: due.alarm_at
    }
    late = due_signals(due, reacted_at=utc(2026, 11, 2, 9, 45), closed_at=utc(2026, 11, 2, 14),
                       now=utc(2026, 11, 3))  # fmt: skip
    assert late == {R: due.reaction_due, A: due.alarm_at, E: due.execution_due}
    # Business-hours priority on a project without hours counts calendar time.
    bh = NORMAL.model_copy(update={"business_hours": True})
    assert deadlines(bh, utc(2026, 11, 7), BusinessHours()) == deadlines(
        NORMAL, utc(2026, 11, 7), None
    )


# --- signals on conversations ---------------------------------------------------------------


async def sla_ids(rw: RWorld, signal: SlaSignal) -> set[int]:
    return {s.id for s in await rw.w.svc.view(rw.w.boss, View.ALL, Filters(sla=signal))}


async def test_the_three_signals_are_raised_once_filterable_and_logged(rw: RWorld) -> None:
    w, r = rw.w, rw.r
    await r.set_priority(rw.admin, "support", NORMAL, default=True)
    late = await new_sms(rw, "+48600100201")  # 09:00
    fast = await new_sms(rw, "+48600100202")
    w.later(minutes=10)
    await w.svc.send(w.alice, Draft(text="Już sprawdzam"), conversation_id=fast)
    w.later(minutes=19)  # 09:29
    assert await r.check_sla() == []
    w.later(minutes=1)  # 09:30: late's reaction time is over
    raised = await r.check_sla()
    assert raised == [RaisedSignal(late, R, w.ago(minutes=0))]
    assert await r.check_sla() == []  # once
    assert await sla_ids(rw, R) == {late}
    assert await sla_ids(rw, A) == set()
    await w.svc.close(w.alice, fast)  # executed in time
    w.later(hours=1, minutes=30)  # 11:00
    assert {(x.conversation_id, x.signal) for x in await r.check_sla()} == {(late, A)}
    w.later(hours=2)  # 13:00
    assert {(x.conversation_id, x.signal) for x in await r.check_sla()} == {(late, E)}
    assert await sla_ids(rw, E) == {late}
    info = await r.info(w.boss, late)
    assert set(info.raised) == set(info.signals) == {R, A, E}
    assert info.execution_due == w.clock()
    assert info.priority == "normal"
    kinds = [e.kind for e in await w.svc.events(w.boss, late)]
    assert kinds[-3:] == ["sla_reaction_missed", "sla_alarm_reached", "sla_execution_missed"]
    quick = await r.info(w.boss, fast)
    assert (quick.signals, quick.raised) == ({}, {})


async def test_a_late_reply_still_misses_the_reaction(rw: RWorld) -> None:
    w, r = rw.w, rw.r
    await r.set_priority(rw.admin, "support", NORMAL, default=True)
    cid = await new_sms(rw)
    w.later(minutes=45)
    await w.svc.send(w.alice, Draft(text="Przepraszam za zwłokę"), conversation_id=cid)
    assert (await r.info(w.alice, cid)).signals == {R: w.ago(minutes=15)}
    assert [(x.conversation_id, x.signal) for x in await r.check_sla()] == [(cid, R)]


async def test_business_hours_priority(rw: RWorld) -> None:
    w, r = rw.w, rw.r
    await r.set_business_hours(rw.admin, "support", WEEK)
    await r.set_priority(rw.admin, "support", PriorityLevel(
        name="office", reaction=timedelta(hours=2), business_hours=True), default=True)  # fmt: skip
    w.clock.now = utc(2026, 11, 6, 15)  # Friday 16:00 in Warsaw
    cid = await new_sms(rw)
    assert (await r.info(w.boss, cid)).reaction_due == utc(2026, 11, 9, 9)
    w.clock.now = utc(2026, 11, 8, 12)  # Sunday: 44 calendar hours later, 1 business hour
    assert await r.check_sla() == []
    w.clock.now = utc(2026, 11, 9, 9)  # Monday 10:00 in Warsaw
    assert [(x.conversation_id, x.signal) for x in await r.check_sla()] == [(cid, R)]


async def test_a_reopened_conversation_starts_a_new_sla_clock(rw: RWorld) -> None:
    w, r = rw.w, rw.r
    await r.set_priority(rw.admin, "support", NORMAL, default=True)
    cid = await new_sms(rw)
    w.later(hours=1)
    await r.check_sla()
    assert await sla_ids(rw, R) == {cid}
    await w.svc.close(w.alice, cid)
    w.later(days=1)
    await w.sms("+48600100200", "znowu ja")
    info = await r.info(w.boss, cid)
    assert info.sla_started_at == w.clock()
    assert info.raised == {}
    assert info.signals == {}
    assert info.reaction_due == w.clock() + timedelta(minutes=30)
    assert await sla_ids(rw, R) == set()


async def test_changing_the_priority_recomputes_the_deadlines(rw: RWorld) -> None:
    w, r = rw.w, rw.r
    await r.set_priority(rw.admin, "support", NORMAL, default=True)
    urgent = PriorityLevel(name="urgent", reaction=timedelta(minutes=5))
    await r.set_priority(rw.admin, "support", urgent)
    cid = await new_sms(rw)
    started = w.clock()
    w.later(minutes=10)
    await r.set_conversation_priority(w.alice, cid, "urgent")
    info = await r.info(w.alice, cid)
    assert (info.priority, info.reaction_due, info.execution_due) == (
        "urgent", started + timedelta(minutes=5), None,
    )  # fmt: skip
    assert info.signals == {R: started + timedelta(minutes=5)}
    with pytest.raises(NotFound, match="no priority 'p9'"):
        await r.set_conversation_priority(w.alice, cid, "p9")
    with pytest.raises(NotFound):
        await r.set_conversation_priority(w.dave, cid, "urgent")
    with pytest.raises(Forbidden):
        await r.set_priority(w.boss, "support", NORMAL)
    with pytest.raises(NotFound):
        await r.set_business_hours(w.dave, "support", WEEK)
    assert [p.name for p in await r.priorities(w.alice, "support")] == ["normal", "urgent"]
    events = [(e.kind, e.data) for e in await w.svc.events(w.alice, cid)]
    assert ("priority", {"previous": "normal", "priority": "urgent"}) in events


async def test_no_priority_no_signals(rw: RWorld) -> None:
    cid = await new_sms(rw)
    rw.w.later(days=3)
    assert await rw.r.check_sla() == []
    assert (await rw.r.info(rw.w.boss, cid)).reaction_due is None


async def test_hook_sla_signal(rw: RWorld, caplog: pytest.LogCaptureFixture) -> None:
    w, r = rw.w, rw.r
    await r.set_priority(rw.admin, "support", PriorityLevel(name="p", reaction=timedelta(1)),
                         default=True)  # fmt: skip
    cid = await new_sms(rw)
    w.later(days=2)
    await r.check_sla()
    # The async listener got it; the broken one was logged and did not stop it.
    assert rw.listener.calls == [(cid, "reaction_missed", w.ago(days=1))]
    assert "sla_signal listener broken failed" in caplog.text
