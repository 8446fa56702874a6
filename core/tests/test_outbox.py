"""The outbound pipeline: outbox, retries, crash safety, delays, statuses, reply rules."""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from conversation_world import ACCOUNTS, START, Both, World, account, world  # noqa: F401
from driver_watch import watch_driver

from tidings import (
    Account,
    Address,
    Attachment,
    AttachmentLimits,
    Capabilities,
    Channel,
    Consent,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    StatusUpdate,
    Threading,
    TransientSendError,
    hookimpl,
)
from tidings.conversations import Conversations, Draft
from tidings.errors import InvalidTransition, NotAllowed
from tidings.models import Priority, TemplateRef, ThreadHeaders
from tidings.outbound import outbox as outbox_module
from tidings.outbound.outbox import (
    YOUNG_GC_THRESHOLD,
    Outbox,
    RetryPolicy,
    _loading,
    _outbound,
    _Recorded,
    _recording,
    _Sending,
)
from tidings.plugins import load_plugins
from tidings.store import tables

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=3, timeout=5, wait_initial=0.001, wait_max=0.01,
                   longest_inline_wait=0.05, max_claims=3, lease=timedelta(minutes=5))  # fmt: skip


class Scripted(Channel):
    """A provider whose answers the test scripts, one per call; records every call."""

    name = "t_scripted"
    kind = "sms"
    capabilities = Capabilities(threading=Threading.ADDRESS, delivery_status=True)

    def __init__(self) -> None:
        self.script: deque[Callable[[OutboundMessage], SendResult]] = deque()
        self.calls: list[str] = []
        self.messages: list[OutboundMessage] = []
        self.gate: anyio.Event | None = None
        """When set, every send waits for it (after being counted in ``calls``)."""
        self.slow: dict[str, anyio.Event] = {}
        """Sends of these message ids wait for their event (after being counted)."""

    def own_address(self, account: Account[Any]) -> Address:
        return Address.phone("+48221000555")

    @hookimpl
    async def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        self.calls.append(message.id)
        self.messages.append(message)
        if self.gate is not None:
            await self.gate.wait()
        if message.id in self.slow:
            await self.slow[message.id].wait()
        if self.script:
            return self.script.popleft()(message)
        return SendResult(provider_id=f"SM{message.id}", status=DeliveryStatus.QUEUED,
                          raw_status="queued")  # fmt: skip


class Deduplicating(Scripted):
    name = "t_dedup"
    capabilities = Capabilities(threading=Threading.ADDRESS, deduplicates_sends=True)


class Filed(Scripted):
    """A provider that takes attachments (as MMS does)."""

    name = "t_filed"
    capabilities = Capabilities(threading=Threading.ADDRESS, attachments=AttachmentLimits())


def raise_(exc: Exception) -> Callable[[OutboundMessage], SendResult]:
    def go(message: OutboundMessage) -> SendResult:
        raise exc

    return go


class Listener:
    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    @hookimpl
    async def delivery_status_changed(self, message_id: int, update: StatusUpdate) -> None:
        self.seen.append((message_id, update.status.value))


class Setup:
    def __init__(self, w: World) -> None:
        self.w = w
        self.scripted = Scripted()
        self.dedup = Deduplicating()
        self.filed = Filed()
        self.listener = Listener()
        chans = self

        class Register:
            @hookimpl
            def register_channels(self) -> list[Channel]:
                return [chans.scripted, chans.dedup, chans.filed]

        plugins = load_plugins(
            {}, extra=[("both", Both()), ("scripted", Register()), ("listen", self.listener)],
            entry_points_enabled=False,
        )  # fmt: skip
        self.accounts = {
            **ACCOUNTS,
            "sc": account("sc", Scripted, "support"),
            "dd": account("dd", Deduplicating, "support"),
            "fl": account("fl", Filed, "support"),
        }
        self.svc = Conversations(w.store, plugins, self.accounts, clock=w.clock)
        self.outbox = Outbox(w.store, plugins, self.accounts, clock=w.clock, policy=FAST)

    async def compose(self, text: str = "Dzień dobry", to: str = "+48600100200",
                      acct: str = "sc", **kw: Any) -> int:  # fmt: skip
        sent = await self.svc.send(self.w.alice, Draft(text=text, to=(to,)), account_id=acct, **kw)
        return sent.message_id

    async def message(self, mid: int) -> Any:
        (conv,) = await self.svc.view(self.w.boss, filters=None)  # type: ignore[arg-type]
        detail = await self.svc.get(self.w.boss, conv.id)
        return next(m for m in detail.messages if m.id == mid)


@pytest.fixture
def s(world: World) -> Setup:
    return Setup(world)


async def test_composing_queues_and_the_worker_sends_once(s: Setup) -> None:
    mid = await s.compose()
    assert (await s.message(mid)).status == "queued"
    outcome = await s.outbox.run_once()
    assert outcome.sent == 1
    assert s.scripted.calls == [str(mid)]
    msg = await s.message(mid)
    assert (msg.provider_id, msg.status) == (f"SM{mid}", "queued")
    assert (await s.outbox.run_once()).sent == 0  # nothing sent twice
    assert s.scripted.calls == [str(mid)]


async def test_the_worker_loop_claims_a_bounded_lead_and_sends_all_it_claimed(s: Setup) -> None:
    """``Outbox.run`` claims ahead of its senders, but only so far: with every sender stuck
    at the provider, claimed and not yet started are at most ``concurrency`` (the queue's
    low water) plus one batch (``2 * concurrency``) — what a crash would leave "unknown —
    check". Stopped, it still sends everything it claimed, each message once."""
    mids = [await s.compose(to=f"+486001002{i:02d}") for i in range(20)]
    s.scripted.gate = anyio.Event()
    stop = anyio.Event()
    o = tables.outbox

    async def claimed() -> int:
        async with s.w.store.read() as conn:
            query = sa.select(sa.func.count()).where(o.c.state == "sending")
            return int((await conn.execute(query)).scalar_one())

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: s.outbox.run(stop, concurrency=2, idle=0.05))
            bound = 2 + 2 + 4  # in flight, low water, one batch
            while len(s.scripted.calls) < 2 or await claimed() < bound:  # noqa: ASYNC110
                await anyio.sleep(0.01)  # (a list and a table grow, no event to wait on)
            await anyio.sleep(0.2)  # the feeder would claim more now, if it ever did
            assert len(s.scripted.calls) == 2
            assert await claimed() == bound
            stop.set()
            s.scripted.gate.set()
    assert sorted(s.scripted.calls) == sorted(str(m) for m in mids[:8])
    assert await claimed() == 0
    m = tables.messages
    async with s.w.store.read() as conn:
        sent = await conn.execute(sa.select(m.c.id, m.c.provider_id).where(m.c.id.in_(mids[:8])))
        assert sorted(sent.all()) == [(mid, f"SM{mid}") for mid in mids[:8]]
        pending = await conn.execute(sa.select(o.c.message_id).where(o.c.state == "pending"))
        assert sorted(pending.scalars()) == mids[8:]


async def test_the_worker_loop_spaces_young_garbage_collections(s: Setup) -> None:
    """While worker loops run, young collections come at most every ``YOUNG_GC_THRESHOLD``
    allocations (each claimed batch set off several that found nothing to free); the
    thresholds come back when the last of two overlapping loops ends, not the first."""
    before = gc.get_threshold()
    spaced = (max(before[0], YOUNG_GC_THRESHOLD), *before[1:])
    mid = await s.compose()
    first, second = anyio.Event(), anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as outer:
            outer.start_soon(lambda: s.outbox.run(second, concurrency=2, idle=0.05))
            async with anyio.create_task_group() as inner:
                inner.start_soon(lambda: s.outbox.run(first, concurrency=2, idle=0.05))
                await anyio.wait_all_tasks_blocked()
                assert gc.get_threshold() == spaced
                first.set()
            assert gc.get_threshold() == spaced  # the other loop still runs
            while not s.scripted.calls:  # noqa: ASYNC110 (a list grows, no event)
                await anyio.sleep(0.01)
            second.set()
    assert gc.get_threshold() == before
    assert s.scripted.calls == [str(mid)]


async def stored(s: Setup, *mids: int) -> list[tuple[str, str | None]]:
    """Each message's status and provider id as stored, in the order given."""
    m = tables.messages
    async with s.w.store.read() as conn:
        rows = await conn.execute(
            sa.select(m.c.id, m.c.status, m.c.provider_id).where(m.c.id.in_(mids))
        )
        found = {row.id: (row.status, row.provider_id) for row in rows}
    return [found[mid] for mid in mids]


def spy_on_commits(outbox: Outbox) -> list[list[int]]:
    """The message ids of each recording transaction ``outbox`` runs from now on."""
    commits: list[list[int]] = []
    record = outbox._record

    async def spied(batch: Any, outcome: Any) -> Any:
        commits.append([d.claim.message_id for d in batch])
        return await record(batch, outcome)

    outbox._record = spied  # type: ignore[method-assign]
    return commits


async def test_a_busy_worker_waits_for_more_finished_sends_before_it_commits(
    s: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While other sends are under way the recorder waits ``RECORD_LINGER`` for them, so a
    busy worker records in fewer, larger commits (each has a fixed cost)."""
    monkeypatch.setattr(outbox_module, "RECORD_LINGER", 1.0)
    first, second = await s.compose(), await s.compose(to="+48600100201")
    s.scripted.slow[str(second)] = later = anyio.Event()
    commits = spy_on_commits(s.outbox)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: s.outbox.run_once(concurrency=2))
            while len(s.scripted.calls) < 2:  # noqa: ASYNC110 (a list grows, no event)
                await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # the first send is done, waiting to be recorded
            assert commits == []
            later.set()
    assert sorted(commits) == [sorted([first, second])]
    assert await stored(s, first, second) == [
        ("queued", f"SM{first}"), ("queued", f"SM{second}"),
    ]  # fmt: skip


async def test_an_idle_worker_records_a_lone_send_at_once(
    s: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "RECORD_LINGER", 30.0)
    mid = await s.compose()
    commits = spy_on_commits(s.outbox)
    with anyio.fail_after(10):
        assert (await s.outbox.run_once()).sent == 1
    assert commits == [[mid]]


async def test_a_crash_while_a_finished_send_waits_to_be_recorded_is_not_resent(
    s: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send that finished but was not recorded yet is, after a crash, what one in flight
    is: its claim stays, and ``recover`` makes it "unknown — check", never sent again."""
    monkeypatch.setattr(outbox_module, "RECORD_LINGER", 30.0)
    first, second = await s.compose(), await s.compose(to="+48600100201")
    s.scripted.slow[str(second)] = anyio.Event()  # never set: still at the provider
    with anyio.fail_after(10), anyio.CancelScope() as worker:  # the crash
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: s.outbox.run_once(concurrency=2))
            while len(s.scripted.calls) < 2:  # noqa: ASYNC110 (a list grows, no event)
                await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # the first send is done, waiting to be recorded
            worker.cancel()
    s.w.later(minutes=6)
    assert await s.outbox.recover() == 2
    assert await stored(s, first, second) == [("unknown", None), ("unknown", None)]
    assert (await s.outbox.run_once()).sent == 0
    assert sorted(s.scripted.calls) == sorted([str(first), str(second)])


async def test_a_recording_that_fails_costs_only_the_attempt_that_broke_it(
    s: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recording's writes wait for its commit (``deferred_writes`` on SQLite), so a
    bad row fails the commit rather than its own statement; the batch is then recorded
    one attempt at a time: the good one is recorded, the bad one keeps its claim (for
    ``recover``, as after a crash), and nothing of the failed commit remains."""
    monkeypatch.setattr(outbox_module, "RECORD_LINGER", 1.0)
    first, second = await s.compose(), await s.compose(to="+48600100201")
    same = SendResult(provider_id="SMsame", status=DeliveryStatus.QUEUED, raw_status="queued")
    s.scripted.script.extend([lambda _: same, lambda _: same])  # one provider id, twice
    commits = spy_on_commits(s.outbox)
    with anyio.fail_after(10):
        outcome = await s.outbox.run_once(concurrency=2)
    assert commits == [[first, second], [first], [second]]
    assert outcome.sent == 1
    assert await stored(s, first, second) == [("queued", "SMsame"), ("queued", None)]
    o, e = tables.outbox, tables.events
    async with s.w.store.read() as conn:
        claims = (await conn.execute(sa.select(o.c.message_id, o.c.state))).all()
        logged = (
            await conn.execute(sa.select(e.c.data).where(e.c.kind == "delivered_to_provider"))
        ).scalars().all()  # fmt: skip
    assert [tuple(row) for row in claims] == [(second, "sending")]
    assert [entry["message"] for entry in logged] == [first]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_a_batch_is_claimed_and_recorded_without_a_trip_to_the_driver_thread(
    s: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write lock being free, the claim and each recording take it on the event loop's
    thread and run there whole, commit included (``sqlite_connection``): under load every
    crossing waited for the loop's busy tasks twice while holding the lock."""
    mids = [await s.compose(to=f"+4860010020{i}") for i in range(3)]
    crossings, ran = watch_driver(monkeypatch)
    commits = spy_on_commits(s.outbox)
    assert (await s.outbox.run_once(concurrency=3)).sent == 3
    assert sorted(mid for batch in commits for mid in batch) == sorted(mids)
    assert crossings == []
    assert all(on_loop for on_loop, _ in ran)
    assert [sql.split()[0] for _, sql in ran][:3] == ["UPDATE", "SELECT", "SELECT"]
    assert sum(sql.startswith("INSERT INTO events") for _, sql in ran) == len(commits)
    assert await stored(s, *mids) == [("queued", f"SM{mid}") for mid in mids]


async def test_transient_failures_retry_then_succeed(s: Setup) -> None:
    mid = await s.compose()
    s.scripted.script.extend([
        raise_(TransientSendError("HTTP 500", code="500")),
        raise_(TransientSendError("timeout")),
    ])  # fmt: skip
    assert (await s.outbox.run_once()).sent == 1
    assert s.scripted.calls == [str(mid)] * 3
    assert (await s.message(mid)).provider_id == f"SM{mid}"


async def test_retry_after_is_honoured_inline_or_by_requeueing(s: Setup) -> None:
    mid = await s.compose()
    s.scripted.script.append(raise_(TransientSendError("429", code="20429", retry_after=0.02)))
    started = anyio.current_time()
    assert (await s.outbox.run_once()).sent == 1
    assert anyio.current_time() - started >= 0.02
    # A long Retry-After is not slept through: the message waits in the outbox.
    mid2 = await s.compose(to="+48600100201")
    s.scripted.script.extend([raise_(TransientSendError("429", code="429", retry_after=120))])
    outcome = await s.outbox.run_once()
    assert outcome.requeued == 1
    assert (await s.outbox.run_once()).sent == 0  # not due yet
    s.w.later(seconds=121)
    assert (await s.outbox.run_once()).sent == 1
    assert s.scripted.calls.count(str(mid2)) == 2
    assert mid != mid2


async def test_permanent_failure_fails_at_once_with_the_reason(s: Setup) -> None:
    mid = await s.compose()
    s.scripted.script.append(raise_(PermanentSendError("Invalid 'To' number", code="21211")))
    assert (await s.outbox.run_once()).failed == 1
    assert s.scripted.calls == [str(mid)]  # no retry
    msg = await s.message(mid)
    assert (msg.status, msg.error_code, msg.error_message) == (
        "failed", "21211", "Invalid 'To' number"
    )  # fmt: skip
    assert (mid, "failed") in s.listener.seen


async def test_each_finished_attempt_is_logged_in_its_conversation_in_order(s: Setup) -> None:
    """A recording writes its conversation-log entries in one statement (the entries as
    one JSON parameter): each says what happened, with its data as composed, in the order
    the attempts finished, at the recording's time."""
    mids = [await s.compose(text=f"Paczka {i}") for i in range(3)]
    reason = 'Numer nieprawidłowy — sprawdź "To"'
    s.scripted.script.extend([
        lambda m: SendResult(provider_id=f"SM{m.id}", status=DeliveryStatus.QUEUED),
        raise_(PermanentSendError(reason, code="21211")),
        lambda m: SendResult(provider_id=f"SM{m.id}", status=DeliveryStatus.QUEUED),
    ])  # fmt: skip
    outcome = await s.outbox.run_once(concurrency=1)
    assert (outcome.sent, outcome.failed) == (2, 1)
    (conv,) = await s.svc.view(s.w.boss)
    logged = [(e.kind, e.data, e.at) for e in await s.svc.events(s.w.alice, conv.id)
              if e.kind in ("delivered_to_provider", "send_failed")]  # fmt: skip
    now = s.w.clock()
    assert logged == [
        ("delivered_to_provider", {"message": mids[0], "provider_id": f"SM{mids[0]}",
                                   "attempts": 1}, now),
        ("send_failed", {"message": mids[1], "reason": reason, "code": "21211", "attempts": 1},
         now),
        ("delivered_to_provider", {"message": mids[2], "provider_id": f"SM{mids[2]}",
                                   "attempts": 1}, now),
    ]  # fmt: skip


async def test_transient_failures_give_up_after_the_limit(s: Setup) -> None:
    mid = await s.compose()
    s.scripted.script.extend(raise_(TransientSendError("HTTP 503", code="503")) for _ in range(9))
    for _ in range(3):
        await s.outbox.run_once()
        s.w.later(hours=2)
    msg = await s.message(mid)
    assert msg.status == "failed"
    assert msg.error_message == "gave up after 9 attempts: HTTP 503"
    assert len(s.scripted.calls) == 9


async def test_a_crash_mid_send_is_not_resent_blindly(s: Setup) -> None:
    mid = await s.compose()
    (claim,) = await s.outbox.claim(10)  # the worker recorded its attempt, then died
    assert claim.message_id == mid
    assert await s.outbox.recover() == 0  # still within the lease
    s.w.later(minutes=6)
    assert await s.outbox.recover() == 1
    msg = await s.message(mid)
    assert msg.status == "unknown"
    assert "check with the provider" in (msg.error_message or "")
    assert (await s.outbox.run_once()).sent == 0
    assert s.scripted.calls == []


async def test_a_crash_mid_send_is_retried_when_the_provider_deduplicates(s: Setup) -> None:
    mid = await s.compose(acct="dd")
    await s.outbox.claim(10)
    s.w.later(minutes=6)
    assert await s.outbox.recover() == 1
    assert (await s.outbox.run_once()).sent == 1
    assert s.dedup.calls == [str(mid)]


async def test_delayed_send_can_be_cancelled_until_it_is_due(s: Setup) -> None:
    mid = await s.compose(delay=timedelta(seconds=30))
    assert (await s.outbox.run_once()).sent == 0
    await s.svc.cancel(s.w.alice, mid)
    s.w.later(seconds=31)
    assert (await s.outbox.run_once()).sent == 0
    assert s.scripted.calls == []
    (conv,) = await s.svc.view(s.w.boss)
    assert conv.metrics.message_count == 0
    kinds = [e.kind for e in await s.svc.events(s.w.alice, conv.id)]
    assert kinds[-1] == "send_cancelled"


async def test_cancel_and_send_never_both(s: Setup) -> None:
    mid = await s.compose(delay=timedelta(seconds=5))
    s.w.later(seconds=6)
    claims = await s.outbox.claim(10)  # the worker took it first
    assert [c.message_id for c in claims] == [mid]
    with pytest.raises(InvalidTransition, match="too late to cancel"):
        await s.svc.cancel(s.w.alice, mid)


async def test_scheduled_send(s: Setup) -> None:
    mid = await s.compose(send_at=START + timedelta(hours=3))
    assert (await s.outbox.run_once()).sent == 0
    s.w.later(hours=3)
    assert (await s.outbox.run_once()).sent == 1
    assert s.scripted.calls == [str(mid)]


async def test_statuses_never_move_backwards_and_may_come_early(s: Setup) -> None:
    mid = await s.compose()
    # The provider's callback beats our send call: parked until the id is known.
    await s.outbox.apply_statuses("sc", [StatusUpdate(provider_id=f"SM{mid}",
                                                      status=DeliveryStatus.SENT)])  # fmt: skip
    await s.outbox.run_once()
    assert (await s.message(mid)).status == "sent"
    delivered = StatusUpdate(provider_id=f"SM{mid}", status=DeliveryStatus.DELIVERED,
                             raw_status="delivered")  # fmt: skip
    late_sent = StatusUpdate(provider_id=f"SM{mid}", status=DeliveryStatus.SENT, raw_status="sent")
    await s.outbox.apply_statuses("sc", [delivered])
    await s.outbox.apply_statuses("sc", [late_sent, delivered])  # late and repeated
    msg = await s.message(mid)
    assert (msg.status, msg.status_raw) == ("delivered", "delivered")
    read = StatusUpdate(provider_id=f"SM{mid}", status=DeliveryStatus.READ)
    await s.outbox.apply_statuses("sc", [read])
    assert (await s.message(mid)).status == "read"
    assert [x for x in s.listener.seen if x[0] == mid] == [
        (mid, "sent"), (mid, "delivered"), (mid, "read")
    ]  # fmt: skip


async def test_opted_out_customers_are_refused_before_the_provider(s: Setup) -> None:
    stop = InboundMessage(provider_id="in-1", sender=Address.phone("+48600100200"), text="STOP",
                          consent=Consent.OPT_OUT)  # fmt: skip
    await s.svc.ingest("sc", [stop])
    with pytest.raises(NotAllowed, match="opted out"):
        await s.compose()
    start = InboundMessage(provider_id="in-2", sender=Address.phone("+48600100200"),
                           text="START", consent=Consent.OPT_IN)  # fmt: skip
    await s.svc.ingest("sc", [start])
    await s.svc.ingest("sc", [stop])  # a redelivered old STOP changes nothing
    await s.compose()


async def test_opt_out_between_compose_and_send_fails_the_message(s: Setup) -> None:
    mid = await s.compose(delay=timedelta(seconds=10))
    stop = InboundMessage(provider_id="in-1", sender=Address.phone("+48600100200"), text="STOP",
                          consent=Consent.OPT_OUT)  # fmt: skip
    await s.svc.ingest("sc", [stop])
    s.w.later(seconds=11)
    assert (await s.outbox.run_once()).failed == 1
    assert s.scripted.calls == []
    assert (await s.message(mid)).error_code == "opted_out"


async def test_reply_rules_refuse_before_anything_is_written(s: Setup) -> None:
    with pytest.raises(NotAllowed, match="no subject line"):
        await s.svc.send(s.w.alice, Draft(text="x", subject="Hi", to=("+48600100200",)),
                         account_id="sc")  # fmt: skip
    assert await s.svc.view(s.w.boss) == []


async def test_pacing_spaces_sends_of_one_account(s: Setup) -> None:
    paced = Outbox(s.w.store, s.outbox.plugins, s.accounts, clock=s.w.clock, policy=FAST,
                   rates={"sc": 50.0})  # fmt: skip
    for i in range(5):
        await s.compose(to=f"+4860010020{i}")
    started = anyio.current_time()
    assert (await paced.run_once()).sent == 5
    assert anyio.current_time() - started >= 4 / 50


async def test_hook_delivery_status_changed(s: Setup) -> None:
    class Broken:
        @hookimpl
        def delivery_status_changed(self, message_id: int) -> None:
            raise RuntimeError("listener bug")

    s.outbox.plugins.pm.register(Broken(), name="broken-listener")
    mid = await s.compose()
    await s.outbox.run_once()
    report = StatusUpdate(provider_id=f"SM{mid}", status=DeliveryStatus.DELIVERED,
                          raw_status="delivered", error_code=None)  # fmt: skip
    await s.outbox.apply_statuses("sc", [report])
    await s.outbox.apply_statuses("sc", [report])  # repeated: no second notice
    # Composing made it "queued"; the send result said the same, so only one move forward.
    assert [x for x in s.listener.seen if x[0] == mid] == [(mid, "delivered")]
    assert (await s.message(mid)).status == "delivered"  # the broken listener changed nothing


async def test_attachments_go_out_with_their_own_message(s: Setup) -> None:
    """In one batch, each message reaches the channel with exactly its own attachments
    (stored bytes, or a link), and one without attachments with none."""
    photo = Attachment(filename="szkoda.png", content_type="image/png", data=b"\x89PNG" * 50)
    linked = Attachment(filename="umowa.pdf", content_type="application/pdf",
                        url="https://files.example.com/umowa.pdf")  # fmt: skip
    draft = Draft(text="Zdjęcie i umowa", to=("+48600100200",), attachments=(photo, linked))
    with_files = (await s.svc.send(s.w.alice, draft, account_id="fl")).message_id
    plain = await s.compose("Bez załączników", to="+48600100201", acct="fl")
    assert (await s.outbox.run_once()).sent == 2
    given = {int(m.id): m.attachments for m in s.filed.messages}
    assert given.keys() == {with_files, plain}
    assert [(a.filename, a.content_type, a.data, a.url) for a in given[with_files]] == [
        ("szkoda.png", "image/png", photo.data, None),
        ("umowa.pdf", "application/pdf", None, "https://files.example.com/umowa.pdf"),
    ]
    assert given[plain] == ()


def test_a_stored_row_becomes_the_message_it_was_composed_as() -> None:
    """The worker hands the model only the fields a row sets; every other field must still
    come out as the model's default, and every stored field as it was stored."""
    full = _Sending(
        id=7, sender_key="phone:+48221000555", subject="Re: order", text="Dzień dobry",
        html="<p>Dzień dobry</p>",
        recipients={"to": ["phone:+48600100200"], "cc": ["email:ops@example.com"],
                    "bcc": ["email:audit@example.com"]},
        meta={"priority": "high", "message_id": "<a@x>", "in_reply_to": ["<b@x>"],
              "references": ["<c@x>", "<b@x>"],
              "template": {"name": "order_update", "language": "pl", "parameters": ["7"]},
              "message_tag": "ACCOUNT_UPDATE", "header_line": "ACME"},
        has_attachments=True,
    )  # fmt: skip
    photo = Attachment(filename="a.png", content_type="image/png", data=b"png")
    assert _outbound(full, [photo]) == OutboundMessage(
        id="7", sender=Address.phone("+48221000555"), to=(Address.phone("+48600100200"),),
        cc=(Address.email("ops@example.com"),), bcc=(Address.email("audit@example.com"),),
        subject="Re: order", text="Dzień dobry", html="<p>Dzień dobry</p>",
        attachments=(photo,), priority=Priority.HIGH,
        thread=ThreadHeaders(message_id="<a@x>", in_reply_to=("<b@x>",),
                             references=("<c@x>", "<b@x>")),
        template=TemplateRef(name="order_update", language="pl", parameters=("7",)),
        message_tag="ACCOUNT_UPDATE", header_line="ACME",
    )  # fmt: skip
    bare = _Sending(id=8, sender_key=None, subject="", text="Hi", html=None,
                    recipients={"to": ["phone:+48600100200"]}, meta=None,
                    has_attachments=False)  # fmt: skip
    assert _outbound(bare, []) == OutboundMessage(
        id="8", to=(Address.phone("+48600100200"),), text="Hi"
    )


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_worker_reads_its_rows_into_tuples_of_the_columns_it_selects(dialect: str) -> None:
    """``_Sending`` and ``_Recorded`` are filled by position: their fields must be the
    selected columns, in order."""
    assert [c.name for c in _loading(dialect).selected_columns] == list(_Sending._fields)
    assert [c.name for c in _recording(dialect).selected_columns] == list(_Recorded._fields)
