"""Logging in and out, who am I, and one's own API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tidings.auth import SESSION_LIFETIME, TokenInfo
from tidings.conversations import Role
from tidings.service.api.conversations import NO_CONTENT
from tidings.service.api.deps import Caller, Me, Svc, get_caller
from tidings.store import tables

router = APIRouter(tags=["session"])


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=100)
    password: SecretStr = Field(min_length=1, max_length=1024)


class LoggedIn(BaseModel):
    token: str = Field(description="a bearer token for this session; shown only now")
    expires_at: datetime | None
    agent_id: int


class Permission(BaseModel):
    project: str
    kind: str


class Me_(BaseModel):
    id: int
    username: str
    role: Role
    can_view_all: bool
    permissions: list[Permission]


@router.post("/login", response_model=LoggedIn)
async def login(svc: Svc, body: LoginBody) -> LoggedIn:
    """Exchange a username and password for a session token (valid 12 hours)."""
    actor = await svc.auth.login(body.username, body.password)
    new = await svc.auth.create_token(actor.id, name="session", expires_in=SESSION_LIFETIME)
    return LoggedIn(
        token=new.token.get_secret_value(), expires_at=new.info.expires_at, agent_id=actor.id
    )


@router.post("/logout", **NO_CONTENT)
async def logout(svc: Svc, caller: Annotated[Caller, Depends(get_caller)]) -> None:
    """Revoke the token this request carries."""
    await svc.auth.revoke(caller.actor.id, caller.token_id)


@router.get("/me", response_model=Me_)
async def me(svc: Svc, me: Me) -> Me_:
    p = tables.projects
    async with svc.runtime.store.read() as conn:
        keys = dict((await conn.execute(sa.select(p.c.id, p.c.key))).all())
    return Me_(
        id=me.id, username=me.username, role=me.role, can_view_all=me.can_view_all,
        permissions=[Permission(project=keys[pid], kind=kind)
                     for pid, kind in sorted(me.permissions)],
    )  # fmt: skip


@router.get("/tokens", response_model=list[TokenInfo])
async def tokens(svc: Svc, me: Me) -> list[TokenInfo]:
    """One's own tokens (never the tokens themselves)."""
    return await svc.auth.tokens(me.id)


@router.delete("/tokens/{token_id}", **NO_CONTENT)
async def revoke(svc: Svc, me: Me, token_id: int) -> None:
    await svc.auth.revoke(me.id, token_id)
