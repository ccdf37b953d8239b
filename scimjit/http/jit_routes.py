"""HTTP endpoints of the JIT engine, mounted under /jit/v1.

- `POST /logins` (scope `login`, bound to one application; `admin` may log in to any): the login hook.
- Admin API (scope `admin`): `GET /apps`, `GET /outbox/{id}` (with the event payload),
  `POST /outbox/{id}/retry`, `POST /outbox/retry` (`{"allDead": true}` or `{"ids": [...]}`).
  The filtered listings `GET /accounts` and `GET /outbox?status=dead` are admin_routes.py's.

Errors are JSON `{"error": "<reason code>", "detail": "<text>"}`, never SCIM error documents: the callers are
applications and operators, not SCIM clients.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scimjit.config import ConfigError
from scimjit.delivery import outbox
from scimjit.engine import JitEngine
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.ratelimit import charge_client_failure, check_client
from scimjit.provisioning.login import LoginRefused
from scimjit.scim.errors import ScimError
from scimjit.store.tokens import Principal

log = logging.getLogger("scimjit.http.jit_routes")
MAX_LOGIN_BODY = 64 * 1024
_SCIM_STATUS_REASONS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    429: "rate_limited",
}

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, headers=headers, media_type="application/json"
    )


def error(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": reason, "detail": detail}, status, headers)


def _jit_errors(endpoint: Endpoint) -> Endpoint:
    """Render auth / body errors (raised as ScimError by the shared helpers) in the JIT error shape."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except LoginRefused as exc:
            return error(exc.status, exc.reason, exc.detail, exc.headers)
        except ConfigError as exc:  # the engine is built on first use: a bad config file shows up here
            log.error("the JIT configuration is invalid: %s", exc)
            return error(500, "server_misconfigured", "the JIT configuration is invalid; see the server log")
        except ScimError as exc:
            reason = _SCIM_STATUS_REASONS.get(exc.status, "error")
            if exc.scim_type == "invalidSyntax":
                reason = "invalid_request"
            return error(exc.status, reason, exc.detail, exc.headers)

    return wrapped


def _engine(request: Request) -> JitEngine:
    return request.app.state.services.engine


@_jit_errors
async def login(request: Request) -> Response:
    principal: Principal = require(request, "login")
    body = await read_json_object(request, MAX_LOGIN_BODY)
    application, id_token = body.get("application"), body.get("id_token")
    if not isinstance(application, str) or not isinstance(id_token, str):
        return error(400, "invalid_request", 'send {"application": NAME, "id_token": JWT}')
    if "admin" not in principal.scopes and principal.application != application:
        return error(403, "wrong_application", f"this token may only log in to {principal.application!r}")
    request_id = request.scope.get("state", {}).get("request_id")
    check_client(request)  # a refused ID token is charged to the address; an empty bucket stops them first
    try:
        result = await _engine(request).login(
            application, id_token, caller=principal.name, request_id=request_id
        )
    except LoginRefused as exc:
        if exc.status == 401:
            charge_client_failure(request)
        raise
    return json_response(result.body, result.status_code, result.headers)


@_jit_errors
async def apps_list(request: Request) -> Response:
    require(request, "admin")
    engine = _engine(request)
    return json_response({"applications": [a.summary() for a in engine.apps.values()]})


def _event_id(request: Request) -> int:
    """Outbox ids are 64-bit; a larger number names no event (and must not overflow the database driver)."""
    value: int = request.path_params["id"]
    return value if 0 < value < 2**63 else 0


@_jit_errors
async def outbox_get(request: Request) -> Response:
    require(request, "admin")
    engine = _engine(request)
    row_id = _event_id(request)

    def read() -> dict[str, Any] | None:
        with engine.db.read() as conn:
            return outbox.get(conn, row_id)

    event = await engine.db.run(read)
    if event is None:
        return error(404, "not_found", f"no outbox event {row_id}")
    return json_response(event)


@_jit_errors
async def outbox_retry_one(request: Request) -> Response:
    require(request, "admin")
    engine = _engine(request)
    rows = await engine.db.run(engine.deliverer.retry, ids=[_event_id(request)])
    if not rows:
        return error(409, "not_dead", "only dead events can be retried (or there is no such event)")
    return json_response({"retried": [r.id for r in rows]})


@_jit_errors
async def outbox_retry(request: Request) -> Response:
    require(request, "admin")
    body = await read_json_object(request, MAX_LOGIN_BODY)
    all_dead = body.get("allDead") is True
    ids = body.get("ids") or []
    if not all_dead and (not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids)):
        return error(400, "invalid_request", 'send {"allDead": true} or {"ids": [1, 2]}')
    engine = _engine(request)
    rows = await engine.db.run(engine.deliverer.retry, ids=ids, all_dead=all_dead)
    return json_response({"retried": [r.id for r in rows]})


routes: list[BaseRoute] = [
    Route("/logins", login, methods=["POST"]),
    Route("/apps", apps_list, methods=["GET"]),
    Route("/outbox/retry", outbox_retry, methods=["POST"]),
    Route("/outbox/{id:int}", outbox_get, methods=["GET"]),
    Route("/outbox/{id:int}/retry", outbox_retry_one, methods=["POST"]),
]
