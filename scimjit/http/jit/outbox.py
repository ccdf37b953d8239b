"""The outbox over HTTP (scope `admin`): `GET /outbox/{id}` (with the event payload), `POST /outbox/{id}/retry`,
`POST /outbox/retry` (`{"allDead": true}` or `{"ids": [...]}`). The filtered list `GET /outbox?status=dead` is
an admin view (admin.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scimjit.delivery import outbox
from scimjit.http.apidoc import JSON, body, doc, jit_errors, path, ref, resp
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.jit.errors import error, json_response

MAX_BODY = 64 * 1024
EVENT_ID = path("id", {"type": "integer"})
RETRY_REQUEST = {
    "type": "object",
    "properties": {
        "allDead": {"type": "boolean"},
        "ids": {"type": "array", "items": {"type": "integer"}},
    },
}


def _event_id(request: Request) -> int:
    """Outbox ids are 64-bit; a larger number names no event (and must not overflow the database driver)."""
    value: int = request.path_params["id"]
    return value if 0 < value < 2**63 else 0


@doc(
    "One outbox event (admin)",
    "JIT",
    {"200": resp("event", {"type": "object"}, JSON), **jit_errors(401, 403, 404, 429)},
    params=[EVENT_ID],
)
async def outbox_get(request: Request) -> Response:
    require(request, "admin")
    engine = request.app.state.services.engine
    row_id = _event_id(request)

    def read() -> dict[str, Any] | None:
        with engine.db.read() as conn:
            return outbox.get(conn, row_id)

    event = await engine.db.run(read)
    if event is None:
        return error(404, "not_found", f"no outbox event {row_id}")
    return json_response(event)


@doc(
    "Re-arm one dead outbox event (admin)",
    "JIT",
    {
        "200": resp("retried ids", {"type": "object"}, JSON),
        "409": resp("not dead", ref("JitError"), JSON),
        **jit_errors(401, 403, 429),
    },
    params=[EVENT_ID],
)
async def outbox_retry_one(request: Request) -> Response:
    require(request, "admin")
    engine = request.app.state.services.engine
    rows = await engine.db.run(engine.deliverer.retry, ids=[_event_id(request)])
    if not rows:
        return error(409, "not_dead", "only dead events can be retried (or there is no such event)")
    return json_response({"retried": [r.id for r in rows]})


@doc(
    "Re-arm dead outbox events (admin)",
    "JIT",
    {"200": resp("retried ids", {"type": "object"}, JSON), **jit_errors(400, 401, 403, 413, 415, 429)},
    body=body(ref("RetryRequest"), JSON),
    components={"RetryRequest": RETRY_REQUEST},
)
async def outbox_retry(request: Request) -> Response:
    require(request, "admin")
    payload = await read_json_object(request, MAX_BODY)
    all_dead = payload.get("allDead") is True
    ids = payload.get("ids") or []
    if not all_dead and (not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids)):
        return error(400, "invalid_request", 'send {"allDead": true} or {"ids": [1, 2]}')
    engine = request.app.state.services.engine
    rows = await engine.db.run(engine.deliverer.retry, ids=ids, all_dead=all_dead)
    return json_response({"retried": [r.id for r in rows]})


routes: list[BaseRoute] = [
    Route("/outbox/retry", outbox_retry, methods=["POST"]),
    Route("/outbox/{id:int}", outbox_get, methods=["GET"]),
    Route("/outbox/{id:int}/retry", outbox_retry_one, methods=["POST"]),
]
