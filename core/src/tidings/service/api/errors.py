"""The one place typed errors become HTTP answers.

Every answer is ``{"error": "<message>"}`` plus what the client needs to act:

* 401 ``Unauthenticated`` (with ``WWW-Authenticate: Bearer``);
* 403 ``Forbidden``: a missing role, project or channel permission;
* 404 ``NotFound``: no such object *or one the agent may not see* — the services make the
  two indistinguishable, so guessing ids of another project's conversations reveals
  nothing;
* 409 ``InvalidTransition`` (the state does not allow it, e.g. taking an assigned
  conversation, cancelling a message already sent) and ``DecisionRequired`` (with
  ``choices``, ``conversation_id`` and ``assignee_id``);
* 422 validation: FastAPI's request validation, the services' ``ValueError``s,
  ``NotAllowed`` refusals by the channel's rules or the customer's opt-out, contact
  ``InvalidValue`` (with ``field``), template errors (with ``variable`` when one is
  missing), a search text that cannot be searched. ``detail`` lists ``loc`` naming the
  field when the request's shape is wrong.

``Cancelled`` is not an error here: the sender chose to cancel, so that request
succeeded; the send routes answer 200 ``{"status": "cancelled"}`` themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tidings.auth import Unauthenticated
from tidings.contacts.fields import InvalidValue
from tidings.errors import (
    ConfigError,
    DecisionRequired,
    Forbidden,
    InvalidTransition,
    NotAllowed,
    NotFound,
)
from tidings.store.search import SearchQueryError
from tidings.templates import MissingVariable, TemplateError

log = logging.getLogger("tidings.api")


def _answer(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _validation(errors: list[Any]) -> JSONResponse:
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    fields = ", ".join(".".join(str(p) for p in d["loc"]) for d in detail) or "request"
    return _answer(422, f"invalid {fields}", detail=jsonable_encoder(detail))


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _validation(list(exc.errors()))


async def _model_invalid(request: Request, exc: Exception) -> JSONResponse:
    # A model built inside a route (e.g. the Draft from a compose body): its location is
    # the body's.
    assert isinstance(exc, ValidationError)
    return _validation([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])


async def _unauthenticated(request: Request, exc: Exception) -> JSONResponse:
    response = _answer(401, str(exc))
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _tidings(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DecisionRequired):
        return _answer(
            409, str(exc), choices=list(exc.choices), conversation_id=exc.conversation_id,
            assignee_id=exc.assignee_id,
        )  # fmt: skip
    if isinstance(exc, NotFound):
        return _answer(404, str(exc))
    if isinstance(exc, Forbidden):
        return _answer(403, str(exc))
    if isinstance(exc, InvalidTransition):
        return _answer(409, str(exc))
    if isinstance(exc, InvalidValue):
        return _answer(422, str(exc), field=exc.field)
    if isinstance(exc, MissingVariable):
        return _answer(422, str(exc), variable=exc.variable)
    if isinstance(exc, NotAllowed | TemplateError | ConfigError | SearchQueryError | ValueError):
        return _answer(422, str(exc))
    log.error("unmapped error %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return _answer(500, "internal error")


async def _value_error(request: Request, exc: Exception) -> JSONResponse:
    return _answer(422, str(exc))


def install(app: FastAPI) -> None:
    from tidings.errors import TidingsError

    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationError, _model_invalid)
    app.add_exception_handler(Unauthenticated, _unauthenticated)
    app.add_exception_handler(TidingsError, _tidings)
    app.add_exception_handler(ValueError, _value_error)
