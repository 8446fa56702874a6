"""Organisation: projects, agents and their per-project channel permissions.

The conversation model asks this module who may see and do what; routing rules, groups,
SLA and pinning build on the same tables.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock, system_clock
from tidings.conversations.models import Actor, Role
from tidings.errors import NotFound
from tidings.store import Store, dialect_insert, tables


async def ensure_project(conn: AsyncConnection, key: str, clock: Clock = system_clock) -> int:
    """The id of project ``key``, created on first use (accounts name projects by key)."""
    p = tables.projects
    found = (await conn.execute(sa.select(p.c.id).where(p.c.key == key))).scalar_one_or_none()
    if found is not None:
        return int(found)
    stmt = dialect_insert(conn.dialect.name, p).values(key=key, name=key, created_at=clock())
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=[p.c.key]))
    return int((await conn.execute(sa.select(p.c.id).where(p.c.key == key))).scalar_one())


async def add_agent(
    store: Store,
    username: str,
    *,
    display_name: str = "",
    role: Role = Role.AGENT,
    can_view_all: bool = False,
    permissions: Iterable[tuple[str, str]] = (),
    clock: Clock = system_clock,
) -> int:
    """Create an agent with (project key, channel kind) permissions; returns the agent id."""
    async with store.write() as conn:
        result = await conn.execute(
            sa.insert(tables.agents)
            .values(
                username=username,
                display_name=display_name or username,
                role=role.value,
                can_view_all=can_view_all,
                created_at=clock(),
            )
            .returning(tables.agents.c.id)
        )
        agent_id = int(result.scalar_one())
        await _grant(conn, agent_id, permissions, clock)
    return agent_id


async def grant(
    store: Store, agent_id: int, permissions: Iterable[tuple[str, str]], clock: Clock = system_clock
) -> None:
    async with store.write() as conn:
        await _grant(conn, agent_id, permissions, clock)


async def _grant(
    conn: AsyncConnection, agent_id: int, permissions: Iterable[tuple[str, str]], clock: Clock
) -> None:
    rows = []
    for project_key, kind in dict.fromkeys(permissions):
        rows.append(
            {"agent_id": agent_id, "project_id": await ensure_project(conn, project_key, clock),
             "kind": kind}
        )  # fmt: skip
    if rows:
        await conn.execute(sa.insert(tables.agent_permissions), rows)


async def load_actor(conn: AsyncConnection, agent_id: int) -> Actor:
    a, perm = tables.agents, tables.agent_permissions
    row = (
        await conn.execute(sa.select(a).where(a.c.id == agent_id, a.c.active.is_(True)))
    ).one_or_none()
    if row is None:
        raise NotFound(f"no active agent {agent_id}")
    perms = (
        await conn.execute(
            sa.select(perm.c.project_id, perm.c.kind).where(perm.c.agent_id == agent_id)
        )
    ).all()
    return Actor(
        id=row.id,
        username=row.username,
        role=Role(row.role),
        can_view_all=row.can_view_all,
        permissions=frozenset((int(p), str(k)) for p, k in perms),
    )
