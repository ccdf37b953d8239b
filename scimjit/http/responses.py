"""SCIM responses: orjson bodies with `application/scim+json`, and SCIM-shaped errors for every failure."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import sqlalchemy.exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from scimjit.scim.errors import ScimError

SCIM_MEDIA_TYPE = "application/scim+json"
LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
log = logging.getLogger("scimjit.http")

# Lost database connectivity, however it shows: refused or dropped connections and a server that went away
# mid-statement (OperationalError / InterfaceError / DisconnectionError, with psycopg's own OperationalError
# underneath), a pool that cannot hand out a connection in time, and SQLite's "database is locked" after the
# busy timeout. Each is a 503 with Retry-After, never a 500: the client may retry, and the process recovers
# by itself (the pool replaces dead connections: store.db._ping_after_idle; see docs/operations.md).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
try:  # psycopg raised outside SQLAlchemy's wrapping (it is an optional dependency: SQLite needs none)
    import psycopg

    DATABASE_UNAVAILABLE += (psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # pragma: no cover
    pass
RETRY_AFTER_UNAVAILABLE = 5  # seconds: a restarting PostgreSQL or a failover
RETRY_AFTER_LOCKED = 1  # seconds: SQLite's writer lock is held for milliseconds at a time


class ScimResponse(Response):
    media_type = SCIM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def scim_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return ScimResponse(content, status_code=status_code, headers=headers)


def error_response(exc: ScimError) -> Response:
    return ScimResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers)


async def scim_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ScimError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
    return error_response(ScimError(exc.status_code, detail, headers=dict(exc.headers or {})))


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Never a stack trace to the client; the log has it, keyed by the request id."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ScimError(500, "Internal server error"))


def _unavailable_why(exc: Exception) -> tuple[str, int]:
    orig = getattr(exc, "orig", None) or exc
    if "database is locked" in str(orig):
        return "the database is busy (locked); retry shortly", RETRY_AFTER_LOCKED
    return "the database is unavailable; retry shortly", RETRY_AFTER_UNAVAILABLE


async def database_unavailable_handler(request: Request, exc: Exception) -> Response:
    """503 + Retry-After for lost database connectivity: a SCIM error on SCIM routes, the JIT error shape
    (`{"error": "unavailable", "detail": ...}`) everywhere else. Logged as one line, without a trace (the
    database's own state is the story, not this stack)."""
    detail, retry_after = _unavailable_why(exc)
    orig = getattr(exc, "orig", None) or exc
    first_line = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    log.warning(
        "database unavailable on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(orig).__name__,
        first_line,
    )
    headers = {"Retry-After": str(retry_after)}
    if "/scim/v2" in request.url.path:
        return error_response(ScimError(503, detail, headers=headers))
    body = orjson.dumps({"error": "unavailable", "detail": detail})
    return Response(body, status_code=503, headers=headers, media_type="application/json")
