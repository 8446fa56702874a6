"""The ASGI application ``tidings serve`` runs: webhooks, health, metrics, the agent API
(``/api``, described at ``/openapi.json`` and ``/docs``), live updates, the worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import anyio
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tidings.auth.logs import install_redaction
from tidings.metrics import METRICS
from tidings.runtime import Runtime
from tidings.service import api
from tidings.service.webhooks import webhook_endpoint
from tidings.service.worker import run_worker
from tidings.store import current_revision, head_revision, tables

SHUTDOWN_GRACE = 10.0


def create_app(runtime: Runtime, *, worker: bool = False) -> Starlette:
    """The service. ``worker=True`` also runs the outbox and pollers in this process."""

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

    async def metrics(request: Request) -> Response:
        async with runtime.store.read() as conn:
            depth = await conn.execute(sa.select(sa.func.count()).select_from(tables.outbox))
            METRICS.queue_depth.set(depth.scalar_one())
        return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop, done = anyio.Event(), anyio.Event()

        async def work() -> None:
            try:
                await run_worker(runtime, stop)
            finally:
                done.set()

        install_redaction()
        try:
            async with anyio.create_task_group() as tg:
                # Other servers' changes, for this server's live streams (PostgreSQL).
                await tg.start(services.events.listen, stop)
                if worker:
                    tg.start_soon(work)
                else:
                    done.set()
                try:
                    yield
                finally:
                    stop.set()  # the outbox finishes its batch; pollers stop between batches
                    with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
                        await done.wait()
                    tg.cancel_scope.cancel()
        finally:
            await runtime.close()

    app = FastAPI(
        title="tidings",
        version=version("tidings"),
        summary="The agent API: conversations, routing, contacts, templates, live updates.",
        lifespan=lifespan,
    )
    services = api.install(app, runtime)
    endpoint = webhook_endpoint(runtime)
    app.add_route("/healthz", healthz, include_in_schema=False)
    app.add_route("/readyz", readyz, include_in_schema=False)
    app.add_route("/metrics", metrics, include_in_schema=False)
    for path in ("/webhooks/{account_id}", "/webhooks/{account_id}/{endpoint:path}"):
        app.add_route(path, endpoint, methods=["GET", "POST"], include_in_schema=False)
    return app
