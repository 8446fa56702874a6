"""``/webhooks/{account_id}/{endpoint}``: provider requests, answered only after commit."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tidings.errors import MalformedPayload, SignatureError, WebhookError
from tidings.intake import receive_webhook
from tidings.metrics import METRICS
from tidings.models import WebhookRequest
from tidings.runtime import Runtime

log = logging.getLogger("tidings.webhooks")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_endpoint(runtime: Runtime):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        name = request.path_params.get("endpoint", "")
        account = runtime.accounts.get(account_id)
        channel = runtime.channel_for(account).channel if account else None
        if account is None or channel is None or name not in channel.webhooks:
            return _error(404, "no such webhook")
        body = await _read_body(request, runtime.config.server.max_body_bytes)
        if body is None:
            METRICS.webhook_rejections.labels(account.channel, "too_large").inc()
            return _error(413, f"body over {runtime.config.server.max_body_bytes} bytes")
        public = account.webhook_url(name)
        query = request.url.query
        hook_request = WebhookRequest(
            method=request.method,
            url=f"{public}?{query}" if query else public,
            endpoint=name,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        try:
            intake, reply = await receive_webhook(runtime, account, hook_request)
        except SignatureError as exc:
            METRICS.webhook_rejections.labels(account.channel, "signature").inc()
            log.warning("webhook %s/%s refused: bad signature", account_id, name)
            return _error(403, str(exc))
        except (MalformedPayload, WebhookError) as exc:
            METRICS.webhook_rejections.labels(account.channel, "malformed").inc()
            log.warning("webhook %s/%s refused: %s", account_id, name, exc)
            return _error(exc.status_code, str(exc))
        METRICS.messages_in.labels(account.channel).inc(len(intake.messages.stored))
        return Response(reply.body, status_code=reply.status_code, media_type=reply.content_type)

    return endpoint
