"""SCIM responses: orjson bodies with `application/scim+json`, and SCIM-shaped errors for every failure."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from scimjit.scim.errors import ScimError

SCIM_MEDIA_TYPE = "application/scim+json"
LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
log = logging.getLogger("scimjit.http")


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
