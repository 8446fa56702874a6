"""The routing service: organisation, distribution, transfers, rules, SLA, pins, blacklist.

It works over the same store and clock as ``tidings.conversations.Conversations`` and
checks every operation on the server side, like it: a conversation the agent may not see is
``NotFound``, a missing role, project or channel permission is ``Forbidden``.

Who may do what:

* administrators who belong to the project configure it (groups, members, distribution,
  rules, priorities, business hours);
* supervisors and administrators set other agents' online status and capacity, agents
  only their own status;
* anyone who sees a conversation may transfer it, change its priority and block its
  customer; unblocking and the blacklist view need a supervisor or administrator role, or
  the All permission (the seed's "manage dialogs" / "show the All tab");
* pinning follows Blinger: an agent pins the customer of a conversation assigned to them
  to themselves; the pinned agent unpins, and an administrator may unpin anyone.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock, system_clock
from tidings.conversations import queries
from tidings.conversations.models import Actor, Page, Role, SlaSignal, State
from tidings.errors import Forbidden, InvalidTransition, NotFound
from tidings.plugins import Plugins
from tidings.routing import load_actor
from tidings.routing import rules as rules_mod
from tidings.routing.route import (
    Distribution,
    agent_by_username,
    assign,
    ensure_settings,
    group_by_name,
    pinned_agent,
    priority_level,
    sla_deadlines,
)
from tidings.routing.rules import InvalidRule, Rule, RuleKinds
from tidings.routing.sla import BusinessHours, Deadlines, PriorityLevel, due_signals
from tidings.store import Store, dialect_insert, tables
from tidings.store import tables_routing as rt

log = logging.getLogger("tidings.routing")
c = tables.conversations

__all__ = [
    "BlockedConversation",
    "Distribution",
    "Group",
    "PinStatus",
    "Presence",
    "RaisedSignal",
    "Routing",
    "RoutingInfo",
]


class Group(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    project: str
    name: str
    distribution: Distribution
    members: tuple[int, ...]


class Presence(BaseModel):
    model_config = ConfigDict(frozen=True)

    agent_id: int
    online: bool
    capacity: int
    in_progress: int
    """Conversations assigned to the agent and not closed."""


class PinStatus(BaseModel):
    """What the pin control shows the asking agent (the seed's three labels)."""

    model_config = ConfigDict(frozen=True)

    pinned_to: int | None
    pinned_to_name: str | None
    may_pin: bool
    may_unpin: bool
    label: str


class RoutingInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    conversation_id: int
    group_id: int | None
    priority: str | None
    category: str | None
    status: str | None
    sla_started_at: datetime | None
    reaction_due: datetime | None
    alarm_at: datetime | None
    execution_due: datetime | None
    signals: dict[SlaSignal, datetime] = Field(default_factory=dict)
    """Signals passed now (computed live, whether or not the sweep raised them yet)."""
    raised: dict[SlaSignal, datetime] = Field(default_factory=dict)
    """Signals the sweep raised (events, hook, filter)."""


class BlockedConversation(BaseModel):
    model_config = ConfigDict(frozen=True)

    conversation_id: int
    project: str
    customer: str
    customer_name: str
    state: State
    blocked_at: datetime
    blocked_by: int | None
    reason: str


@dataclass(frozen=True)
class RaisedSignal:
    conversation_id: int
    signal: SlaSignal
    at: datetime


class Routing:
    def __init__(self, store: Store, plugins: Plugins, *, clock: Clock = system_clock) -> None:
        self.store = store
        self.plugins = plugins
        self.clock = clock
        self.kinds = RuleKinds.from_plugins(plugins)
        rules_mod.install(self.kinds)

    async def actor(self, agent_id: int) -> Actor:
        async with self.store.read() as conn:
            return await load_actor(conn, agent_id)

    # --- permission helpers --------------------------------------------------------------

    async def _project(self, conn: AsyncConnection, actor: Actor, key: str) -> int:
        """The id of project ``key`` if ``actor`` belongs to it (else it does not exist for
        them)."""
        p = tables.projects
        pid = (await conn.execute(sa.select(p.c.id).where(p.c.key == key))).scalar_one_or_none()
        if pid is None or not _member(actor, int(pid)):
            raise NotFound(f"no project {key!r}")
        return int(pid)

    async def _admin_project(self, conn: AsyncConnection, actor: Actor, key: str) -> int:
        pid = await self._project(conn, actor, key)
        _require_admin(actor)
        return pid

    async def _visible(self, conn: AsyncConnection, actor: Actor, cid: int) -> sa.Row[Any]:
        query = sa.select(c).where(c.c.id == cid, queries.visible(actor))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=c)
        row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound(f"no conversation {cid}")
        return row

    async def _event(
        self,
        conn: AsyncConnection,
        cid: int,
        actor: Actor | None,
        kind: str,
        data: dict[str, Any],
        now: datetime,
    ) -> None:
        await conn.execute(
            sa.insert(tables.events).values(
                conversation_id=cid, at=now, actor_id=actor.id if actor else None, kind=kind,
                data=data,
            )
        )  # fmt: skip

    # --- organisation --------------------------------------------------------------------

    async def create_group(
        self,
        actor: Actor,
        project: str,
        name: str,
        *,
        distribution: Distribution = Distribution.POOL,
        members: Iterable[int] = (),
    ) -> int:
        if not 1 <= len(name.strip()) <= 100:
            raise ValueError("a group name has 1 to 100 characters")
        g = rt.agent_groups
        async with self.store.write() as conn:
            pid = await self._admin_project(conn, actor, project)
            if await group_by_name(conn, pid, name.strip()) is not None:
                raise InvalidTransition(f"project {project!r} already has a group {name!r}")
            gid = (
                await conn.execute(
                    sa.insert(g)
                    .values(project_id=pid, name=name.strip(), distribution=distribution.value,
                            created_at=self.clock())
                    .returning(g.c.id)
                )
            ).scalar_one()  # fmt: skip
            await self._set_members(conn, pid, int(gid), members)
            return int(gid)

    async def _group(self, conn: AsyncConnection, actor: Actor, group_id: int) -> sa.Row[Any]:
        g = rt.agent_groups
        row = (await conn.execute(sa.select(g).where(g.c.id == group_id))).one_or_none()
        if row is None or not _member(actor, row.project_id):
            raise NotFound(f"no group {group_id}")
        return row

    async def _set_members(
        self, conn: AsyncConnection, project_id: int, group_id: int, agent_ids: Iterable[int]
    ) -> None:
        ids = list(dict.fromkeys(agent_ids))
        for agent_id in ids:
            target = await load_actor(conn, agent_id)
            if not _member(target, project_id):
                raise Forbidden(f"agent {target.username!r} does not belong to this project")
        gm = rt.agent_group_members
        await conn.execute(sa.delete(gm).where(gm.c.group_id == group_id))
        if ids:
            await conn.execute(sa.insert(gm), [{"group_id": group_id, "agent_id": a} for a in ids])

    async def set_group_members(
        self, actor: Actor, group_id: int, agent_ids: Iterable[int]
    ) -> None:
        async with self.store.write() as conn:
            row = await self._group(conn, actor, group_id)
            _require_admin(actor)
            await self._set_members(conn, row.project_id, group_id, agent_ids)

    async def groups(self, actor: Actor, project: str) -> list[Group]:
        g, gm = rt.agent_groups, rt.agent_group_members
        async with self.store.read() as conn:
            pid = await self._project(conn, actor, project)
            rows = (
                await conn.execute(sa.select(g).where(g.c.project_id == pid).order_by(g.c.name))
            ).all()
            members: dict[int, list[int]] = {}
            for gid, aid in await conn.execute(
                sa.select(gm.c.group_id, gm.c.agent_id)
                .where(gm.c.group_id.in_([r.id for r in rows]))
                .order_by(gm.c.agent_id)
            ):
                members.setdefault(gid, []).append(aid)
        return [
            Group(id=r.id, project=project, name=r.name,
                  distribution=Distribution(r.distribution), members=tuple(members.get(r.id, ())))
            for r in rows
        ]  # fmt: skip

    async def set_distribution(
        self, actor: Actor, project: str, distribution: Distribution, *, group_id: int | None = None
    ) -> None:
        """Pool or direct distribution, for the project or one of its groups (a group's
        setting wins for the conversations queued in it)."""
        async with self.store.write() as conn:
            pid = await self._admin_project(conn, actor, project)
            if group_id is None:
                await ensure_settings(conn, pid)
                rp = rt.routing_projects
                await conn.execute(
                    sa.update(rp).where(rp.c.project_id == pid)
                    .values(distribution=distribution.value)
                )  # fmt: skip
            else:
                row = await self._group(conn, actor, group_id)
                if row.project_id != pid:
                    raise NotFound(f"no group {group_id} in project {project!r}")
                g = rt.agent_groups
                await conn.execute(
                    sa.update(g).where(g.c.id == group_id).values(distribution=distribution.value)
                )

    async def _target(self, conn: AsyncConnection, actor: Actor, agent_id: int) -> Actor:
        """Another agent ``actor`` may manage: privileged and sharing a project with them."""
        target = await load_actor(conn, agent_id)
        if target.id == actor.id:
            return target
        if not actor.privileged:
            raise Forbidden("only a supervisor or administrator may change another agent")
        if not {p for p, _ in actor.permissions} & {p for p, _ in target.permissions}:
            raise NotFound(f"no active agent {agent_id}")
        return target

    async def set_online(self, actor: Actor, agent_id: int, online: bool) -> None:
        async with self.store.write() as conn:
            await self._target(conn, actor, agent_id)
            await self._upsert_presence(conn, agent_id, online=online)

    async def set_capacity(self, actor: Actor, agent_id: int, capacity: int) -> None:
        if not 0 <= capacity <= 1000:
            raise ValueError("a capacity is 0 to 1000 conversations")
        if not actor.privileged:
            raise Forbidden("only a supervisor or administrator may set a capacity")
        async with self.store.write() as conn:
            await self._target(conn, actor, agent_id)
            await self._upsert_presence(conn, agent_id, capacity=capacity)

    async def _upsert_presence(self, conn: AsyncConnection, agent_id: int, **values: Any) -> None:
        pr = rt.agent_presence
        now = self.clock()
        ins = dialect_insert(conn.dialect.name, pr).values(agent_id=agent_id, updated_at=now,
                                                           **values)  # fmt: skip
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[pr.c.agent_id], set_={**values, "updated_at": now}
            )
        )

    async def presence(self, actor: Actor, agent_id: int) -> Presence:
        pr = rt.agent_presence
        async with self.store.read() as conn:
            target = await load_actor(conn, agent_id)
            if target.id != actor.id and not (
                {p for p, _ in actor.permissions} & {p for p, _ in target.permissions}
            ):
                raise NotFound(f"no active agent {agent_id}")
            row = (await conn.execute(sa.select(pr).where(pr.c.agent_id == agent_id))).one_or_none()
            busy = (
                await conn.execute(
                    sa.select(sa.func.count()).where(
                        c.c.assignee_id == agent_id, c.c.state == State.ASSIGNED.value
                    )
                )
            ).scalar_one()
        default_capacity = int(str(pr.c.capacity.server_default.arg))  # type: ignore[union-attr]
        return Presence(
            agent_id=agent_id,
            online=bool(row.online) if row else False,
            capacity=row.capacity if row else default_capacity,
            in_progress=int(busy),
        )

    # --- transfers -----------------------------------------------------------------------

    async def transfer_to_group(self, actor: Actor, conversation_id: int, group_id: int) -> None:
        """Move the conversation to another group of its project: it becomes unassigned
        there (in that group's pool)."""
        cr = rt.conversation_routing
        async with self.store.write() as conn:
            row = await self._visible(conn, actor, conversation_id)
            if row.state == State.CLOSED.value:
                raise InvalidTransition(f"conversation {row.id} is closed: reopen it first")
            group = await self._group(conn, actor, group_id)
            if group.project_id != row.project_id:
                raise NotFound(f"no group {group_id} in this conversation's project")
            now = self.clock()
            ins = dialect_insert(conn.dialect.name, cr).on_conflict_do_nothing()
            await conn.execute(ins, {"conversation_id": row.id})
            await conn.execute(
                sa.update(cr).where(cr.c.conversation_id == row.id).values(group_id=group_id)
            )
            values: dict[str, Any] = {"assignee_id": None, "state": State.NEW.value,
                                      "updated_at": now}  # fmt: skip
            if row.queue_entered_at is None:
                values["queue_entered_at"] = now
            await conn.execute(sa.update(c).where(c.c.id == row.id).values(**values))
            await self._event(conn, row.id, actor, "transferred",
                              {"group": group_id, "previous": row.assignee_id}, now)  # fmt: skip

    async def transfer_to_agent(self, actor: Actor, conversation_id: int, agent_id: int) -> None:
        """Give the conversation to another agent of its group (any agent with the channel
        permission when it has no group)."""
        cr, gm = rt.conversation_routing, rt.agent_group_members
        async with self.store.write() as conn:
            row = await self._visible(conn, actor, conversation_id)
            if row.state == State.CLOSED.value:
                raise InvalidTransition(f"conversation {row.id} is closed: reopen it first")
            if row.assignee_id == agent_id:
                raise InvalidTransition(f"conversation {row.id} is already assigned to them")
            target = await load_actor(conn, agent_id)
            if not target.may_work_on(row.project_id, row.kind):
                raise Forbidden(
                    f"agent {target.username!r} has no {row.kind} permission in this project"
                )
            group_id = (
                await conn.execute(sa.select(cr.c.group_id).where(cr.c.conversation_id == row.id))
            ).scalar_one_or_none()
            if group_id is not None:
                member = await conn.execute(
                    sa.select(gm.c.agent_id).where(gm.c.group_id == group_id,
                                                   gm.c.agent_id == agent_id)
                )  # fmt: skip
                if member.first() is None:
                    raise Forbidden(
                        f"agent {target.username!r} is not in this conversation's group: "
                        "transfer it to their group instead"
                    )
            await assign(conn, row, agent_id, self.clock(), by="transfer", actor_id=actor.id)

    # --- rules ---------------------------------------------------------------------------

    async def set_rules(self, actor: Actor, project: str, rules: Sequence[Rule]) -> None:
        """Replace the project's rules with ``rules``, in this order, after validating them
        and every group, agent and priority they name."""
        r = rt.routing_rules
        compiled = [self.kinds.compile(rule) for rule in rules]
        async with self.store.write() as conn:
            pid = await self._admin_project(conn, actor, project)
            for rule in compiled:
                for kind, params in rule.actions:
                    await self._check_reference(conn, pid, rule.rule.name, kind.name, params)
            await conn.execute(sa.delete(r).where(r.c.project_id == pid))
            now = self.clock()
            if compiled:
                await conn.execute(
                    sa.insert(r),
                    [{"project_id": pid, "position": i, "updated_at": now,
                      "definition": x.rule.model_dump(mode="json")}
                     for i, x in enumerate(compiled)],
                )  # fmt: skip

    async def _check_reference(
        self, conn: AsyncConnection, pid: int, rule: str, kind: str, params: Any
    ) -> None:
        if kind == "set_group" and await group_by_name(conn, pid, params.group) is None:
            raise InvalidRule(f"rule {rule!r}: no group {params.group!r} in this project")
        if kind == "set_priority" and await priority_level(conn, pid, params.priority) is None:
            raise InvalidRule(f"rule {rule!r}: no priority {params.priority!r} in this project")
        if kind == "assign":
            agent = await agent_by_username(conn, params.agent)
            if agent is None or not _member(await load_actor(conn, agent), pid):
                raise InvalidRule(f"rule {rule!r}: no agent {params.agent!r} in this project")

    async def rules(self, actor: Actor, project: str) -> list[Rule]:
        r = rt.routing_rules
        async with self.store.read() as conn:
            pid = await self._project(conn, actor, project)
            if not actor.privileged:
                raise Forbidden("only a supervisor or administrator may read the rules")
            rows = await conn.execute(
                sa.select(r.c.definition).where(r.c.project_id == pid).order_by(r.c.position)
            )
            return [Rule.model_validate(d) for d in rows.scalars()]

    # --- priorities and SLA --------------------------------------------------------------

    async def set_priority(
        self, actor: Actor, project: str, level: PriorityLevel, *, default: bool = False
    ) -> None:
        """Create or change a priority; ``default`` makes it the one new conversations get
        when no rule sets another."""
        sp = rt.sla_priorities

        def seconds(span: Any) -> int | None:
            return None if span is None else int(span.total_seconds())

        values = {
            "reaction_seconds": seconds(level.reaction),
            "alarm_seconds": seconds(level.alarm),
            "execution_seconds": seconds(level.execution),
            "business_hours": level.business_hours,
        }
        async with self.store.write() as conn:
            pid = await self._admin_project(conn, actor, project)
            ins = dialect_insert(conn.dialect.name, sp).values(project_id=pid, name=level.name,
                                                               **values)  # fmt: skip
            await conn.execute(
                ins.on_conflict_do_update(index_elements=[sp.c.project_id, sp.c.name], set_=values)
            )
            if default:
                await ensure_settings(conn, pid)
                rp = rt.routing_projects
                await conn.execute(
                    sa.update(rp).where(rp.c.project_id == pid).values(default_priority=level.name)
                )

    async def priorities(self, actor: Actor, project: str) -> list[PriorityLevel]:
        sp = rt.sla_priorities
        async with self.store.read() as conn:
            pid = await self._project(conn, actor, project)
            names = (
                await conn.execute(
                    sa.select(sp.c.name).where(sp.c.project_id == pid).order_by(sp.c.name)
                )
            ).scalars()
            out = [await priority_level(conn, pid, n) for n in list(names)]
        return [x for x in out if x is not None]

    async def set_business_hours(self, actor: Actor, project: str, hours: BusinessHours) -> None:
        rp, bh, off = rt.routing_projects, rt.business_hours, rt.business_days_off
        async with self.store.write() as conn:
            pid = await self._admin_project(conn, actor, project)
            await ensure_settings(conn, pid)
            await conn.execute(
                sa.update(rp).where(rp.c.project_id == pid).values(timezone=hours.timezone)
            )
            await conn.execute(sa.delete(bh).where(bh.c.project_id == pid))
            await conn.execute(sa.delete(off).where(off.c.project_id == pid))
            if hours.spans:
                await conn.execute(
                    sa.insert(bh),
                    [{"project_id": pid, "weekday": s.weekday, "opens_minute": s.minutes[0],
                      "closes_minute": s.minutes[1]} for s in hours.spans],
                )  # fmt: skip
            if hours.days_off:
                await conn.execute(
                    sa.insert(off),
                    [{"project_id": pid, "day": d} for d in sorted(hours.days_off)],
                )

    async def set_conversation_priority(
        self, actor: Actor, conversation_id: int, priority: str
    ) -> None:
        """Change the priority; the deadlines are recomputed from the SLA clock's start."""
        cr = rt.conversation_routing
        async with self.store.write() as conn:
            row = await self._visible(conn, actor, conversation_id)
            if await priority_level(conn, row.project_id, priority) is None:
                raise NotFound(f"no priority {priority!r} in this conversation's project")
            ins = dialect_insert(conn.dialect.name, cr).on_conflict_do_nothing()
            await conn.execute(ins, {"conversation_id": row.id})
            state = (await conn.execute(sa.select(cr).where(cr.c.conversation_id == row.id))).one()
            now = self.clock()
            start = state.sla_started_at or now
            values: dict[str, Any] = {"priority": priority, "sla_started_at": start,
                                      "reaction_missed_at": None, "alarm_reached_at": None,
                                      "execution_missed_at": None}  # fmt: skip
            values.update(await sla_deadlines(conn, row.project_id, priority, start))
            await conn.execute(sa.update(cr).where(cr.c.conversation_id == row.id).values(**values))
            await self._event(conn, row.id, actor, "priority",
                              {"previous": state.priority, "priority": priority}, now)  # fmt: skip

    async def info(self, actor: Actor, conversation_id: int) -> RoutingInfo:
        """The conversation's routing facts and SLA signals as of now."""
        cr = rt.conversation_routing
        async with self.store.read() as conn:
            row = await self._visible(conn, actor, conversation_id)
            state = (
                await conn.execute(sa.select(cr).where(cr.c.conversation_id == row.id))
            ).one_or_none()
            if state is None:
                return RoutingInfo(
                    conversation_id=row.id, group_id=None, priority=None, category=None,
                    status=None, sla_started_at=None, reaction_due=None, alarm_at=None,
                    execution_due=None,
                )  # fmt: skip
            reacted = await _reacted_at(conn, row.id, state.sla_started_at)
        now = self.clock()
        signals = _signals(state, row, reacted, now) if state.sla_started_at is not None else {}
        raised = {
            s: getattr(state, f"{s.value}_at")
            for s in SlaSignal
            if getattr(state, f"{s.value}_at") is not None
        }
        return RoutingInfo(
            conversation_id=row.id, group_id=state.group_id, priority=state.priority,
            category=state.category, status=state.status, sla_started_at=state.sla_started_at,
            reaction_due=state.reaction_due, alarm_at=state.alarm_at,
            execution_due=state.execution_due, signals=signals, raised=raised,
        )  # fmt: skip

    async def check_sla(self) -> list[RaisedSignal]:
        """The sweep: raise every SLA signal whose deadline passed and that was not raised
        yet — stored (so the ``sla`` filter finds it), logged as an event, then announced
        to ``sla_signal`` listeners after the commit. Run it periodically (the worker)."""
        cr, bl = rt.conversation_routing, rt.blacklist
        now = self.clock()
        pending = sa.or_(
            sa.and_(cr.c.reaction_due <= now, cr.c.reaction_missed_at.is_(None)),
            sa.and_(cr.c.alarm_at <= now, cr.c.alarm_reached_at.is_(None)),
            sa.and_(cr.c.execution_due <= now, cr.c.execution_missed_at.is_(None)),
        )
        blocked = sa.exists().where(
            bl.c.project_id == c.c.project_id, bl.c.customer_key == c.c.customer_key
        )
        raised: list[RaisedSignal] = []
        async with self.store.write() as conn:
            rows = (
                await conn.execute(
                    sa.select(cr, c.c.state, c.c.closed_at)
                    .join(c, c.c.id == cr.c.conversation_id)
                    .where(cr.c.sla_started_at.is_not(None), pending, ~blocked)
                    .order_by(cr.c.conversation_id)
                )
            ).all()
            for row in rows:
                reacted = await _reacted_at(conn, row.conversation_id, row.sla_started_at)
                values: dict[str, Any] = {}
                for signal, at in _signals(row, row, reacted, now).items():
                    column = f"{signal.value}_at"
                    if getattr(row, column) is None:
                        values[column] = at
                        raised.append(RaisedSignal(row.conversation_id, signal, at))
                        await self._event(conn, row.conversation_id, None, f"sla_{signal.value}",
                                          {"at": at.isoformat()}, now)  # fmt: skip
                if values:
                    await conn.execute(
                        sa.update(cr).where(cr.c.conversation_id == row.conversation_id)
                        .values(**values)
                    )  # fmt: skip
        for item in raised:
            await self._announce(item)
        return raised

    async def _announce(self, item: RaisedSignal) -> None:
        for impl in self.plugins.pm.hook.sla_signal.get_hookimpls():
            kwargs = {"conversation_id": item.conversation_id, "signal": item.signal.value,
                      "at": item.at}  # fmt: skip
            try:
                value = impl.function(**{k: kwargs[k] for k in impl.argnames})
                if inspect.isawaitable(value):
                    await value
            except Exception:  # one broken listener must not stop the others
                log.exception("sla_signal listener %s failed", impl.plugin_name)

    # --- pinning -------------------------------------------------------------------------

    async def pin(self, actor: Actor, conversation_id: int) -> None:
        """Pin the conversation's customer to oneself: their new conversations skip the
        pool and come to you. The conversation must be assigned to you first."""
        pin = rt.customer_pins
        async with self.store.write() as conn:
            row = await self._visible(conn, actor, conversation_id)
            if row.assignee_id != actor.id:
                raise InvalidTransition(
                    "only the agent a conversation is assigned to may pin its customer: "
                    "take it first"
                )
            current = await pinned_agent(conn, row.project_id, row.customer_key)
            if current == actor.id:
                raise InvalidTransition("this customer is already pinned to you")
            if current is not None:
                raise InvalidTransition(
                    "this customer is pinned to another agent, who must unpin first"
                )
            now = self.clock()
            await conn.execute(
                sa.insert(pin).values(project_id=row.project_id, customer_key=row.customer_key,
                                      agent_id=actor.id, pinned_at=now)
            )  # fmt: skip
            await self._event(conn, row.id, actor, "pinned", {"agent": actor.id}, now)

    async def unpin(self, actor: Actor, conversation_id: int) -> None:
        """The pinned agent unpins their customer; an administrator may unpin anyone's."""
        pin = rt.customer_pins
        async with self.store.write() as conn:
            row = await self._visible(conn, actor, conversation_id)
            current = await pinned_agent(conn, row.project_id, row.customer_key)
            if current is None:
                raise InvalidTransition("this customer is not pinned")
            if current != actor.id and actor.role is not Role.ADMINISTRATOR:
                raise Forbidden("only the pinned agent or an administrator may unpin")
            await conn.execute(
                sa.delete(pin).where(
                    pin.c.project_id == row.project_id, pin.c.customer_key == row.customer_key
                )
            )
            await self._event(conn, row.id, actor, "unpinned", {"agent": current}, self.clock())

    async def pin_status(self, actor: Actor, conversation_id: int) -> PinStatus:
        async with self.store.read() as conn:
            row = await self._visible(conn, actor, conversation_id)
            current = await pinned_agent(conn, row.project_id, row.customer_key)
            name = None
            if current is not None:
                a = tables.agents
                name = (
                    await conn.execute(sa.select(a.c.display_name).where(a.c.id == current))
                ).scalar_one()
        if current is None:
            may_pin = row.assignee_id == actor.id
            me = actor.username
            return PinStatus(pinned_to=None, pinned_to_name=None, may_pin=may_pin,
                             may_unpin=False, label=f"Pin ({me})" if may_pin else "")  # fmt: skip
        if current == actor.id:
            label, may_unpin = f"Unpin ({name})", True
        elif actor.role is Role.ADMINISTRATOR:
            label, may_unpin = f"Unpin (pinned to {name})", True
        else:
            label, may_unpin = f"Pinned ({name})", False
        return PinStatus(pinned_to=current, pinned_to_name=name, may_pin=False,
                         may_unpin=may_unpin, label=label)  # fmt: skip

    # --- blacklist -----------------------------------------------------------------------

    async def block(self, actor: Actor, conversation_id: int, reason: str = "") -> None:
        """Blacklist the conversation's customer in its project: their messages are still
        stored, but no agent view shows them until a privileged agent unblocks."""
        if len(reason) > 300:
            raise ValueError("a reason has at most 300 characters")
        bl = rt.blacklist
        async with self.store.write() as conn:
            row = await self._visible(conn, actor, conversation_id)
            now = self.clock()
            ins = dialect_insert(conn.dialect.name, bl).on_conflict_do_nothing()
            await conn.execute(
                ins, {"project_id": row.project_id, "customer_key": row.customer_key,
                      "blocked_by": actor.id, "blocked_at": now, "reason": reason}
            )  # fmt: skip
            await self._event(conn, row.id, actor, "blocked", {"reason": reason}, now)

    def _may_manage_blacklist(self, actor: Actor) -> None:
        if not (actor.privileged or actor.can_view_all):
            raise Forbidden("the blacklist needs a supervisor or administrator role or the All "
                            "permission")  # fmt: skip

    def _blacklist_query(self, actor: Actor) -> sa.Select[Any]:
        bl = rt.blacklist
        scope = sa.or_(
            sa.false(),
            *(sa.and_(c.c.project_id == p, c.c.kind == k) for p, k in sorted(actor.permissions)),
        )
        return (
            sa.select(c, bl.c.blocked_at, bl.c.blocked_by, bl.c.reason)
            .join(bl, sa.and_(bl.c.project_id == c.c.project_id,
                              bl.c.customer_key == c.c.customer_key))
            .where(scope)
        )  # fmt: skip

    async def blacklist(self, actor: Actor, page: Page | None = None) -> list[BlockedConversation]:
        """The restricted view: conversations of blocked customers in the agent's scope."""
        self._may_manage_blacklist(actor)
        page = page or Page()
        p = tables.projects
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    self._blacklist_query(actor)
                    .order_by(c.c.last_message_at.desc(), c.c.id.desc())
                    .limit(page.limit).offset(page.offset)
                )
            ).all()  # fmt: skip
            keys = dict((await conn.execute(sa.select(p.c.id, p.c.key))).all())
        return [
            BlockedConversation(
                conversation_id=r.id, project=keys[r.project_id], customer=r.customer_key,
                customer_name=r.customer_name, state=State(r.state), blocked_at=r.blocked_at,
                blocked_by=r.blocked_by, reason=r.reason,
            )
            for r in rows
        ]  # fmt: skip

    async def unblock(self, actor: Actor, conversation_id: int) -> None:
        """Unblock from the blacklist view: the customer's conversations show again."""
        self._may_manage_blacklist(actor)
        bl = rt.blacklist
        async with self.store.write() as conn:
            row = (
                await conn.execute(self._blacklist_query(actor).where(c.c.id == conversation_id))
            ).one_or_none()
            if row is None:
                raise NotFound(f"no blocked conversation {conversation_id}")
            await conn.execute(
                sa.delete(bl).where(
                    bl.c.project_id == row.project_id, bl.c.customer_key == row.customer_key
                )
            )
            await self._event(conn, row.id, actor, "unblocked", {}, self.clock())


def _member(actor: Actor, project_id: int) -> bool:
    return any(p == project_id for p, _ in actor.permissions)


def _require_admin(actor: Actor) -> None:
    if actor.role is not Role.ADMINISTRATOR:
        raise Forbidden("only an administrator may configure routing")


async def _reacted_at(conn: AsyncConnection, cid: int, since: datetime | None) -> datetime | None:
    """The first agent reply since the SLA clock started."""
    if since is None:
        return None
    m = tables.messages
    value = (
        await conn.execute(
            sa.select(sa.func.min(m.c.sent_at)).where(
                m.c.conversation_id == cid, m.c.direction == "out", m.c.sent_at >= since
            )
        )
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


def _signals(
    state: Any, conv: Any, reacted: datetime | None, now: datetime
) -> dict[SlaSignal, datetime]:
    closed = conv.closed_at if conv.state == State.CLOSED.value else None
    if closed is not None and state.sla_started_at is not None and closed < state.sla_started_at:
        closed = None
    due = Deadlines(state.reaction_due, state.alarm_at, state.execution_due)
    return due_signals(due, reacted_at=reacted, closed_at=closed, now=now)
