"""The agent API: JSON over HTTP under ``/api``, described at ``/openapi.json``.

Routes are thin: each authenticates the caller (``deps``), calls one service operation
with the caller as the acting agent, and announces what changed (``changes``). The
services decide what the agent may see and do; ``errors`` turns their refusals into HTTP
answers in one place. See docs/api.md.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.runtime import Runtime
from tidings.service.api import contacts, conversations, errors, live, routing, session
from tidings.service.api.deps import Services

log = logging.getLogger("tidings.api")
PREFIX = "/api"


class ApiBodyLimit:
    """Refuse API request bodies over ``limit`` bytes with 413, before any route parses
    them (a declared Content-Length is refused unread; a chunked body is read no further
    than the limit)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # the disconnect, for streaming responses

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        payload = f'{{"error": "request body over {self.limit} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class AccessLog:
    """One structured line per API request: method, route path, status, agent, duration.

    Never the query string or headers, where credentials may travel."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "agent_id": state.get("agent_id"),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )


def install(app: FastAPI, runtime: Runtime) -> Services:
    """Mount the API on ``app``: services, routes, error answers, body limit, access log."""
    services = Services.build(runtime)
    app.state.tidings = services
    for module in (session, conversations, routing, contacts, live):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(contacts.templates_router, prefix=PREFIX)
    errors.install(app)
    app.add_middleware(ApiBodyLimit, limit=runtime.config.server.max_body_bytes)
    app.add_middleware(AccessLog)
    return services
