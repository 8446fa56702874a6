"""Routing new inbound messages, inside ingestion's transaction.

Blacklist first (a blocked customer's messages are kept and go nowhere), then the inbound
rules, then who gets the conversation: a pinned agent, a rule's assignee, or the
distribution of the group or project (the shared pool, or round robin over online agents
under their capacity). Finally the SLA clock of conversations that (re)enter the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.conversations.models import State
from tidings.models import ContactMatch, InboundMessage
from tidings.routing import rules as rules_mod
from tidings.routing.rules import CompiledRule, Facts, InvalidRule, Outcome, evaluate
from tidings.routing.sla import BusinessHours, OpeningSpan, PriorityLevel, deadlines
from tidings.store import dialect_insert, tables
from tidings.store import tables_routing as rt

if TYPE_CHECKING:
    from tidings.conversations.ingest import AccountInfo, IngestResult

log = logging.getLogger("tidings.routing")
c = tables.conversations


class Distribution(StrEnum):
    POOL = "pool"
    """New conversations wait unassigned in the shared pool."""
    DIRECT = "direct"
    """Round robin over the online agents under their capacity (pool when none is)."""


_ROUTED: sa.Select[Any] = sa.select(
    c.c.id, c.c.project_id, c.c.kind, c.c.customer_key, c.c.state, c.c.assignee_id,
    c.c.queue_entered_at, c.c.queue_seconds,
).where(c.c.id.in_(sa.bindparam("b_ids", expanding=True)))  # fmt: skip
"""The columns routing reads of the conversations ingestion touched (``_route_one``,
``assign``, ``_Batch``): the whole rows cost the sync's event loop a dozen datetimes each to
convert for nothing."""


async def route_new(
    conn: AsyncConnection,
    info: AccountInfo,
    fresh: Sequence[InboundMessage],
    targets: Sequence[int],
    result: IngestResult,
    contacts: Mapping[str, Sequence[ContactMatch]],
    now: datetime,
) -> None:
    """Route the conversations ingestion just touched (same transaction)."""
    cids = sorted(set(targets))
    if not cids:
        return
    rows = {r.id: r for r in (await conn.execute(_ROUTED, {"b_ids": cids})).all()}
    project_id = next(iter(rows.values())).project_id
    blocked = await blocked_keys(conn, project_id, {r.customer_key for r in rows.values()})
    ins = dialect_insert(conn.dialect.name, rt.conversation_routing).on_conflict_do_nothing()
    await conn.execute(ins, [{"conversation_id": cid} for cid in cids])

    compiled = await load_rules(conn, project_id)
    outcomes: dict[int, Outcome] = {}
    for msg, cid in zip(fresh, targets, strict=True):
        if rows[cid].customer_key in blocked or not compiled:
            continue
        facts = Facts(
            message=msg,
            account_id=info.account.id,
            project=info.account.project,
            contacts=tuple(contacts.get(msg.sender.key, ())),
        )
        outcomes.setdefault(cid, Outcome()).merge(evaluate(compiled, facts))

    entering = result.created | result.reopened
    todo = [
        cid
        for cid in cids
        if rows[cid].customer_key not in blocked and (cid in entering or cid in outcomes)
    ]
    if not todo:
        return
    batch = await _Batch.load(conn, project_id, [rows[cid] for cid in todo])
    for cid in todo:
        await _route_one(conn, batch, rows[cid], outcomes.get(cid), cid in entering, now)
    await batch.write_updates(conn)


@dataclass
class _Batch:
    """What routing a batch needs, read once (ingestion is batch-shaped: a fixed number
    of statements per batch, not per message, wherever it can be)."""

    project_id: int
    states: dict[int, sa.Row[Any]]
    pins: dict[str, int]
    settings: sa.Row[Any]
    levels: dict[str, PriorityLevel | None] = field(default_factory=dict)
    hours: BusinessHours | None = None
    updates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """conversation_routing changes, written with one executemany per set of columns."""

    async def write_updates(self, conn: AsyncConnection) -> None:
        cr = rt.conversation_routing
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for cid, values in self.updates:
            columns = tuple(sorted(values))
            groups.setdefault(columns, []).append(
                {"b_cid": cid, **{f"b_{k}": values[k] for k in columns}}
            )
        for columns, params in groups.items():
            await conn.execute(
                sa.update(cr)
                .where(cr.c.conversation_id == sa.bindparam("b_cid"))
                .values({k: sa.bindparam(f"b_{k}") for k in columns}),
                params,
            )
        self.updates.clear()

    @classmethod
    async def load(
        cls, conn: AsyncConnection, project_id: int, rows: Sequence[sa.Row[Any]]
    ) -> _Batch:
        cr, pin = rt.conversation_routing, rt.customer_pins
        ids = [r.id for r in rows]
        states = {
            r.conversation_id: r
            for r in await conn.execute(sa.select(cr).where(cr.c.conversation_id.in_(ids)))
        }
        keys = sorted({r.customer_key for r in rows})
        pins = dict(
            (
                await conn.execute(
                    sa.select(pin.c.customer_key, pin.c.agent_id).where(
                        pin.c.project_id == project_id, pin.c.customer_key.in_(keys)
                    )
                )
            ).all()
        )
        return cls(project_id, states, pins, await ensure_settings(conn, project_id))

    async def level(self, conn: AsyncConnection, name: str) -> PriorityLevel | None:
        if name not in self.levels:
            self.levels[name] = await priority_level(conn, self.project_id, name)
        return self.levels[name]

    async def deadlines(
        self, conn: AsyncConnection, priority: str | None, start: datetime
    ) -> dict[str, Any]:
        level = None if priority is None else await self.level(conn, priority)
        if level is None:
            return {"reaction_due": None, "alarm_at": None, "execution_due": None}
        if level.business_hours and self.hours is None:
            self.hours = await business_hours(conn, self.project_id)
        due = deadlines(level, start, self.hours if level.business_hours else None)
        return {
            "reaction_due": due.reaction_due,
            "alarm_at": due.alarm_at,
            "execution_due": due.execution_due,
        }


async def blocked_keys(conn: AsyncConnection, project_id: int, keys: set[str]) -> set[str]:
    bl = rt.blacklist
    found = await conn.execute(
        sa.select(bl.c.customer_key).where(bl.c.project_id == project_id,
                                           bl.c.customer_key.in_(sorted(keys)))
    )  # fmt: skip
    return set(found.scalars())


async def load_rules(conn: AsyncConnection, project_id: int) -> list[CompiledRule]:
    """The project's rules in order; one that no longer compiles (its plugin was removed)
    is skipped with an error in the log rather than stopping ingestion."""
    r = rt.routing_rules
    kinds = rules_mod.installed()
    out = []
    for position, definition in await conn.execute(
        sa.select(r.c.position, r.c.definition).where(r.c.project_id == project_id)
        .order_by(r.c.position)
    ):  # fmt: skip
        try:
            out.append(kinds.compile(definition))
        except InvalidRule as exc:
            log.error("rule %s of project %s skipped: %s", position, project_id, exc)
    return out


async def _route_one(
    conn: AsyncConnection,
    batch: _Batch,
    row: sa.Row[Any],
    outcome: Outcome | None,
    entering: bool,
    now: datetime,
) -> None:
    state = batch.states[row.id]
    values: dict[str, Any] = {}
    open_pool = row.assignee_id is None and row.state != State.CLOSED.value
    group_id = state.group_id
    moved_group = False
    if outcome is not None:
        if outcome.matched:
            await _event(conn, row.id, "rules_applied", {
                "rules": outcome.matched, "tags": outcome.tags, "group": outcome.group,
                "assignee": outcome.assignee, "priority": outcome.priority,
                "category": outcome.category, "status": outcome.status,
            }, now)  # fmt: skip
        # Plugin actions append to the outcome directly: normalise like the tag action does.
        tags = [t.strip().lower() for t in outcome.tags if isinstance(t, str)]
        tags = list(dict.fromkeys(t for t in tags if 0 < len(t) <= rules_mod.TAG_MAX))
        if tags:
            ins = dialect_insert(conn.dialect.name, tables.conversation_tags)
            await conn.execute(
                ins.on_conflict_do_nothing(),
                [{"conversation_id": row.id, "tag": t} for t in tags],
            )
        for name in ("category", "status"):
            if getattr(outcome, name) is not None:
                values[name] = getattr(outcome, name)
        if outcome.group is not None and open_pool:
            found = await group_by_name(conn, row.project_id, outcome.group)
            if found is None:
                log.error("rule group %r is not a group of project %s", outcome.group,
                          row.project_id)  # fmt: skip
            elif found != group_id:
                group_id, moved_group = found, True
                values["group_id"] = found
                await _event(conn, row.id, "queued", {"group": found, "by": "rule"}, now)
        if outcome.priority is not None and outcome.priority != state.priority:
            if await batch.level(conn, outcome.priority) is None:
                log.error("rule priority %r is not a priority of project %s",
                          outcome.priority, row.project_id)  # fmt: skip
            else:
                values["priority"] = outcome.priority

    priority = values.get("priority", state.priority)
    if entering and priority is None and batch.settings.default_priority is not None:
        priority = values["priority"] = batch.settings.default_priority
    if entering:
        values.update(sla_started_at=now, reaction_missed_at=None, alarm_reached_at=None,
                      execution_missed_at=None)  # fmt: skip
    start = values.get("sla_started_at", state.sla_started_at)
    if start is not None and (entering or "priority" in values):
        values.update(await batch.deadlines(conn, priority, start))
    if values:
        batch.updates.append((row.id, values))  # written together at the end of the batch

    # Who gets it.
    if entering:
        pinned = batch.pins.get(row.customer_key)
        if pinned is not None and pinned != row.assignee_id:
            if await may_work(conn, pinned, row.project_id, row.kind):
                await assign(conn, row, pinned, now, by="pin")
                return
            log.warning("customer of conversation %s is pinned to agent %s, who may not "
                        "work on it; routing it normally", row.id, pinned)  # fmt: skip
    if not open_pool:
        return
    if outcome is not None and outcome.assignee is not None:
        agent = await agent_by_username(conn, outcome.assignee)
        if agent is not None and await may_work(conn, agent, row.project_id, row.kind):
            await assign(conn, row, agent, now, by="rule")
            return
        log.error("rule assignee %r may not work on conversation %s", outcome.assignee, row.id)
    pooled = group_id is None and batch.settings.distribution == Distribution.POOL.value
    if (entering or moved_group) and not pooled:
        picked = await round_robin(conn, row.project_id, row.kind, group_id)
        if picked is not None:
            await assign(conn, row, picked, now, by="round_robin")


async def _event(
    conn: AsyncConnection,
    cid: int,
    kind: str,
    data: Mapping[str, Any],
    now: datetime,
    actor_id: int | None = None,
) -> None:
    await conn.execute(
        sa.insert(tables.events).values(
            conversation_id=cid, at=now, actor_id=actor_id, kind=kind, data=dict(data)
        )
    )


async def assign(
    conn: AsyncConnection,
    row: sa.Row[Any],
    agent_id: int,
    now: datetime,
    *,
    by: str,
    actor_id: int | None = None,
) -> None:
    """Give the conversation to ``agent_id``, closing its stay in the pool."""
    values: dict[str, Any] = {"assignee_id": agent_id, "updated_at": now}
    if row.state != State.CLOSED.value:
        values["state"] = State.ASSIGNED.value
    if row.queue_entered_at is not None:
        spent = max((now - row.queue_entered_at).total_seconds(), 0.0)
        values.update(queue_entered_at=None, queue_seconds=row.queue_seconds + spent)
    await conn.execute(sa.update(c).where(c.c.id == row.id).values(**values))
    await _event(conn, row.id, "routed",
                 {"assignee": agent_id, "previous": row.assignee_id, "by": by}, now,
                 actor_id)  # fmt: skip


async def may_work(conn: AsyncConnection, agent_id: int, project_id: int, kind: str) -> bool:
    a, p = tables.agents, tables.agent_permissions
    found = await conn.execute(
        sa.select(a.c.id)
        .join(p, p.c.agent_id == a.c.id)
        .where(a.c.id == agent_id, a.c.active.is_(True), p.c.project_id == project_id,
               p.c.kind == kind)
    )  # fmt: skip
    return found.first() is not None


async def pinned_agent(conn: AsyncConnection, project_id: int, customer_key: str) -> int | None:
    pin = rt.customer_pins
    found = await conn.execute(
        sa.select(pin.c.agent_id).where(
            pin.c.project_id == project_id, pin.c.customer_key == customer_key
        )
    )
    value = found.scalar_one_or_none()
    return None if value is None else int(value)


async def agent_by_username(conn: AsyncConnection, username: str) -> int | None:
    a = tables.agents
    value = (
        await conn.execute(sa.select(a.c.id).where(a.c.username == username))
    ).scalar_one_or_none()
    return None if value is None else int(value)


async def group_by_name(conn: AsyncConnection, project_id: int, name: str) -> int | None:
    g = rt.agent_groups
    value = (
        await conn.execute(sa.select(g.c.id).where(g.c.project_id == project_id, g.c.name == name))
    ).scalar_one_or_none()
    return None if value is None else int(value)


async def priority_level(conn: AsyncConnection, project_id: int, name: str) -> PriorityLevel | None:
    sp = rt.sla_priorities
    row = (
        await conn.execute(sa.select(sp).where(sp.c.project_id == project_id, sp.c.name == name))
    ).one_or_none()
    if row is None:
        return None
    return PriorityLevel(
        name=row.name,
        reaction=_span(row.reaction_seconds),
        alarm=_span(row.alarm_seconds),
        execution=_span(row.execution_seconds),
        business_hours=row.business_hours,
    )


def _span(seconds: int | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


async def ensure_settings(conn: AsyncConnection, project_id: int) -> sa.Row[Any]:
    """The project's routing settings row, created with defaults on first use (locked on
    PostgreSQL: the round-robin cursor lives there)."""
    rp = rt.routing_projects
    ins = dialect_insert(conn.dialect.name, rp).on_conflict_do_nothing()
    await conn.execute(ins, {"project_id": project_id})
    query = sa.select(rp).where(rp.c.project_id == project_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return (await conn.execute(query)).one()


async def business_hours(conn: AsyncConnection, project_id: int) -> BusinessHours:
    rp, bh, off = rt.routing_projects, rt.business_hours, rt.business_days_off
    zone = (
        await conn.execute(sa.select(rp.c.timezone).where(rp.c.project_id == project_id))
    ).scalar_one_or_none() or "UTC"
    spans = [
        OpeningSpan(
            weekday=r.weekday,
            opens=_time(r.opens_minute),
            closes=_time(r.closes_minute),
        )
        for r in await conn.execute(sa.select(bh).where(bh.c.project_id == project_id))
    ]
    days = (await conn.execute(sa.select(off.c.day).where(off.c.project_id == project_id))).all()
    return BusinessHours(timezone=zone, spans=tuple(spans), days_off=frozenset(d for (d,) in days))


def _time(minute: int) -> time:
    return time((minute // 60) % 24, minute % 60)


async def sla_deadlines(
    conn: AsyncConnection, project_id: int, priority: str | None, start: datetime
) -> dict[str, Any]:
    """Deadline columns for a conversation whose SLA clock started at ``start``."""
    level = None if priority is None else await priority_level(conn, project_id, priority)
    if level is None:
        return {"reaction_due": None, "alarm_at": None, "execution_due": None}
    hours = await business_hours(conn, project_id) if level.business_hours else None
    due = deadlines(level, start, hours)
    return {
        "reaction_due": due.reaction_due,
        "alarm_at": due.alarm_at,
        "execution_due": due.execution_due,
    }


async def round_robin(
    conn: AsyncConnection, project_id: int, kind: str, group_id: int | None
) -> int | None:
    """The next online agent under capacity, if the group's (or else the project's)
    distribution is direct; ``None`` leaves the conversation in the pool."""
    g, gm = rt.agent_groups, rt.agent_group_members
    if group_id is not None:
        query = sa.select(g).where(g.c.id == group_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        owner = (await conn.execute(query)).one()
        table, key = g, g.c.id == group_id
    else:
        owner = await ensure_settings(conn, project_id)
        table, key = rt.routing_projects, rt.routing_projects.c.project_id == project_id
    if owner.distribution != Distribution.DIRECT.value:
        return None
    a, p, pr = tables.agents, tables.agent_permissions, rt.agent_presence
    query = (
        sa.select(a.c.id, pr.c.capacity)
        .join(p, sa.and_(p.c.agent_id == a.c.id, p.c.project_id == project_id, p.c.kind == kind))
        .join(pr, pr.c.agent_id == a.c.id)
        .where(a.c.active.is_(True), pr.c.online.is_(True))
        .order_by(a.c.id)
    )
    if group_id is not None:
        query = query.where(a.c.id.in_(sa.select(gm.c.agent_id).where(gm.c.group_id == group_id)))
    candidates = (await conn.execute(query)).all()
    if not candidates:
        return None
    load: dict[int, int] = dict(
        (
            await conn.execute(
                sa.select(c.c.assignee_id, sa.func.count())
                .where(c.c.state == State.ASSIGNED.value,
                       c.c.assignee_id.in_([x.id for x in candidates]))
                .group_by(c.c.assignee_id)
            )
        ).all()
    )  # fmt: skip
    free = [int(x.id) for x in candidates if load.get(x.id, 0) < x.capacity]
    if not free:
        return None
    last = owner.rr_last_agent_id or 0
    picked = next((x for x in free if x > last), free[0])
    await conn.execute(sa.update(table).where(key).values(rr_last_agent_id=picked))
    return picked
