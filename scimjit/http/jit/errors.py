"""The JIT API's error shape, `{"error": "<reason code>", "detail": "<text>"}`, and its exception handlers.

The callers of /jit/v1 are applications and operators, not SCIM clients, so refusals are not SCIM error
documents. Every handler raises `JitError`; the shared helpers (token check, body reader, rate limits) raise
`ScimError`, which the JIT sub-application renders in the same shape with a reason code for its status.
The admin list views answer SCIM list parameters and keep SCIM errors (`scimType` says which parameter is
wrong): their endpoints are marked with `scim_errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from scimjit.config import ConfigError
from scimjit.http.responses import error_response
from scimjit.jiterrors import JitError
from scimjit.scim.errors import ScimError

# the 0.1 logger name, kept: operators filter the JSON `logger` field on it
log = logging.getLogger("scimjit.jit.http")

SCIM_STATUS_REASONS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    429: "rate_limited",
}

Endpoint = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=Callable[..., Any])


def json_response(content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def error(status: int, reason: str, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"error": reason, "detail": detail}, status, headers)


def scim_errors(endpoint: E) -> E:
    """Mark an endpoint whose ScimErrors stay SCIM error documents (the admin list views)."""
    endpoint.scim_errors = True  # type: ignore[attr-defined]
    return endpoint


async def jit_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JitError)
    return json_response(exc.to_json(), exc.status, exc.headers)


async def scim_error(request: Request, exc: Exception) -> Response:
    """Auth, body and rate-limit errors of the shared helpers, in the JIT shape (same status, same headers
    such as Retry-After and WWW-Authenticate)."""
    assert isinstance(exc, ScimError)
    if getattr(request.scope.get("endpoint"), "scim_errors", False):
        return error_response(exc)
    reason = SCIM_STATUS_REASONS.get(exc.status, "error")
    if exc.scim_type == "invalidSyntax":
        reason = "invalid_request"
    return error(exc.status, reason, exc.detail, exc.headers)


async def config_error(request: Request, exc: Exception) -> Response:
    """The engine is built on first use: a bad configuration file shows up on the first JIT request."""
    log.error("the JIT configuration is invalid: %s", exc)
    return error(500, "server_misconfigured", "the JIT configuration is invalid; see the server log")


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    JitError: jit_error,
    ScimError: scim_error,
    ConfigError: config_error,
}
