"""Routing: priorities and SLA, pinning, the blacklist, rules, groups, presence."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from tidings.events import ChangeKind
from tidings.routing.rules import Rule
from tidings.routing.service import (
    BlockedConversation,
    Distribution,
    Group,
    PinStatus,
    Presence,
    RoutingInfo,
)
from tidings.routing.sla import BusinessHours, PriorityLevel
from tidings.service.api.changes import tracked
from tidings.service.api.conversations import NO_CONTENT, PageQ
from tidings.service.api.deps import Me, Svc

router = APIRouter(tags=["routing"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriorityBody(Body):
    priority: str = Field(min_length=1, max_length=50)


class BlockBody(Body):
    reason: str = Field(default="", max_length=300)


class GroupBody(Body):
    name: str = Field(min_length=1, max_length=100)
    distribution: Distribution = Distribution.POOL
    members: list[int] = []


class GroupCreated(BaseModel):
    id: int


class MembersBody(Body):
    agent_ids: list[int]


class DistributionBody(Body):
    distribution: Distribution
    group_id: int | None = None


class PresenceBody(Body):
    online: bool | None = None
    capacity: int | None = Field(default=None, ge=0, le=1000)


# --- a conversation's routing ---------------------------------------------------------


@router.get("/conversations/{conversation_id}/routing", response_model=RoutingInfo)
async def routing_info(svc: Svc, me: Me, conversation_id: int) -> RoutingInfo:
    """Group, priority and SLA deadlines and signals as of now."""
    return await svc.routing.info(me, conversation_id)


@router.put("/conversations/{conversation_id}/priority", **NO_CONTENT)
async def set_priority(svc: Svc, me: Me, conversation_id: int, body: PriorityBody) -> None:
    await tracked(
        svc, conversation_id,
        lambda: svc.routing.set_conversation_priority(me, conversation_id, body.priority),
        also=ChangeKind.UPDATED, data={"priority": body.priority},
    )  # fmt: skip


@router.get("/conversations/{conversation_id}/pin", response_model=PinStatus)
async def pin_status(svc: Svc, me: Me, conversation_id: int) -> PinStatus:
    return await svc.routing.pin_status(me, conversation_id)


@router.post("/conversations/{conversation_id}/pin", **NO_CONTENT)
async def pin(svc: Svc, me: Me, conversation_id: int) -> None:
    """Pin the customer to oneself: their new conversations come straight to you."""
    await tracked(
        svc, conversation_id, lambda: svc.routing.pin(me, conversation_id), also=ChangeKind.UPDATED
    )


@router.delete("/conversations/{conversation_id}/pin", **NO_CONTENT)
async def unpin(svc: Svc, me: Me, conversation_id: int) -> None:
    await tracked(
        svc,
        conversation_id,
        lambda: svc.routing.unpin(me, conversation_id),
        also=ChangeKind.UPDATED,
    )


@router.post("/conversations/{conversation_id}/block", **NO_CONTENT)
async def block(svc: Svc, me: Me, conversation_id: int, body: BlockBody) -> None:
    """Blacklist the customer in this project: their conversations leave every view."""
    await tracked(svc, conversation_id, lambda: svc.routing.block(me, conversation_id, body.reason))


@router.get("/blacklist", response_model=list[BlockedConversation])
async def blacklist(svc: Svc, me: Me, page: PageQ) -> list[BlockedConversation]:
    return await svc.routing.blacklist(me, page)


@router.delete("/blacklist/{conversation_id}", **NO_CONTENT)
async def unblock(svc: Svc, me: Me, conversation_id: int) -> None:
    await tracked(
        svc,
        conversation_id,
        lambda: svc.routing.unblock(me, conversation_id),
        also=ChangeKind.UPDATED,
    )


# --- a project's configuration (administrators) ----------------------------------------


@router.get("/projects/{project}/rules", response_model=list[Rule])
async def rules(svc: Svc, me: Me, project: str) -> list[Rule]:
    return await svc.routing.rules(me, project)


@router.put("/projects/{project}/rules", **NO_CONTENT)
async def set_rules(svc: Svc, me: Me, project: str, body: list[Rule]) -> None:
    """Replace the project's rules, in this order (validated, references checked)."""
    await svc.routing.set_rules(me, project, body)


@router.get("/projects/{project}/priorities", response_model=list[PriorityLevel])
async def priorities(svc: Svc, me: Me, project: str) -> list[PriorityLevel]:
    return await svc.routing.priorities(me, project)


@router.put("/projects/{project}/priorities", **NO_CONTENT)
async def put_priority(
    svc: Svc,
    me: Me,
    project: str,
    body: PriorityLevel,
    default: Annotated[bool, Query(description="new conversations get it by default")] = False,
) -> None:
    """Create or change a priority (times as ISO 8601 durations, e.g. ``PT15M``)."""
    await svc.routing.set_priority(me, project, body, default=default)


@router.put("/projects/{project}/business-hours", **NO_CONTENT)
async def business_hours(svc: Svc, me: Me, project: str, body: BusinessHours) -> None:
    await svc.routing.set_business_hours(me, project, body)


@router.get("/projects/{project}/groups", response_model=list[Group])
async def groups(svc: Svc, me: Me, project: str) -> list[Group]:
    return await svc.routing.groups(me, project)


@router.post("/projects/{project}/groups", status_code=201, response_model=GroupCreated)
async def create_group(svc: Svc, me: Me, project: str, body: GroupBody) -> GroupCreated:
    gid = await svc.routing.create_group(
        me, project, body.name, distribution=body.distribution, members=body.members
    )
    return GroupCreated(id=gid)


@router.put("/groups/{group_id}/members", **NO_CONTENT)
async def set_members(svc: Svc, me: Me, group_id: int, body: MembersBody) -> None:
    await svc.routing.set_group_members(me, group_id, body.agent_ids)


@router.put("/projects/{project}/distribution", **NO_CONTENT)
async def distribution(svc: Svc, me: Me, project: str, body: DistributionBody) -> None:
    await svc.routing.set_distribution(me, project, body.distribution, group_id=body.group_id)


# --- agents' presence -----------------------------------------------------------------


@router.get("/agents/{agent_id}/presence", response_model=Presence)
async def presence(svc: Svc, me: Me, agent_id: int) -> Presence:
    return await svc.routing.presence(me, agent_id)


@router.put("/agents/{agent_id}/presence", **NO_CONTENT)
async def set_presence(svc: Svc, me: Me, agent_id: int, body: PresenceBody) -> None:
    """Online status (one's own, or anyone's for supervisors) and capacity (supervisors)."""
    if body.online is None and body.capacity is None:
        raise ValueError("give online or capacity")
    if body.capacity is not None:
        await svc.routing.set_capacity(me, agent_id, body.capacity)
    if body.online is not None:
        await svc.routing.set_online(me, agent_id, body.online)
