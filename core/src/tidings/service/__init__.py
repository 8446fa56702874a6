"""The ASGI application ``tidings serve`` runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidings.runtime import Runtime
from tidings.store import current_revision, head_revision


def create_app(runtime: Runtime) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        """Ready only when the database answers and its schema is the code's."""
        try:
            revision = await current_revision(runtime.store.engine)
        except Exception as exc:  # the point is to report any failure, not to raise it
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, 503)
        if revision != head_revision():
            return JSONResponse(
                {
                    "status": "unavailable",
                    "schema": revision,
                    "expected": head_revision(),
                    "hint": "run `tidings db upgrade`",
                },
                503,
            )
        return JSONResponse({"status": "ok", "schema": revision})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await runtime.close()

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz)],
        lifespan=lifespan,
    )
