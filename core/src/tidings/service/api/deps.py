"""What every route depends on: the services of this process and the calling agent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tidings.auth import Auth, Unauthenticated
from tidings.contacts.service import ContactsService
from tidings.conversations import Actor, Conversations
from tidings.events import Broadcaster, broadcaster
from tidings.routing.service import Routing
from tidings.runtime import Runtime
from tidings.templates import TemplatesService


@dataclass
class Services:
    """The runtime's services, built once per app (routing and the CRM are not on the
    runtime yet, so the API builds them over the same store and clock)."""

    runtime: Runtime
    conversations: Conversations
    routing: Routing
    contacts: ContactsService
    templates: TemplatesService
    auth: Auth
    events: Broadcaster

    @classmethod
    def build(cls, runtime: Runtime) -> Services:
        store, clock = runtime.store, runtime.clock
        contacts = ContactsService(store, clock=clock)
        return cls(
            runtime=runtime,
            conversations=runtime.conversations,
            routing=runtime.routing,
            contacts=contacts,
            templates=TemplatesService(store, contacts, clock=clock),
            auth=Auth(store, clock=clock),
            events=broadcaster(store),
        )


def get_services(request: Request) -> Services:
    services: Services = request.app.state.tidings
    return services


_bearer = HTTPBearer(auto_error=False, description="An API token (`tidings users token`).")


@dataclass(frozen=True)
class Caller:
    actor: Actor
    token_id: int


async def get_caller(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The agent behind the bearer token; ``Unauthenticated`` (401) otherwise. The actor is
    re-read on every request, so a changed role or a deactivated agent counts at once."""
    if credentials is None:
        raise Unauthenticated("an API token is needed: Authorization: Bearer <token>")
    actor, token_id = await services.auth.authenticate(credentials.credentials)
    request.state.agent_id = actor.id
    return Caller(actor, token_id)


async def get_actor(caller: Annotated[Caller, Depends(get_caller)]) -> Actor:
    return caller.actor


Svc = Annotated[Services, Depends(get_services)]
Me = Annotated[Actor, Depends(get_actor)]
